"""The technician's command language for the simulators (``gxpgate simulate ... --script``).

One command per line; ``#`` starts a comment. A line may start with ``at DURATION``: the
command then runs that long after the simulator started (otherwise at once). Durations are a
number and a unit: ``500ms``, ``10s``, ``5m``, ``1h``. A point is ``[SENSOR.]POINT``: without
a sensor (name or unit id) the command applies to every sensor.

    set [SENSOR.]POINT VALUE                   hold VALUE, no drift
    ramp [SENSOR.]POINT [FROM] TO over DUR     linear from FROM (default: now) to TO, then hold
    excursion [SENSOR.]POINT VALUE for DUR     VALUE for DUR, then back to what it was doing
    freeze [[SENSOR.]POINT]                    stuck: keep the current value
    resume [[SENSOR.]POINT]                    back to the base value, drifting
    exception CODE [SENSOR] [for DUR]          answer with Modbus exception CODE (1..255)
    silent [SENSOR] [for DUR]                  do not answer at all
    drop [SENSOR] [for DUR]                    close the connection a request comes on (TCP)
    ok [SENSOR]                                answer normally again

Faults without ``for`` last until ``ok``. Every line is checked before the simulator starts,
so a bad script is refused whole, naming its line (:class:`ScriptError`).
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from .behaviour import POINTS

__all__ = [
    "Command",
    "ScriptError",
    "drive",
    "parse_duration",
    "parse_line",
    "parse_script",
    "run_script",
]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_POINT_VERBS = frozenset({"set", "ramp", "excursion", "freeze", "resume"})
_FAULT_VERBS = frozenset({"exception", "silent", "drop", "ok"})


class ScriptError(ValueError):
    """A line of a script that cannot run; ``str()`` names the line."""


@dataclass(frozen=True)
class Command:
    line: int
    at: float | None
    """Seconds after the start; None: at once."""
    verb: str
    sensors: tuple[str, ...]
    """Sensor names it applies to."""
    point: str | None = None
    values: tuple[float, ...] = ()
    seconds: float | None = None
    """``over``/``for`` duration."""
    code: int = 4
    text: str = ""
    """The line as written, to say what ran."""


def parse_duration(text: str) -> float:
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 500ms, 10s, 5m, 1h)")
    return float(match.group(1)) * _UNIT_SECS[match.group(2)]


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def parse_line(text: str, line: int, sensors: dict[str, str]) -> Command | None:
    """One line; None for a blank or comment line. ``sensors`` maps every accepted name (and
    unit id) to the sensor's name."""
    words = text.split("#", 1)[0].split()
    if not words:
        return None
    try:
        return replace(_parse(words, line, sensors), text=" ".join(words))
    except ValueError as exc:
        raise ScriptError(f"line {line}: {exc}") from None


