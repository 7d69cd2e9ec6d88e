"""The process and its host: build and run the agent, control socket, logging, install."""
