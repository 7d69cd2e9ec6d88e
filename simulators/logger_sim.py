"""A GXL/1 data logger on a pseudo-terminal, for the gateway's logger driver without hardware.

The gateway opens :attr:`LoggerSimulator.device_path` with pyserial, as it would open
``/dev/ttyUSB0``, and speaks GXL/1 (the protocol is specified in ``drivers/gxl.py``, whose codec
this simulator uses for both directions). Tests run it in-process (``async with
LoggerSimulator() as sim``); ``gxpgate simulate logger`` runs it standalone through
:func:`run_forever`.

The pty. ``os.openpty()`` gives a master and a slave fd. The simulator reads and writes the
master on the event loop (``loop.add_reader``, non-blocking, answers queued and written with
``loop.add_writer`` when the pty buffer is full, as it is for a 1000-record READ); the gateway
opens the slave by path. The slave is set raw (no echo, no CR/LF translation) before anyone has
opened it, and the simulator keeps its own slave fd open while entered: when the last fd on a
slave closes, Linux hangs up the pty and the master reads EIO, so a gateway that closes and
reopens its port would otherwise kill the logger. Line settings (baud rate, parity) mean nothing
on a pty and are ignored. Requests are handled line by line as they arrive; a bare CR LF is
skipped (GXL/1). A line over 512 bytes is answered with one ERR as soon as it is too long,
and the rest of it, up to its LF, is dropped.

Memory. The logger "has been logging" since ``started_at`` (epoch seconds on the simulator's
clock; default: when it was built, in whole seconds): record *i* is taken at ``started_at +
i × interval_secs``, i = 1, 2, ..., as soon as the clock has reached that time. No timer runs:
records are taken lazily, in time order, whenever the simulator is asked anything (a request, a
scripting or fault call), which is also the moment their values are computed, so a fake clock
moved on by an hour gives 60 records at once and ``started_at`` 100,000 intervals back gives a
benchmark 100,000 stored records (taken on entry, not in its first READ). Memory holds
``capacity`` records; each new one overwrites the oldest. Records that would be overwritten
before anyone could ask are not computed at all. Times on records, LIVE and CLK are the
logger's clock: the simulator's clock plus ``clock_offset_secs`` as it was when the record was
taken (:meth:`LoggerSimulator.set_clock_offset` moves it, like a user setting the clock).

Values. Points are a subset of ``temperature`` (Cel), ``humidity`` (%) and ``door_open`` (1),
scripted through :class:`gxpgate.simulators.behaviour.ScriptedPoints` like the other simulators:
base value plus a bounded random walk seeded from ``(seed, serial, point)``, and ``set_value``,
``ramp``, ``excursion``, ``freeze``, ``resume_point`` (which stands for ``resume``; that name
ends silence here). The walk is the shared one with one step per record interval instead of one
per 5 s, its step widened by √(interval / 5 s) so it wanders as fast: a logger samples once per
interval, and 100,000 records then cost 100,000 steps, not 1.2 million. Values are sent with
the logger's resolution, 0.01. A scripting call takes effect from the moment it is made; records
already due keep the values they had.

Faults. :meth:`~LoggerSimulator.go_silent` (for some seconds of the clock, or until
:meth:`~LoggerSimulator.resume`): requests are read and dropped, nothing is answered, and the
logger keeps logging. :meth:`~LoggerSimulator.garbage` and
:meth:`~LoggerSimulator.bad_checksum` corrupt the next *n* answer lines (a READ answer is
several lines): garbage replaces a line with 1-40 random bytes, the first one non-ASCII so it can
never pass for a line, none of them CR or LF, and then CR LF, so line framing survives; a bad
checksum keeps the text and sends a wrong CRC.
Garbage wins when both are pending. :meth:`~LoggerSimulator.sensor_fault` makes a point read
``ERR`` in LIVE and in records taken meanwhile. :meth:`~LoggerSimulator.swap` puts a different
logger on the same cable: new serial, empty memory from now on, fresh scripting and sensor state,
other settings kept unless given; the line faults (silence, garbage, bad checksums) and the
counters stay with the cable.

Concurrency: everything runs on the event loop that entered the simulator; the scripting and
fault methods are synchronous and must be called from that loop's thread. A test drives
pyserial from another thread (``asyncio.to_thread``) so the loop stays free to answer.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
import tty
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import TypedDict, Unpack

from gxpgate.drivers.gxl import (
    MAX_LINE_BYTES,
    GxlError,
    LoggerIdentity,
    LoggerRecord,
    decode_line,
    encode_line,
    format_clock,
    format_end,
    format_error,
    format_identity,
    format_live,
    format_record,
    parse_request,
)
from gxpgate.simulators.behaviour import (
    DRIFT,
    DRIFT_STEP_SECS,
    POINTS,
    Base,
    RandomWalk,
    ScriptedPoints,
    finite,
)
from gxpgate.simulators.script import LOGGER, Command, Dialect, drive

__all__ = [
    "DEFAULT_POINTS",
    "POINT_UNITS",
    "LoggerChanges",
    "LoggerOptions",
    "LoggerSimulator",
    "run_forever",
    "script_language",
]

POINT_UNITS: dict[str, str] = {"temperature": "Cel", "humidity": "%", "door_open": "1"}
"""UCUM unit of each point a simulated logger can have."""

DEFAULT_POINTS = ("temperature", "humidity")

_READ_SIZE = 4096
_RESOLUTION_DIGITS = 2


class LoggerChanges(TypedDict, total=False):
    """Settings of one logger, as :meth:`LoggerSimulator.swap` takes them."""

    model: str
    firmware: str
    interval_secs: int
    points: Sequence[str]
    temperature_c: float
    humidity_pct: float
    drift: bool
    capacity: int
    clock_offset_secs: float
    started_at: float | None


class LoggerOptions(LoggerChanges, total=False):
    """Everything :class:`LoggerSimulator` takes, for :func:`run_forever`."""

    serial: str
    seed: int
    clock: Callable[[], float]


@dataclass(frozen=True)
class _Settings:
    """One logger's settings, checked once."""

    serial: str
    model: str
    firmware: str
    interval_secs: int
    points: tuple[str, ...]
    temperature_c: float
    humidity_pct: float
    drift: bool
    capacity: int
    clock_offset_secs: float

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("a logger needs at least one point")
        for point in self.points:
            if point not in POINT_UNITS:
                raise ValueError(f"unknown point {point!r}; expected some of {list(POINTS)}")
        if len(set(self.points)) != len(self.points):
            raise ValueError(f"duplicate points in {list(self.points)}")
        if isinstance(self.capacity, bool) or not isinstance(self.capacity, int):
            raise ValueError(f"capacity must be an integer, got {self.capacity!r}")
        if self.capacity < 1:
            raise ValueError(f"capacity must be at least 1 record, got {self.capacity}")
        finite(self.temperature_c)
        finite(self.humidity_pct)
        finite(self.clock_offset_secs)
        # The codec checks serial, model, firmware and interval as it would put them on the line.
        self.identity(first=1, last=0)

    def identity(self, first: int, last: int) -> LoggerIdentity:
        return LoggerIdentity(
            model=self.model,
            serial=self.serial,
            firmware=self.firmware,
            interval_secs=self.interval_secs,
            first=first,
            last=last,
            points={point: POINT_UNITS[point] for point in self.points},
        )


