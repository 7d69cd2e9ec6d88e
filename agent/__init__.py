"""The gateway agent."""

from gxpgate.agent import _httpx_cli

_httpx_cli.install()  # before any agent module imports httpx
