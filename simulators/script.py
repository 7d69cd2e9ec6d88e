"""The technician's command language for the simulators (``gxpgate simulate ... --script``).

One command per line; ``#`` starts a comment. A line may start with ``at DURATION``: the
command then runs that long after the simulator started (otherwise at once). Durations are a
number and a unit: ``500ms``, ``10s``, ``5m``, ``1h``. A point is ``[SENSOR.]POINT``: without
a sensor (Modbus: name or unit id; OPC UA: zone) the command applies to every sensor.

Every device simulator knows the point commands::

    set [SENSOR.]POINT VALUE                   hold VALUE, no drift
    ramp [SENSOR.]POINT [FROM] TO over DUR     linear from FROM (default: now) to TO, then hold
    excursion [SENSOR.]POINT VALUE for DUR     VALUE for DUR, then back to what it was doing
    freeze [[SENSOR.]POINT]                    stuck: keep the current value
    resume [[SENSOR.]POINT]                    back to the base value, drifting

and the faults of its own kind of device (:data:`MODBUS`, :data:`OPCUA`, :data:`LOGGER`)::

    Modbus   exception CODE [SENSOR] [for DUR]   answer with Modbus exception CODE (1..255)
             silent [SENSOR] [for DUR]           do not answer at all
             drop [SENSOR] [for DUR]             close the connection a request comes on (TCP)
             ok [SENSOR]                         answer normally again
    OPC UA   bad [ZONE.]POINT [STATUS] [for DUR] the value's StatusCode (BadSensorFailure)
             good [[ZONE.]POINT]                 StatusCode Good again
             drop [for DUR]                      the server goes down (sessions and listener)
             ok                                  the server comes back up
    logger   bad POINT [for DUR]                 the point reads ERR (sensor fault)
             good [POINT]                        the point reads again
             silent [for DUR]                    answer nothing (the logger keeps logging)
             garbage [COUNT]                     the next COUNT (1) answer lines are noise
             checksum [COUNT]                    the next COUNT (1) answer lines fail their CRC
             ok                                  answer again

The quality-service simulator has its own (:data:`QUALITY_SERVICE`)::

    outage DUR                                 stop listening for DUR (connections refused)
    fail STATUS [COUNT] [retry-after DUR]      answer the next COUNT (1) requests with STATUS
    drop [COUNT]                               read the next COUNT (1) requests, answer none
    delay DUR                                  wait DUR before handling each request (0s: off)

Faults without ``for`` last until ``ok`` (``good``). Every line is checked before the simulator
starts, so a bad script is refused whole, naming its line (:class:`ScriptError`).
"""

from __future__ import annotations

import asyncio
import inspect
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from gxpgate.simulators.behaviour import POINTS

__all__ = [
    "LOGGER",
    "MODBUS",
    "OPCUA",
    "QUALITY_SERVICE",
    "Command",
    "Dialect",
    "ScriptError",
    "drive",
    "parse_duration",
    "parse_line",
    "parse_script",
    "run_script",
]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class ScriptError(ValueError):
    """A line of a script that cannot run; ``str()`` names the line."""


@dataclass(frozen=True)
class Command:
    line: int
    at: float | None
    """Seconds after the start; None: at once."""
    verb: str
    sensors: tuple[str, ...] = ()
    """Sensor names it applies to."""
    point: str | None = None
    values: tuple[float, ...] = ()
    seconds: float | None = None
    """``over``/``for``/``retry-after`` duration, or the duration of ``outage``/``delay``."""
    code: int = 4
    status: str | None = None
    """``bad``: the OPC UA StatusCode name."""
    text: str = ""
    """The line as written, to say what ran."""


@dataclass(frozen=True)
class _Context:
    sensors: Mapping[str, str]
    """Every accepted name (and unit id) -> the sensor's name."""
    dialect: Dialect

    @property
    def everyone(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.sensors.values()))

    def target(self, name: str) -> tuple[str, ...]:
        if name not in self.sensors:
            raise ValueError(f"no sensor {name!r}; have {', '.join(self.everyone)}")
        return (self.sensors[name],)

    def point(self, word: str) -> tuple[tuple[str, ...], str]:
        name, _, point = word.rpartition(".")
        points = self.dialect.points
        if point not in points:
            raise ValueError(f"unknown point {point!r}; expected one of {', '.join(points)}")
        return (self.target(name) if name else self.everyone), point


_Parse = Callable[[str, list[str], _Context], Command]
"""(verb, arguments, context) -> the command, with line, at and text filled in later."""


@dataclass(frozen=True)
class Dialect:
    """The commands one simulator understands."""

    verbs: Mapping[str, _Parse]
    points: tuple[str, ...] = POINTS
    statuses: frozenset[str] = field(default_factory=frozenset)
    """Names ``bad`` accepts as a STATUS; empty: ``bad`` takes none."""

    def with_points(self, points: Iterable[str]) -> Dialect:
        return replace(self, points=tuple(points))

    def with_statuses(self, statuses: Iterable[str]) -> Dialect:
        return replace(self, statuses=frozenset(statuses))


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


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{text!r} is not a count (1 or more)")
    return int(text)


