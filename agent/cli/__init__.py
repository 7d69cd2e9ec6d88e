"""The ``gxpgate`` command: :mod:`gxpgate.agent.cli.main` assembles the sub-commands."""
