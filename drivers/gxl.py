"""GXL/1, the line protocol between gxpgate and a data logger: the codec, no I/O.

Data loggers have no common protocol, so gxpgate defines this small one for its bundled
simulator (``simulators/logger_sim.py``). The gateway sends what the ``request_*`` builders
return and parses answers with ``decode_line`` and the ``parse_*`` functions; the simulator does
the reverse with ``parse_request`` and the ``format_*`` functions. Nothing here touches a port:
the serial driver owns the port and the timeouts, and translates :class:`GxlError` into its
``DriverError`` naming the device. Another logger protocol is another module of this shape.

GXL/1
=====

Framing. Every line, in both directions, is ``TEXT*CCCCCCCC`` and CR LF. CCCCCCCC is the CRC-32
of the bytes of TEXT (ISO-HDLC, as ``zlib.crc32``) as 8 upper-case hex digits. TEXT is one or
more printable ASCII characters (0x20-0x7E); it may contain ``*`` itself (UCUM units do:
``10*3``), so the checksum is what follows the last ``*``. A line, CR LF included, is at most
512 bytes. A bare CR LF is not a line: a receiver skips it, so a gateway may send one to end
whatever half line a logger has buffered.

Tokens. TEXT is tokens separated by single spaces, none leading or trailing. The first token is
the command, then the command's positional tokens, then ``key=value`` tokens in any order. A key
is a *name* and appears once per line; a value is one or more printable characters, no space.
Readers ignore keys they do not know, so later versions can add keys to any line (and reject
any other surplus token). The exception is ``ERR``, whose reason is free text.

Values::

    integer  unsigned decimal digits: 0, 42
    time     RFC 3339 in UTC, upper-case T and Z: 2026-11-22T10:00:00Z, or with a fraction of
             1-9 digits: 2026-11-22T10:00:00.25Z. Readers keep microseconds and drop further
             digits; a leap second (:60) is rejected. Writers give whole seconds, or the
             microseconds without trailing zeros.
    number   -?DIGITS[.DIGITS]: no exponent, no '+', no NaN or infinity. Writers give the
             shortest decimal that reads back as the same IEEE double.
    reading  a number, or ERR while the sensor is faulty
    name     a letter, then up to 63 letters, digits, '_', '-' or '.'
    unit     a UCUM code (Cel, %, [degF]): printable, no space and no ','

Requests (gateway to logger) and answers::

    ID                   ID model=<v> serial=<v> fw=<v> interval=<integer> first=<integer>
                            last=<integer> points=<name>:<unit>[,<name>:<unit>...]
    CLK                  CLK <time>
    LIVE                 LIVE <time> <name>=<reading> ...
    READ <from> <count>  REC <index> <time> <name>=<reading> ...   (zero or more lines)
                         END <n>
    anything else        ERR <reason>

``ID``. ``interval`` is the record interval in seconds (at least 1). The logger numbers its
records from 1, and an index is never reused, even after the memory wraps. ``first`` and
``last`` are the indices held: ``first=1 last=0`` is an empty memory; when the memory is full,
each new record overwrites the oldest and ``first`` grows. ``points`` declares the points in the
logger's order, at least one. Model, serial and firmware values contain no space.

``CLK`` gives the logger's clock. ``LIVE`` is a measurement taken now, ``REC`` a stored one,
both stamped by the logger's clock and carrying every declared point once. A reader that knows
the declared points (from ``ID``) ignores any other key on these lines; without them it reads
every key as a point.

``READ <from> <count>``: ``from`` at least 1, ``count`` 1-1000. The logger sends the records it
holds with indices from ``max(from, first)`` upwards, at most ``count`` and none past ``last``,
in index order, then ``END <n>`` with n the number of REC lines. A first REC above ``from``
tells the gateway that records were overwritten before it could read them; ``END 0`` that there
is nothing at or after ``from``.

``ERR <reason>`` answers a request that is malformed, fails its checksum, is unknown, or cannot
be served. The reason is printable ASCII, possibly empty. ``ID``, ``CLK`` and ``LIVE`` take no
positional tokens.

API
===

Lines: :func:`encode_line` frames TEXT, :func:`decode_line` checks a received line (CR LF,
length, ASCII, checksum) and returns TEXT. The gateway builds requests with ``request_*`` and
reads answers with ``parse_*``; the simulator reads requests with :func:`parse_request` and
writes answers with ``format_*``. :class:`LoggerIdentity` and :class:`LoggerRecord` check their
fields when built, so a value the codec returns or accepts always fits the grammar.

Exceptions::

    ValueError
    └── GxlError           malformed: framing, checksum, grammar, or a value out of range
        └── GxlDeviceError the line is well formed: the logger answered ERR; ``reason``
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_READ_COUNT",
    "MAX_TEXT_BYTES",
    "GxlDeviceError",
    "GxlError",
    "LoggerIdentity",
    "LoggerRecord",
    "decode_line",
    "encode_line",
    "format_clock",
    "format_end",
    "format_error",
    "format_identity",
    "format_live",
    "format_record",
    "parse_clock",
    "parse_end",
    "parse_identity",
    "parse_live",
    "parse_record",
    "parse_request",
    "request_clock",
    "request_identity",
    "request_live",
    "request_records",
]

MAX_LINE_BYTES = 512
MAX_READ_COUNT = 1000
_TRAILER_BYTES = len("*CCCCCCCC\r\n")
MAX_TEXT_BYTES = MAX_LINE_BYTES - _TRAILER_BYTES

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_VALUE = re.compile(r"[!-~]+")  # printable ASCII, no space
_UNIT = re.compile(r"[!-+\--~]+")  # printable ASCII, no space, no ','
_PRINTABLE = re.compile(r"[ -~]*")
_CHECKSUM = re.compile(r"[0-9A-F]{8}")
_INTEGER = re.compile(r"[0-9]+")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?Z"
)
# Requests and how many positional tokens each takes.
_REQUESTS = {"ID": 0, "CLK": 0, "LIVE": 0, "READ": 2}


class GxlError(ValueError):
    """A malformed GXL/1 line, or a value that cannot be written as one; the message says why."""


class GxlDeviceError(GxlError):
    """The logger answered ``ERR <reason>`` instead of what was asked for."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"the logger answered ERR: {reason}" if reason else "the logger answered ERR"
        )
        self.reason = reason


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class LoggerIdentity:
    """A logger's ``ID`` answer. ``points`` maps point name to UCUM unit, in declared order.

    ``points`` is stored as a read-only mapping, so the instance is frozen all the way down;
    it compares by value but is not hashable.
    """

    model: str
    serial: str
    firmware: str
    interval_secs: int
    first: int
    last: int
    points: Mapping[str, str]

    def __post_init__(self) -> None:
        for what, value in (
            ("model", self.model),
            ("serial", self.serial),
            ("firmware", self.firmware),
        ):
            _check_token_value(what, value)
        _check_int("interval_secs", self.interval_secs, 1)
        _check_int("first", self.first, 1)
        _check_int("last", self.last, 0)
        if self.last < self.first - 1:
            raise GxlError(f"last={self.last} is below first={self.first} - 1")
        if not self.points:
            raise GxlError("a logger declares at least one point")
        for name, unit in self.points.items():
            _check_name("point name", name)
            if not isinstance(unit, str) or not _UNIT.fullmatch(unit):
                raise GxlError(
                    f"unit {unit!r} of point {name!r} is not printable ASCII without space or ','"
                )
        object.__setattr__(self, "points", MappingProxyType(dict(self.points)))


