"""What ``gxpgate simulate`` shares across simulators: loading a technician's script."""

from __future__ import annotations

from pathlib import Path

from gxpgate.agent.cli.common import fail
from gxpgate.simulators.script import MODBUS, Command, Dialect, ScriptError, parse_script

__all__ = ["load_script"]


def _read(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        fail(f"{path}: cannot read: {reason}", 2)


def load_script(
    script: str | None,
    sensors: dict[str, str],
    refuse: dict[str, str] | None = None,
    dialect: Dialect = MODBUS,
) -> list[Command]:
    """The commands of ``--script FILE``, every line checked before the simulator starts
    (exit 2 naming the file and line); none for no script or ``-`` (stdin, read as typed)."""
    if script is None or script == "-":
        return []
    path = Path(script)
    try:
        commands = parse_script(_read(path), sensors, str(path), dialect)
    except ScriptError as exc:
        fail(str(exc), 2)
    for command in commands:
        if refuse and command.verb in refuse:
            fail(f"{path}: line {command.line}: {refuse[command.verb]}", 2)
    return commands
