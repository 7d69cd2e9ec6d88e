"""Keeps httpx's command-line client out of the agent's memory until something runs it.

``import httpx`` also imports ``httpx._main``, the ``httpx`` command, whenever click, rich and
pygments are installed, and typer installs them. The agent never runs that command, yet loading
it took 5.7 of the 10.6 MiB that ``import httpx`` adds to a process (measured on the gateway's
Python 3.11, httpx 0.29; upstream: encode/httpx#3547). A placeholder registered before httpx
is first imported stands in for ``httpx._main``; its ``main`` loads the real module and runs
it, so ``httpx.main`` still works for whoever calls it.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_NAME = "httpx._main"


def _main(*args: Any, **kwargs: Any) -> Any:
    if getattr(sys.modules.get(_NAME), "__gxpgate_placeholder__", False):
        del sys.modules[_NAME]
    return importlib.import_module(_NAME).main(*args, **kwargs)


def install() -> None:
    """Register the placeholder, unless httpx (or its CLI) is already imported."""
    if "httpx" in sys.modules or _NAME in sys.modules:
        return
    placeholder = types.ModuleType(_NAME, "A stand-in: see gxpgate.agent._httpx_cli.")
    placeholder.__gxpgate_placeholder__ = True  # type: ignore[attr-defined]
    placeholder.main = _main  # type: ignore[attr-defined]
    sys.modules[_NAME] = placeholder