def _parse(words: list[str], line: int, sensors: dict[str, str]) -> Command:
    at = None
    if words[0] == "at":
        if len(words) < 3:
            raise ValueError("expected: at DURATION COMMAND")
        at = parse_duration(words[1])
        words = words[2:]
    verb, args = words[0], words[1:]
    everyone = tuple(dict.fromkeys(sensors.values()))

    def target(name: str) -> tuple[str, ...]:
        if name not in sensors:
            raise ValueError(f"no sensor {name!r}; have {', '.join(everyone)}")
        return (sensors[name],)

    def split_for(rest: list[str], word: str) -> tuple[list[str], float | None]:
        if word in rest:
            index = rest.index(word)
            if index != len(rest) - 2:
                raise ValueError(f"expected {word} DURATION at the end")
            return rest[:index], parse_duration(rest[index + 1])
        return rest, None

    if verb in _POINT_VERBS:
        if not args and verb in ("freeze", "resume"):
            return Command(line, at, verb, everyone)
        if not args:
            raise ValueError(f"{verb} needs a point ({', '.join(POINTS)})")
        name, _, point = args[0].rpartition(".")
        if point not in POINTS:
            raise ValueError(f"unknown point {point!r}; expected one of {', '.join(POINTS)}")
        who = target(name) if name else everyone
        rest = args[1:]
        if verb in ("freeze", "resume"):
            if rest:
                raise ValueError(f"{verb} takes only a point")
            return Command(line, at, verb, who, point)
        if verb == "set":
            if len(rest) != 1:
                raise ValueError("expected: set [SENSOR.]POINT VALUE")
            return Command(line, at, verb, who, point, (_number(rest[0]),))
        if verb == "ramp":
            values, seconds = split_for(rest, "over")
            if seconds is None or len(values) not in (1, 2):
                raise ValueError("expected: ramp [SENSOR.]POINT [FROM] TO over DURATION")
            return Command(line, at, verb, who, point, tuple(map(_number, values)), seconds)
        values, seconds = split_for(rest, "for")
        if seconds is None or len(values) != 1 or seconds <= 0:
            raise ValueError("expected: excursion [SENSOR.]POINT VALUE for DURATION (> 0)")
        return Command(line, at, verb, who, point, (_number(values[0]),), seconds)
    if verb in _FAULT_VERBS:
        code = 4
        rest = args
        if verb == "exception":
            if not rest or not rest[0].isdigit() or not 1 <= int(rest[0]) <= 255:
                raise ValueError("expected: exception CODE (1..255) [SENSOR] [for DURATION]")
            code, rest = int(rest[0]), rest[1:]
        rest, seconds = split_for(rest, "for")
        if verb == "ok" and seconds is not None:
            raise ValueError("ok takes no duration")
        if len(rest) > 1:
            raise ValueError(f"unexpected {' '.join(rest[1:])!r}")
        who = target(rest[0]) if rest else everyone
        return Command(line, at, verb, who, seconds=seconds, code=code)
    raise ValueError(
        f"unknown command {verb!r}; expected one of "
        f"{', '.join(sorted(_POINT_VERBS | _FAULT_VERBS))} (optionally after: at DURATION)"
    )


def parse_script(lines: Iterable[str], sensors: dict[str, str], source: str) -> list[Command]:
    """Every command of a script, checked; :class:`ScriptError` naming ``source`` and the line."""
    commands = []
    for number, text in enumerate(lines, start=1):
        try:
            command = parse_line(text, number, sensors)
        except ScriptError as exc:
            raise ScriptError(f"{source}: {exc}") from None
        if command is not None:
            commands.append(command)
    return commands


async def run_script(
    commands: Iterable[Command],
    apply: Callable[[Command], None],
    started: float,
    clock: Callable[[], float],
) -> None:
    """Apply each command at its time (``at`` seconds after ``started`` on ``clock``), in the
    order of their times; commands without ``at`` at once."""
    timed = sorted(commands, key=lambda c: (c.at or 0.0, c.line))
    for command in timed:
        if command.at is not None:
            delay = started + command.at - clock()
            if delay > 0:
                await asyncio.sleep(delay)
        apply(command)


async def drive(
    apply: Callable[[Command], None],
    sensors: dict[str, str],
    script: Iterable[Command],
    interactive: bool,
    print_fn: Callable[[str], None],
) -> None:
    """Run ``script`` and, when ``interactive``, each line typed on stdin (a bad one is
    answered with its reason, and the simulator keeps running); then serve until cancelled."""
    started = time.monotonic()

    def announce(command: Command) -> None:
        try:
            apply(command)
        except ValueError as exc:
            print_fn(f"line {command.line}: {exc}")
            return
        print_fn(f"t+{time.monotonic() - started:.1f}s line {command.line}: {command.text}")

    tasks = [asyncio.create_task(run_script(script, announce, started, time.monotonic))]
    if interactive:
        tasks.append(asyncio.create_task(_typed(announce, sensors, started, print_fn)))
    try:
        await asyncio.Event().wait()
    finally:
        for task in tasks:
            task.cancel()


async def _typed(
    announce: Callable[[Command], None],
    sensors: dict[str, str],
    started: float,
    print_fn: Callable[[str], None],
) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    number = 0
    pending: set[asyncio.Task[None]] = set()  # referenced until done
    while line := await reader.readline():
        number += 1
        try:
            command = parse_line(line.decode("utf-8", "replace"), number, sensors)
        except ScriptError as exc:
            print_fn(f"stdin: {exc}")
            continue
        if command is not None:
            # "at" typed interactively counts from the start, as in a script.
            task = asyncio.create_task(run_script([command], announce, started, time.monotonic))
            pending.add(task)
            task.add_done_callback(pending.discard)
