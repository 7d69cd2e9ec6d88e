"""``python -m agent``: the gxpgate command line."""

from .cli import main

main()
