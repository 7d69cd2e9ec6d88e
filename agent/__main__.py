"""``python -m gxpgate.agent`` (as ``python -m gxpgate``): the gxpgate command line."""

from gxpgate.agent.cli.main import main

main()