def _split_at(rest: list[str], word: str) -> tuple[list[str], float | None]:
    """``rest`` without a trailing ``WORD DURATION``, and that duration (None: absent)."""
    if word in rest:
        index = rest.index(word)
        if index != len(rest) - 2:
            raise ValueError(f"expected {word} DURATION at the end")
        return rest[:index], parse_duration(rest[index + 1])
    return rest, None


# -- point commands (every device simulator) ------------------------------------------------------


def _point_command(verb: str, args: list[str], ctx: _Context) -> Command:
    if not args and verb in ("freeze", "resume"):
        return Command(0, None, verb, ctx.everyone)
    if not args:
        raise ValueError(f"{verb} needs a point ({', '.join(ctx.dialect.points)})")
    who, point = ctx.point(args[0])
    rest = args[1:]
    if verb in ("freeze", "resume"):
        if rest:
            raise ValueError(f"{verb} takes only a point")
        return Command(0, None, verb, who, point)
    if verb == "set":
        if len(rest) != 1:
            raise ValueError("expected: set [SENSOR.]POINT VALUE")
        return Command(0, None, verb, who, point, (_number(rest[0]),))
    if verb == "ramp":
        values, seconds = _split_at(rest, "over")
        if seconds is None or len(values) not in (1, 2):
            raise ValueError("expected: ramp [SENSOR.]POINT [FROM] TO over DURATION")
        return Command(0, None, verb, who, point, tuple(map(_number, values)), seconds)
    values, seconds = _split_at(rest, "for")
    if seconds is None or len(values) != 1 or seconds <= 0:
        raise ValueError("expected: excursion [SENSOR.]POINT VALUE for DURATION (> 0)")
    return Command(0, None, verb, who, point, (_number(values[0]),), seconds)


def _bad(verb: str, args: list[str], ctx: _Context) -> Command:
    statuses = ctx.dialect.statuses
    usage = "expected: bad [SENSOR.]POINT" + (" [STATUS]" if statuses else "") + " [for DURATION]"
    rest, seconds = _split_at(args, "for")
    if not rest or len(rest) > (2 if statuses else 1):
        raise ValueError(usage)
    who, point = ctx.point(rest[0])
    status = None
    if statuses:
        status = rest[1] if len(rest) == 2 else "BadSensorFailure"
        if status not in statuses:
            raise ValueError(f"unknown status {status!r} (e.g. BadSensorFailure, BadOutOfRange)")
    return Command(0, None, verb, who, point, seconds=seconds, status=status)


def _good(verb: str, args: list[str], ctx: _Context) -> Command:
    if not args:
        return Command(0, None, verb, ctx.everyone)
    if len(args) > 1:
        raise ValueError("expected: good [[SENSOR.]POINT]")
    who, point = ctx.point(args[0])
    return Command(0, None, verb, who, point)


# -- device faults -------------------------------------------------------------------------------


def _fault(per_sensor: bool) -> _Parse:
    """``VERB [SENSOR] [for DUR]`` (``exception CODE ...``); without ``per_sensor`` the fault
    is the whole device's and takes no sensor."""

    def parse(verb: str, args: list[str], ctx: _Context) -> Command:
        code = 4
        rest = args
        if verb == "exception":
            if not rest or not rest[0].isdigit() or not 1 <= int(rest[0]) <= 255:
                raise ValueError("expected: exception CODE (1..255) [SENSOR] [for DURATION]")
            code, rest = int(rest[0]), rest[1:]
        rest, seconds = _split_at(rest, "for")
        if verb == "ok" and seconds is not None:
            raise ValueError("ok takes no duration")
        if len(rest) > (1 if per_sensor else 0):
            extra = rest[1:] if per_sensor else rest
            raise ValueError(f"unexpected {' '.join(extra)!r}")
        who = ctx.target(rest[0]) if rest else ctx.everyone
        return Command(0, None, verb, who, seconds=seconds, code=code)

    return parse


def _lines(verb: str, args: list[str], ctx: _Context) -> Command:
    if len(args) > 1:
        raise ValueError(f"expected: {verb} [COUNT]")
    return Command(0, None, verb, values=(_count(args[0]) if args else 1,))


# -- quality service -----------------------------------------------------------------------------


def _lasting(verb: str, args: list[str], ctx: _Context) -> Command:
    if len(args) != 1:
        raise ValueError(f"expected: {verb} DURATION")
    return Command(0, None, verb, seconds=parse_duration(args[0]))


