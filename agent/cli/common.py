"""What every ``gxpgate`` sub-command module shares: the ``--config`` option, loading the config
with its errors printed as ``FILE: field.path: reason`` (exit 2), and failing with a message."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from gxpgate.config import ConfigError, LoadedConfig, default_config_path, load_config

__all__ = ["ConfigOption", "fail", "load"]

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file [default: $GXPGATE_CONFIG or /etc/gxpgate/gxpgate.toml]",
        show_default=False,
    ),
]


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"gxpgate: {message}", err=True)
    raise typer.Exit(code)


def load(path: Path | None) -> LoadedConfig:
    try:
        return load_config(path or default_config_path())
    except ConfigError as exc:
        for line in exc.lines():
            typer.echo(line, err=True)
        raise typer.Exit(2) from None