class _RecordWalk(RandomWalk):
    """The shared bounded random walk, stepping once per record interval, not per 5 s.

    Its time runs ``interval / DRIFT_STEP_SECS`` times slower and its step is ``√`` that much
    wider, so after a given time it has wandered as far as the other simulators' walks.
    """

    def __init__(
        self, seed: str, bound: float, sigma: float, origin: float, interval_secs: int
    ) -> None:
        self._ratio = interval_secs / DRIFT_STEP_SECS
        self._t0 = origin
        super().__init__(seed, bound, sigma * math.sqrt(self._ratio), origin)

    def offset_at(self, now: float) -> float:
        return super().offset_at(self._t0 + (now - self._t0) / self._ratio)


class _LoggerPoints(ScriptedPoints):
    """The shared scripted points, drifting with :class:`_RecordWalk`."""

    def __init__(self, seed_key: str, settings: _Settings, t0: float) -> None:
        super().__init__(seed_key, settings.temperature_c, settings.humidity_pct, False, t0)
        if settings.drift:
            for point, (bound, sigma) in DRIFT.items():
                walk = _RecordWalk(f"{seed_key}:{point}", bound, sigma, t0, settings.interval_secs)
                self.base[point] = Base(self.base[point].base, walk)
            self.behaviour.update(self.base)