@dataclass(frozen=True)
class LoggerRecord:
    """One measurement: a stored record (``index`` set) or a LIVE one (``index`` None).

    ``at`` is the logger's timestamp, timezone-aware (parsed ones are UTC). ``values`` maps point
    name to value, None where the sensor reported ERR; it is stored read-only, in line order.
    """

    index: int | None
    at: datetime
    values: Mapping[str, float | None]

    def __post_init__(self) -> None:
        if self.index is not None:
            _check_int("index", self.index, 1)
        if not isinstance(self.at, datetime) or self.at.utcoffset() is None:
            raise GxlError(f"record time must be a timezone-aware datetime, got {self.at!r}")
        values: dict[str, float | None] = {}
        for name, value in self.values.items():
            _check_name("point name", name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise GxlError(f"value of {name!r} must be a number or None, got {value!r}")
                value = float(value)
                if not math.isfinite(value):
                    raise GxlError(f"value of {name!r} must be finite, got {value}")
            values[name] = value
        object.__setattr__(self, "values", MappingProxyType(values))


# --------------------------------------------------------------------------- framing


def encode_line(text: str) -> bytes:
    """Frame ``text`` as a line: ``TEXT*CCCCCCCC`` and CR LF."""
    if not text:
        raise GxlError("a line needs some text")
    if not _PRINTABLE.fullmatch(text):
        raise GxlError(f"line text must be printable ASCII: {_show(text)}")
    if len(text) > MAX_TEXT_BYTES:
        raise GxlError(
            f"line text is {len(text)} characters; with its checksum and CR LF a line is at "
            f"most {MAX_LINE_BYTES} bytes, which leaves {MAX_TEXT_BYTES}"
        )
    raw = text.encode("ascii")
    return b"%s*%08X\r\n" % (raw, zlib.crc32(raw))


def decode_line(raw: bytes) -> str:
    """Check one received line (CR LF included) and return its TEXT."""
    if not raw:
        raise GxlError("no line: nothing was received")
    if len(raw) > MAX_LINE_BYTES:
        raise GxlError(f"line is {len(raw)} bytes, over the {MAX_LINE_BYTES}-byte limit")
    if not raw.endswith(b"\r\n"):
        raise GxlError(f"line does not end with CR LF: {_show(raw)}")
    body = raw[:-2]
    if not body:
        raise GxlError("empty line")
    for position, byte in enumerate(body):
        if not 0x20 <= byte <= 0x7E:
            raise GxlError(
                f"byte 0x{byte:02X} at position {position} is not printable ASCII: {_show(raw)}"
            )
    line = body.decode("ascii")
    text, star, checksum = line.rpartition("*")
    if not star:
        raise GxlError(f"line has no '*' before a checksum: {_show(raw)}")
    if not _CHECKSUM.fullmatch(checksum):
        raise GxlError(f"checksum {checksum!r} is not 8 upper-case hex digits: {_show(raw)}")
    if not text:
        raise GxlError(f"line has a checksum but no text: {_show(raw)}")
    actual = zlib.crc32(text.encode("ascii"))
    if int(checksum, 16) != actual:
        raise GxlError(
            f"checksum mismatch: the line says {checksum}, its text gives {actual:08X}: "
            f"{_show(raw)}"
        )
    return text


# --------------------------------------------------------------------------- gateway side


def request_identity() -> bytes:
    return encode_line("ID")


def request_clock() -> bytes:
    return encode_line("CLK")


def request_live() -> bytes:
    return encode_line("LIVE")


def request_records(start: int, count: int) -> bytes:
    """``READ start count``: up to ``count`` (1-1000) records from index ``start`` (>= 1)."""
    _check_read(start, count)
    return encode_line(f"READ {start} {count}")


def parse_identity(text: str) -> LoggerIdentity:
    _, keys = _answer(text, "ID", 0)
    missing = [
        k for k in ("model", "serial", "fw", "interval", "first", "last", "points") if k not in keys
    ]
    if missing:
        raise GxlError(f"ID answer lacks {', '.join(missing)}: {_show(text)}")
    points: dict[str, str] = {}
    for pair in keys["points"].split(","):
        name, colon, unit = pair.partition(":")
        if not colon or not unit:
            raise GxlError(f"point {pair!r} is not <name>:<unit>: {_show(text)}")
        _check_name("point name", name)
        if name in points:
            raise GxlError(f"point {name!r} is declared twice: {_show(text)}")
        points[name] = unit
    return LoggerIdentity(
        model=keys["model"],
        serial=keys["serial"],
        firmware=keys["fw"],
        interval_secs=_parse_int("interval", keys["interval"]),
        first=_parse_int("first", keys["first"]),
        last=_parse_int("last", keys["last"]),
        points=points,
    )


def parse_clock(text: str) -> datetime:
    (at,), _ = _answer(text, "CLK", 1)
    return _parse_time(at)


def parse_live(text: str, *, points: Collection[str] | None = None) -> LoggerRecord:
    """A LIVE answer. With ``points`` (the declared names), other keys are ignored and every
    declared point must be present."""
    (at,), keys = _answer(text, "LIVE", 1)
    return LoggerRecord(None, _parse_time(at), _readings(keys, points, text))


def parse_record(text: str, *, points: Collection[str] | None = None) -> LoggerRecord:
    """A REC line of a READ answer; ``points`` as for :func:`parse_live`."""
    (index, at), keys = _answer(text, "REC", 2)
    return LoggerRecord(_parse_int("index", index), _parse_time(at), _readings(keys, points, text))


def parse_end(text: str) -> int:
    """The END line closing a READ answer: the number of REC lines sent."""
    (count,), _ = _answer(text, "END", 1)
    n = _parse_int("END count", count)
    if n > MAX_READ_COUNT:
        raise GxlError(f"END {n} is over the {MAX_READ_COUNT} records a READ may return")
    return n


# --------------------------------------------------------------------------- logger side


def parse_request(text: str) -> tuple[str, tuple[int, ...]]:
    """A request's command and integer arguments: ``("READ", (5, 100))``, ``("ID", ())``."""
    command, positional, _ = _split(text)
    arity = _REQUESTS.get(command)
    if arity is None:
        raise GxlError(f"unknown command {command!r}; expected one of {', '.join(_REQUESTS)}")
    if len(positional) != arity:
        raise GxlError(f"{command} takes {arity} arguments, got {len(positional)}")
    args = tuple(_parse_int(f"{command} argument", token) for token in positional)
    if command == "READ":
        _check_read(*args)
    return command, args


def format_identity(identity: LoggerIdentity) -> str:
    points = ",".join(f"{name}:{unit}" for name, unit in identity.points.items())
    return (
        f"ID model={identity.model} serial={identity.serial} fw={identity.firmware} "
        f"interval={identity.interval_secs} first={identity.first} last={identity.last} "
        f"points={points}"
    )


def format_clock(at: datetime) -> str:
    return f"CLK {_format_time(at)}"


def format_live(record: LoggerRecord) -> str:
    if record.index is not None:
        raise GxlError(f"a LIVE measurement has no index, got {record.index}")
    return _join("LIVE", _format_time(record.at), record)


def format_record(record: LoggerRecord) -> str:
    if record.index is None:
        raise GxlError("a REC line needs the record's index")
    return _join(f"REC {record.index}", _format_time(record.at), record)


def format_end(n: int) -> str:
    _check_int("END count", n, 0)
    if n > MAX_READ_COUNT:
        raise GxlError(f"END {n} is over the {MAX_READ_COUNT} records a READ may return")
    return f"END {n}"


def format_error(reason: str) -> str:
    """``ERR <reason>``, the reason made printable ASCII (others become '?') and cut to fit."""
    cleaned = "".join(c if " " <= c <= "~" else "?" for c in reason)
    text = f"ERR {cleaned}" if cleaned else "ERR"
    if len(text) > MAX_TEXT_BYTES:
        text = text[: MAX_TEXT_BYTES - 3] + "..."
    return text


# --------------------------------------------------------------------------- internals


def _split(text: str) -> tuple[str, list[str], dict[str, str]]:
    """Command, positional tokens and ``key=value`` tokens of a line's TEXT."""
    if not _PRINTABLE.fullmatch(text):
        raise GxlError(f"line text must be printable ASCII: {_show(text)}")
    tokens = text.split(" ")
    if "" in tokens:
        raise GxlError(f"tokens must be separated by single spaces: {_show(text)}")
    positional: list[str] = []
    keys: dict[str, str] = {}
    for token in tokens[1:]:
        key, equals, value = token.partition("=")
        if not equals:
            if keys:
                raise GxlError(f"token {token!r} follows key=value tokens: {_show(text)}")
            positional.append(token)
            continue
        if not _NAME.fullmatch(key):
            raise GxlError(f"key {key!r} is not a name: {_show(text)}")
        if not value:
            raise GxlError(f"key {key!r} has an empty value: {_show(text)}")
        if key in keys:
            raise GxlError(f"key {key!r} appears twice: {_show(text)}")
        keys[key] = value
    return tokens[0], positional, keys


def _answer(text: str, command: str, arity: int) -> tuple[list[str], dict[str, str]]:
    """The positional and keyed tokens of an answer that must be ``command``; ERR raises."""
    if (text == "ERR" or text.startswith("ERR ")) and _PRINTABLE.fullmatch(text):
        raise GxlDeviceError(text[4:])
    found, positional, keys = _split(text)
    if found != command:
        raise GxlError(f"expected {command}, got {_show(text)}")
    if len(positional) != arity:
        raise GxlError(
            f"{command} has {arity} positional tokens before its keys, got "
            f"{len(positional)}: {_show(text)}"
        )
    return positional, keys


def _readings(
    keys: dict[str, str], points: Collection[str] | None, text: str
) -> dict[str, float | None]:
    if points is None:
        return {name: _parse_reading(name, value) for name, value in keys.items()}
    missing = [name for name in points if name not in keys]
    if missing:
        raise GxlError(f"no reading for declared point(s) {', '.join(missing)}: {_show(text)}")
    return {name: _parse_reading(name, keys[name]) for name in points}


def _parse_reading(name: str, token: str) -> float | None:
    if token == "ERR":
        return None
    if not _NUMBER.fullmatch(token):
        raise GxlError(f"reading {name}={token} is neither a decimal number nor ERR")
    value = float(token)
    if not math.isfinite(value):
        raise GxlError(f"reading {name}={_show(token)} is out of range of a double")
    return value


def _format_reading(value: float | None) -> str:
    if value is None:
        return "ERR"
    # repr is the shortest string that reads back as the same double; Decimal turns its
    # exponent form (1e-07, 1e+16) into plain digits without changing the value.
    return format(Decimal(repr(value)), "f")


def _join(head: str, at: str, record: LoggerRecord) -> str:
    readings = " ".join(f"{name}={_format_reading(v)}" for name, v in record.values.items())
    return f"{head} {at} {readings}" if readings else f"{head} {at}"


def _parse_time(token: str) -> datetime:
    match = _TIME.fullmatch(token)
    if match is None:
        raise GxlError(f"time {_show(token)} is not RFC 3339 UTC like 2026-11-22T10:00:00Z")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    if second == 60:
        raise GxlError(f"time {token} is a leap second, which GXL/1 does not carry")
    fraction = (match.group(7) or "")[:6].ljust(6, "0")
    try:
        return datetime(year, month, day, hour, minute, second, int(fraction), tzinfo=UTC)
    except ValueError as exc:
        raise GxlError(f"time {token} is not a real date and time: {exc}") from None


def _format_time(at: datetime) -> str:
    if at.utcoffset() is None:
        raise GxlError(f"time must be timezone-aware, got {at!r}")
    at = at.astimezone(UTC)
    text = (
        f"{at.year:04d}-{at.month:02d}-{at.day:02d}T{at.hour:02d}:{at.minute:02d}:{at.second:02d}"
    )
    if at.microsecond:
        text += f".{at.microsecond:06d}".rstrip("0")
    return text + "Z"


def _parse_int(what: str, token: str) -> int:
    if not _INTEGER.fullmatch(token):
        raise GxlError(f"{what} {_show(token)} is not an unsigned decimal integer")
    return int(token)


def _check_int(what: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GxlError(f"{what} must be an integer, got {value!r}")
    if value < minimum:
        raise GxlError(f"{what} must be at least {minimum}, got {value}")


def _check_read(start: int, count: int) -> None:
    _check_int("READ from", start, 1)
    _check_int("READ count", count, 1)
    if count > MAX_READ_COUNT:
        raise GxlError(f"READ count must be 1-{MAX_READ_COUNT}, got {count}")


def _check_name(what: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise GxlError(
            f"{what} {name!r} is not a letter followed by up to 63 letters, digits, '_', '-', '.'"
        )


def _check_token_value(what: str, value: str) -> None:
    if not isinstance(value, str) or not _VALUE.fullmatch(value):
        raise GxlError(f"{what} {value!r} must be printable ASCII without spaces, not empty")


def _show(line: str | bytes) -> str:
    """A line for an error message: repr, cut to a readable length."""
    return repr(line) if len(line) <= 80 else f"{line[:77]!r}..."