def _fail(verb: str, args: list[str], ctx: _Context) -> Command:
    usage = "expected: fail STATUS [COUNT] [retry-after DURATION]"
    if not args or not args[0].isdigit() or not 100 <= int(args[0]) <= 599:
        raise ValueError(f"{usage}; STATUS is an HTTP status such as 503 or 429")
    rest, retry = _split_at(args[1:], "retry-after")
    if len(rest) > 1:
        raise ValueError(usage)
    count = _count(rest[0]) if rest else 1
    return Command(0, None, verb, values=(int(args[0]), count), seconds=retry)


_POINT_VERBS: dict[str, _Parse] = dict.fromkeys(
    ("set", "ramp", "excursion", "freeze", "resume"), _point_command
)

MODBUS = Dialect(
    {**_POINT_VERBS, **dict.fromkeys(("exception", "silent", "drop", "ok"), _fault(True))}
)
OPCUA = Dialect(
    {**_POINT_VERBS, "bad": _bad, "good": _good, **dict.fromkeys(("drop", "ok"), _fault(False))}
)
LOGGER = Dialect(
    {
        **_POINT_VERBS,
        "bad": _bad,
        "good": _good,
        **dict.fromkeys(("silent", "ok"), _fault(False)),
        "garbage": _lines,
        "checksum": _lines,
    }
)
QUALITY_SERVICE = Dialect({"outage": _lasting, "delay": _lasting, "fail": _fail, "drop": _lines})


def parse_line(
    text: str, line: int, sensors: Mapping[str, str], dialect: Dialect = MODBUS
) -> Command | None:
    """One line; None for a blank or comment line. ``sensors`` maps every accepted name (and
    unit id) to the sensor's name."""
    words = text.split("#", 1)[0].split()
    if not words:
        return None
    written = " ".join(words)
    try:
        at = None
        if words[0] == "at":
            if len(words) < 3:
                raise ValueError("expected: at DURATION COMMAND")
            at = parse_duration(words[1])
            words = words[2:]
        parse = dialect.verbs.get(words[0])
        if parse is None:
            raise ValueError(
                f"unknown command {words[0]!r}; expected one of "
                f"{', '.join(sorted(dialect.verbs))} (optionally after: at DURATION)"
            )
        command = parse(words[0], words[1:], _Context(sensors, dialect))
    except ValueError as exc:
        raise ScriptError(f"line {line}: {exc}") from None
    return replace(command, line=line, at=at, text=written)


def parse_script(
    lines: Iterable[str], sensors: Mapping[str, str], source: str, dialect: Dialect = MODBUS
) -> list[Command]:
    """Every command of a script, checked; :class:`ScriptError` naming ``source`` and the line."""
    commands = []
    for number, text in enumerate(lines, start=1):
        try:
            command = parse_line(text, number, sensors, dialect)
        except ScriptError as exc:
            raise ScriptError(f"{source}: {exc}") from None
        if command is not None:
            commands.append(command)
    return commands


Apply = Callable[[Command], Awaitable[None] | None]
"""Carries out one command (a coroutine function where the simulator must await); raises
ValueError (or RuntimeError) when it cannot."""


async def run_script(
    commands: Iterable[Command],
    apply: Apply,
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
        done = apply(command)
        if inspect.isawaitable(done):
            await done


async def drive(
    apply: Apply,
    sensors: Mapping[str, str],
    script: Iterable[Command],
    interactive: bool,
    print_fn: Callable[[str], object],
    dialect: Dialect = MODBUS,
) -> None:
    """Run ``script`` and, when ``interactive``, each line typed on stdin (a bad one is
    answered with its reason, and the simulator keeps running); then serve until cancelled."""
    started = time.monotonic()

    async def announce(command: Command) -> None:
        try:
            done = apply(command)
            if inspect.isawaitable(done):
                await done
        except (ValueError, RuntimeError) as exc:
            print_fn(f"line {command.line}: {exc}")
            return
        print_fn(f"t+{time.monotonic() - started:.1f}s line {command.line}: {command.text}")

    tasks = [asyncio.create_task(run_script(script, announce, started, time.monotonic))]
    if interactive:
        tasks.append(asyncio.create_task(_typed(announce, sensors, dialect, started, print_fn)))
    try:
        await asyncio.Event().wait()
    finally:
        for task in tasks:
            task.cancel()


async def _typed(
    announce: Apply,
    sensors: Mapping[str, str],
    dialect: Dialect,
    started: float,
    print_fn: Callable[[str], object],
) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    number = 0
    pending: set[asyncio.Task[None]] = set()  # referenced until done
    while line := await reader.readline():
        number += 1
        try:
            command = parse_line(line.decode("utf-8", "replace"), number, sensors, dialect)
        except ScriptError as exc:
            print_fn(f"stdin: {exc}")
            continue
        if command is not None:
            # "at" typed interactively counts from the start, as in a script.
            task = asyncio.create_task(run_script([command], announce, started, time.monotonic))
            pending.add(task)
            task.add_done_callback(pending.discard)