class _Logger:
    """One logger: settings, points, clock offset, sensor faults and the ring of records.

    Record *i* lives in slot ``(i - 1) % capacity`` of parallel arrays: the logger-clock time
    and one array per point, NaN for ERR (values are otherwise finite).
    """

    def __init__(self, settings: _Settings, seed: int, started_at: float) -> None:
        self.settings = settings
        self.started_at = finite(started_at)
        self.offset_secs = settings.clock_offset_secs
        self.points = _LoggerPoints(f"{seed}:{settings.serial}", settings, started_at)
        self.faulty: set[str] = set()
        self._next = 1  # index of the next record to take
        self._times = array("d")
        self._values = {point: array("d") for point in settings.points}

    @property
    def first(self) -> int:
        return max(1, self._next - self.settings.capacity)

    @property
    def last(self) -> int:
        return self._next - 1

    def identity(self) -> LoggerIdentity:
        return self.settings.identity(self.first, self.last)

    def catch_up(self, now: float) -> None:
        """Take every record due by ``now``, in time order (the walk only moves forward)."""
        interval = self.settings.interval_secs
        due = math.floor((now - self.started_at) / interval)
        if due < self._next:
            return
        # Values are functions of time, so skipping the records the memory would overwrite
        # at once changes none of the others.
        for index in range(max(self._next, due - self.settings.capacity + 1), due + 1):
            at = self.started_at + index * interval
            slot = (index - 1) % self.settings.capacity
            _put(self._times, slot, at + self.offset_secs)
            for point, column in self._values.items():
                value = self.reading(point, at)
                _put(column, slot, math.nan if value is None else value)
        self._next = due + 1

    def reading(self, point: str, now: float) -> float | None:
        if point in self.faulty:
            return None
        return round(self.points.value(point, now), _RESOLUTION_DIGITS)

    def live(self, now: float) -> LoggerRecord:
        values = {point: self.reading(point, now) for point in self.settings.points}
        return LoggerRecord(None, _datetime(now + self.offset_secs), values)

    def record(self, index: int) -> LoggerRecord:
        if not self.first <= index <= self.last:
            raise IndexError(f"record {index} is not held: first={self.first} last={self.last}")
        slot = (index - 1) % self.settings.capacity
        values: dict[str, float | None] = {}
        for point, column in self._values.items():
            value = column[slot]
            values[point] = None if math.isnan(value) else value
        return LoggerRecord(index, _datetime(self._times[slot]), values)

    def read(self, start: int, count: int) -> list[LoggerRecord]:
        begin = max(start, self.first)
        end = min(self.last, begin + count - 1)
        return [self.record(index) for index in range(begin, end + 1)]


def script_language(
    serial: str, points: Sequence[str] = DEFAULT_POINTS
) -> tuple[dict[str, str], Dialect]:
    """The name a script may use for a logger (its serial) and its command language, with the
    points it has."""
    return {serial: serial}, LOGGER.with_points(points)


def _put(column: array[float], slot: int, value: float) -> None:
    if slot < len(column):
        column[slot] = value
    else:  # filling up; after skipped records the slot may lie beyond the end
        column.extend([math.nan] * (slot - len(column)))
        column.append(value)


def _datetime(epoch_secs: float) -> datetime:
    return datetime.fromtimestamp(epoch_secs, UTC)


def _check_lines(n_lines: int) -> int:
    if isinstance(n_lines, bool) or not isinstance(n_lines, int) or n_lines < 0:
        raise ValueError(f"n_lines must be an integer >= 0, got {n_lines!r}")
    return n_lines


class LoggerSimulator:
    """A GXL/1 data logger on a pty; an async context manager that exists while entered.

    ``clock`` gives epoch seconds (default :func:`time.time`) and drives everything: records,
    values, timestamps and timed silence; tests pass a fake one. ``started_at`` (epoch seconds
    on that clock) is when the logger started logging; in the past, it already holds records.
    """

    def __init__(
        self,
        *,
        serial: str = "L0001",
        model: str = "GXL-SIM",
        firmware: str = "1.0.0",
        interval_secs: int = 60,
        points: Sequence[str] = DEFAULT_POINTS,
        temperature_c: float = 5.0,
        humidity_pct: float = 45.0,
        drift: bool = True,
        capacity: int = 100_000,
        clock_offset_secs: float = 0.0,
        started_at: float | None = None,
        seed: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        settings = _Settings(
            serial=serial,
            model=model,
            firmware=firmware,
            interval_secs=interval_secs,
            points=tuple(points),
            temperature_c=temperature_c,
            humidity_pct=humidity_pct,
            drift=drift,
            capacity=capacity,
            clock_offset_secs=clock_offset_secs,
        )
        self.requests_served = 0
        """Requests answered (ERR answers included)."""
        self.requests_ignored = 0
        """Requests read and dropped while silent."""
        self._clock = clock
        self._seed = seed
        self._logger = self._new_logger(settings, started_at)
        self._noise = random.Random(f"{seed}:noise")
        self._silent_until = -math.inf
        self._garbage_left = 0
        self._bad_checksum_left = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fds: tuple[int, int] | None = None  # (master, slave)
        self._path: str | None = None
        self._inbox = bytearray()
        self._skipping = False  # dropping the rest of an over-long line, up to its LF
        self._outbox = bytearray()
        self._writing = False

    # ----------------------------------------------------------------------- lifecycle

    @property
    def device_path(self) -> str:
        """The pty the gateway opens with pyserial, e.g. ``/dev/pts/7``."""
        if self._path is None:
            raise RuntimeError("the logger simulator is not running; enter it with 'async with'")
        return self._path

    async def __aenter__(self) -> LoggerSimulator:
        if self._fds is not None:
            raise RuntimeError("the logger simulator is already running")
        loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        try:
            tty.setraw(slave)
            os.set_blocking(master, False)
            path = os.ttyname(slave)
            loop.add_reader(master, self._readable)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        self._loop, self._fds, self._path = loop, (master, slave), path
        self._logger.catch_up(self._clock())  # a long history is computed now, not in a READ
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop answering and close the pty. Idempotent. A gateway still holding the device
        path open reads EIO from then on."""
        fds, self._fds = self._fds, None
        loop, self._loop = self._loop, None
        self._path = None
        if fds is None or loop is None:
            return
        loop.remove_reader(fds[0])
        if self._writing:
            loop.remove_writer(fds[0])
            self._writing = False
        self._inbox.clear()
        self._outbox.clear()
        for fd in fds:
            os.close(fd)

    # ----------------------------------------------------------------------- inspection

    def identity(self) -> LoggerIdentity:
        """What ``ID`` would answer now."""
        return self._caught_up().identity()

    def record(self, index: int) -> LoggerRecord:
        """Stored record ``index`` as ``READ`` would send it; IndexError if not held."""
        return self._caught_up().record(index)

    def value(self, point: str) -> float | None:
        """The point's reading now, as ``LIVE`` would send it (None: sensor fault)."""
        logger = self._caught_up()
        return logger.reading(self._point(point), self._clock())

    @property
    def capacity(self) -> int:
        """How many records the logger's memory holds."""
        return self._logger.settings.capacity

    @property
    def silent(self) -> bool:
        return self._clock() < self._silent_until

    # ----------------------------------------------------------------------- scripting

    def set_value(self, point: str, value: float) -> None:
        """Hold ``value`` (no drift) until changed."""
        self._caught_up().points.hold(self._point(point), value)

    def ramp(self, point: str, to: float, seconds: float) -> None:
        """Go linearly from the current value to ``to`` over ``seconds``, then hold ``to``."""
        self._caught_up().points.ramp(self._point(point), to, seconds, self._clock())

    def excursion(self, point: str, value: float, seconds: float) -> None:
        """Jump to ``value`` for ``seconds``, then hand back to the behaviour it interrupted."""
        self._caught_up().points.excursion(self._point(point), value, seconds, self._clock())

    def freeze(self, point: str) -> None:
        """Stuck sensor: keep returning the current value."""
        self._caught_up().points.freeze(self._point(point), self._clock())

    def resume_point(self, point: str) -> None:
        """Back to the base value, drifting if the logger drifts."""
        self._caught_up().points.resume(self._point(point))

    def sensor_fault(self, point: str, on: bool = True) -> None:
        """While on, the point reads ``ERR`` in LIVE and in the records taken."""
        faulty = self._caught_up().faulty
        if on:
            faulty.add(self._point(point))
        else:
            faulty.discard(self._point(point))

    def set_clock_offset(self, secs: float) -> None:
        """Set the logger's clock to the simulator's clock plus ``secs``, from now on."""
        self._caught_up().offset_secs = finite(secs)

    def swap(self, serial: str, **changes: Unpack[LoggerChanges]) -> None:
        """Replace the logger with another one, ``serial``, with an empty memory.

        It starts logging now unless ``started_at`` is given; settings not given are the old
        logger's. Scripting and sensor faults start fresh; line faults and counters stay.
        """
        old = self._logger.settings
        settings = _Settings(
            serial=serial,
            model=changes.get("model", old.model),
            firmware=changes.get("firmware", old.firmware),
            interval_secs=changes.get("interval_secs", old.interval_secs),
            points=tuple(changes.get("points", old.points)),
            temperature_c=changes.get("temperature_c", old.temperature_c),
            humidity_pct=changes.get("humidity_pct", old.humidity_pct),
            drift=changes.get("drift", old.drift),
            capacity=changes.get("capacity", old.capacity),
            clock_offset_secs=changes.get("clock_offset_secs", old.clock_offset_secs),
        )
        self._logger = self._new_logger(settings, changes.get("started_at"))

    # ----------------------------------------------------------------------- line faults

    def go_silent(self, seconds: float | None = None) -> None:
        """Answer nothing, for ``seconds`` of the clock or until :meth:`resume`."""
        if seconds is not None and not finite(seconds) > 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        self._silent_until = math.inf if seconds is None else self._clock() + seconds

    def resume(self) -> None:
        """Answer again (ends :meth:`go_silent`)."""
        self._silent_until = -math.inf

    def garbage(self, n_lines: int = 1) -> None:
        """Send random non-protocol bytes instead of each of the next ``n_lines`` answer lines."""
        self._garbage_left = _check_lines(n_lines)

    def bad_checksum(self, n_lines: int = 1) -> None:
        """Send the next ``n_lines`` answer lines with a wrong CRC."""
        self._bad_checksum_left = _check_lines(n_lines)

    # ----------------------------------------------------------------------- command language

    def script_language(self) -> tuple[dict[str, str], Dialect]:
        """See :func:`script_language`, for the logger now on the line."""
        return script_language(self._logger.settings.serial, self._logger.settings.points)

    def apply(self, command: Command) -> None:
        """Carry out one command of :data:`gxpgate.simulators.script.LOGGER`; ValueError when it
        cannot. The logger is one device: a sensor name in a command can only be its serial."""
        verb = command.verb
        if verb == "silent":
            self.go_silent(command.seconds)
        elif verb == "ok":
            self.resume()
        elif verb == "garbage":
            self.garbage(int(command.values[0]))
        elif verb == "checksum":
            self.bad_checksum(int(command.values[0]))
        points = [command.point] if command.point else list(self._logger.settings.points)
        for point in points:
            if verb == "set":
                self.set_value(point, command.values[0])
            elif verb == "ramp":
                if len(command.values) == 2:
                    self.set_value(point, command.values[0])
                self.ramp(point, command.values[-1], command.seconds or 0.0)
            elif verb == "excursion":
                self.excursion(point, command.values[0], command.seconds or 0.0)
            elif verb == "freeze":
                self.freeze(point)
            elif verb == "resume":
                self.resume_point(point)
            elif verb in ("bad", "good"):
                self.sensor_fault(point, on=verb == "bad")
                if verb == "bad" and command.seconds is not None:
                    asyncio.get_running_loop().call_later(
                        command.seconds, self._fault_ends, point, self._logger
                    )

    def _fault_ends(self, point: str, logger: _Logger) -> None:
        if self._logger is logger:  # a swapped-in logger started without the fault
            self.sensor_fault(point, on=False)

    # ----------------------------------------------------------------------- internals

    def _new_logger(self, settings: _Settings, started_at: float | None) -> _Logger:
        if started_at is None:
            started_at = float(math.floor(self._clock()))
        return _Logger(settings, self._seed, started_at)

    def _caught_up(self) -> _Logger:
        """The logger, with every record due by now taken under the behaviour so far."""
        self._logger.catch_up(self._clock())
        return self._logger

    def _point(self, point: str) -> str:
        if point not in self._logger.settings.points:
            raise ValueError(
                f"logger {self._logger.settings.serial} has no point {point!r}; "
                f"it has {list(self._logger.settings.points)}"
            )
        return point

    def _readable(self) -> None:
        assert self._fds is not None
        try:
            data = os.read(self._fds[0], _READ_SIZE)
        except BlockingIOError:
            return
        self._inbox += data
        while True:
            end = self._inbox.find(b"\n")
            if end < 0:
                if len(self._inbox) > MAX_LINE_BYTES:
                    self._inbox.clear()
                    if not self._skipping:
                        self._skipping = True
                        self._request(None)
                return
            line = bytes(self._inbox[: end + 1])
            del self._inbox[: end + 1]
            if self._skipping:
                self._skipping = False
            elif line not in (b"\r\n", b"\n"):  # bare line ends are skipped (GXL/1)
                self._request(line)

    def _request(self, line: bytes | None) -> None:
        """Answer one request line; ``None`` stands for a line over the length limit."""
        if self.silent:
            self.requests_ignored += 1
            return
        self.requests_served += 1
        try:
            if line is None:
                raise GxlError(f"line is over the {MAX_LINE_BYTES}-byte limit")
            command, args = parse_request(decode_line(line))
        except GxlError as exc:
            self._send(format_error(str(exc)))
            return
        now = self._clock()
        logger = self._logger
        logger.catch_up(now)
        if command == "ID":
            self._send(format_identity(logger.identity()))
        elif command == "CLK":
            self._send(format_clock(_datetime(now + logger.offset_secs)))
        elif command == "LIVE":
            self._send(format_live(logger.live(now)))
        else:  # READ; parse_request knows no other command
            records = logger.read(*args)
            for record in records:
                self._send(format_record(record))
            self._send(format_end(len(records)))

    def _send(self, text: str) -> None:
        raw = encode_line(text)
        if self._garbage_left:
            self._garbage_left -= 1
            # A non-ASCII first byte makes sure the noise can never pass for a GXL/1 line.
            noise = [self._noise.randrange(0x80, 0x100)]
            noise += [self._noise.choice(_NOISE_BYTES) for _ in range(self._noise.randrange(40))]
            raw = bytes(noise) + b"\r\n"
        elif self._bad_checksum_left:
            self._bad_checksum_left -= 1
            wrong = int(raw[-10:-2], 16) ^ 0x00000001
            raw = raw[:-10] + b"%08X\r\n" % wrong
        self._outbox += raw
        self._flush()

    def _flush(self) -> None:
        if self._fds is None or self._loop is None:
            return
        master = self._fds[0]
        while self._outbox:
            try:
                written = os.write(master, self._outbox)
            except BlockingIOError:
                break  # the pty buffer is full: the gateway has not read what is there yet
            del self._outbox[:written]
        if self._outbox and not self._writing:
            self._loop.add_writer(master, self._flush)
            self._writing = True
        elif not self._outbox and self._writing:
            self._loop.remove_writer(master)
            self._writing = False


_NOISE_BYTES = bytes(b for b in range(256) if b not in b"\r\n")


async def run_forever(
    print_fn: Callable[[str], None] = print,
    script: Sequence[Command] = (),
    interactive: bool = False,
    **options: Unpack[LoggerOptions],
) -> None:
    """Run a logger until cancelled, after printing the device path to open and what it is;
    run ``script`` (and, when ``interactive``, the commands typed on stdin) meanwhile."""
    async with LoggerSimulator(**options) as sim:
        identity = sim.identity()
        points = ", ".join(f"{name} [{unit}]" for name, unit in identity.points.items())
        print_fn(f"GXL/1 data logger simulator, {identity.model} serial {identity.serial}")
        print_fn(f"device path: {sim.device_path}  (open it with pyserial; any baud rate)")
        print_fn(
            f"a record every {identity.interval_secs} s, memory for {sim.capacity} records, "
            f"{identity.first}-{identity.last} held; points: {points}"
        )
        names, dialect = sim.script_language()
        await drive(sim.apply, names, script, interactive, print_fn, dialect)
