"""The GXL/1 codec: hand-checked lines, round trips, and every malformed line rejected.

Expected checksums are computed here with ``zlib`` (or are the published CRC-32 check value),
never with the codec's own encoder.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gxpgate.drivers.gxl import (
    MAX_LINE_BYTES,
    GxlDeviceError,
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
    parse_clock,
    parse_end,
    parse_identity,
    parse_live,
    parse_record,
    parse_request,
    request_clock,
    request_identity,
    request_live,
    request_records,
)

AT = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
IDENTITY = LoggerIdentity(
    model="GXL-100",
    serial="L0001",
    firmware="2.1",
    interval_secs=60,
    first=1,
    last=0,
    points={"temperature": "Cel", "humidity": "%"},
)


def line(text: str) -> bytes:
    """A correctly framed line, checksum computed here with zlib."""
    return f"{text}*{zlib.crc32(text.encode('ascii')):08X}\r\n".encode("ascii")


# --------------------------------------------------------------------------- framing


def test_crc32_check_value() -> None:
    # The published check value of CRC-32/ISO-HDLC: crc("123456789") = CBF43926.
    assert decode_line(b"123456789*CBF43926\r\n") == "123456789"
    assert encode_line("123456789") == b"123456789*CBF43926\r\n"


def test_requests_are_framed_with_zlib_crc32() -> None:
    crc = zlib.crc32(b"READ 5 100")
    assert request_records(5, 100) == b"READ 5 100*" + b"%08X" % crc + b"\r\n"
    assert request_identity() == line("ID")
    assert request_clock() == line("CLK")
    assert request_live() == line("LIVE")


def test_text_may_contain_star_the_checksum_follows_the_last() -> None:
    text = "ID model=X serial=S fw=1 interval=1 first=1 last=0 points=n:10*3"
    assert decode_line(line(text)) == text
    assert parse_identity(decode_line(line(text))).points == {"n": "10*3"}


def test_longest_line_fits_and_one_more_byte_does_not() -> None:
    text = "ERR " + "x" * (MAX_LINE_BYTES - 11 - 4)
    raw = encode_line(text)
    assert len(raw) == MAX_LINE_BYTES
    assert decode_line(raw) == text
    with pytest.raises(GxlError, match="at most 512 bytes"):
        encode_line(text + "x")
    with pytest.raises(GxlError, match="513 bytes, over the 512-byte limit"):
        decode_line(line(text + "x"))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "nothing was received"),
        (b"ID*3A63D3117\r\n", "not 8 upper-case hex digits"),
        (b"ID*11D3633A", "does not end with CR LF"),
        (b"ID*11D3633A\n", "does not end with CR LF"),
        (b"ID*11D3633A\r", "does not end with CR LF"),
        (b"\r\n", "empty line"),
        (b"ID\r\n", "no '*' before a checksum"),
        (b"*00000000\r\n", "checksum but no text"),
        (b"ID*11d3633a\r\n", "not 8 upper-case hex digits"),
        (b"ID*11D3633\r\n", "not 8 upper-case hex digits"),
        (b"ID*00000000\r\n", "checksum mismatch: the line says 00000000, its text gives"),
        (b"I\xc3\x89*00000000\r\n", "byte 0xC3 at position 1 is not printable ASCII"),
        (b"ID\tX*00000000\r\n", "byte 0x09 at position 2"),
        (b"ID\rX*00000000\r\n", "byte 0x0D at position 2"),
        (b"x" * 600 + b"\r\n", "602 bytes, over the 512-byte limit"),
    ],
)
def test_decode_rejects_malformed_lines(raw: bytes, message: str) -> None:
    with pytest.raises(GxlError, match=re.escape(message)):
        decode_line(raw)


def test_sample_checksum_in_the_table_above_is_right() -> None:
    # The malformed cases above are wrong only in what they mean to test.
    assert f"{zlib.crc32(b'ID'):08X}" == "11D3633A"


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "needs some text"), ("caf\xe9", "printable ASCII"), ("a\r\nb", "printable ASCII")],
)
def test_encode_rejects_bad_text(text: str, message: str) -> None:
    with pytest.raises(GxlError, match=message):
        encode_line(text)


@given(
    text=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=80),
    data=st.data(),
)
def test_any_single_byte_change_is_detected(text: str, data: st.DataObject) -> None:
    raw = bytearray(encode_line(text))
    position = data.draw(st.integers(0, len(raw) - 1), label="position")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != raw[position]), label="byte")
    raw[position] = byte
    with pytest.raises(GxlError):
        decode_line(bytes(raw))


# --------------------------------------------------------------------------- answers, by hand


def test_identity_line() -> None:
    text = format_identity(IDENTITY)
    assert text == (
        "ID model=GXL-100 serial=L0001 fw=2.1 interval=60 first=1 last=0 "
        "points=temperature:Cel,humidity:%"
    )
    assert parse_identity(text) == IDENTITY


def test_identity_keys_in_any_order_and_unknown_keys_ignored() -> None:
    text = (
        "ID points=t:Cel,rh:% batt=87 last=2000 first=1001 fw=3 serial=A-9 "
        "model=M interval=300 x.y=z"
    )
    identity = parse_identity(text)
    assert identity == LoggerIdentity("M", "A-9", "3", 300, 1001, 2000, {"t": "Cel", "rh": "%"})
    assert list(identity.points) == ["t", "rh"]  # declared order is kept


def test_clock_line() -> None:
    assert format_clock(AT) == "CLK 2026-11-22T10:00:00Z"
    assert parse_clock("CLK 2026-11-22T10:00:00Z") == AT
    assert parse_clock("CLK 2026-11-22T10:00:00.25Z") == AT + timedelta(milliseconds=250)
    # Beyond microseconds, digits are dropped (not rounded).
    assert parse_clock("CLK 2026-11-22T10:00:00.123456789Z") == AT.replace(microsecond=123456)
    # Writers convert to UTC and drop trailing zeros of the fraction.
    cet = timezone(timedelta(hours=1))
    at = datetime(2026, 11, 22, 11, 0, 0, 120000, tzinfo=cet)
    assert format_clock(at) == "CLK 2026-11-22T10:00:00.12Z"
    assert parse_clock("CLK 2026-11-22T10:00:00Z future=1") == AT


def test_live_and_record_lines() -> None:
    live = LoggerRecord(None, AT, {"temperature": 4.98, "humidity": None})
    assert format_live(live) == "LIVE 2026-11-22T10:00:00Z temperature=4.98 humidity=ERR"
    assert parse_live("LIVE 2026-11-22T10:00:00Z temperature=4.98 humidity=ERR") == live
    record = LoggerRecord(17, AT, {"temperature": -18.5})
    assert format_record(record) == "REC 17 2026-11-22T10:00:00Z temperature=-18.5"
    assert parse_record("REC 17 2026-11-22T10:00:00Z temperature=-18.5") == record
    assert parse_record("REC 17 2026-11-22T10:00:00Z temperature=-018.50").values == {
        "temperature": -18.5
    }


def test_numbers_are_written_without_exponent() -> None:
    values = {"a": 1e-7, "b": 1e16, "c": 5.0, "d": 0.1 + 0.2, "e": -0.0, "f": 7}
    text = format_live(LoggerRecord(None, AT, values))
    assert text == (
        "LIVE 2026-11-22T10:00:00Z a=0.0000001 b=10000000000000000 c=5.0 "
        "d=0.30000000000000004 e=-0.0 f=7.0"
    )
    assert parse_live(text).values == values


def test_declared_points_filter_unknown_keys_and_must_all_be_present() -> None:
    text = "REC 3 2026-11-22T10:00:00Z flags=x7 temperature=5.1 humidity=44"
    with pytest.raises(GxlError, match=r"reading flags=x7 is neither a decimal number nor ERR"):
        parse_record(text)
    record = parse_record(text, points=["temperature", "humidity"])
    assert record.values == {"temperature": 5.1, "humidity": 44.0}
    with pytest.raises(GxlError, match="no reading for declared point"):
        parse_record(text, points=["temperature", "pressure"])


def test_end_and_error_lines() -> None:
    assert format_end(0) == "END 0"
    assert parse_end("END 1000") == 1000
    assert format_error("unknown command 'X'") == "ERR unknown command 'X'"
    assert format_error("") == "ERR"
    assert format_error("bad\x00byte é") == "ERR bad?byte ?"
    long = format_error("y" * 1000)
    assert len(encode_line(long)) == MAX_LINE_BYTES
    assert long.endswith("...")


@pytest.mark.parametrize(
    "parse", [parse_identity, parse_clock, parse_live, parse_record, parse_end]
)
def test_an_err_answer_raises_device_error_with_the_reason(parse: Callable[[str], object]) -> None:
    with pytest.raises(GxlDeviceError, match="the logger answered ERR: memory busy") as info:
        parse("ERR memory busy")
    assert info.value.reason == "memory busy"
    assert isinstance(info.value, GxlError)
    with pytest.raises(GxlDeviceError) as bare:
        parse("ERR")
    assert bare.value.reason == ""


# --------------------------------------------------------------------------- requests


def test_parse_request() -> None:
    assert parse_request("ID") == ("ID", ())
    assert parse_request("CLK") == ("CLK", ())
    assert parse_request("LIVE") == ("LIVE", ())
    assert parse_request("READ 1 1000") == ("READ", (1, 1000))
    assert parse_request("READ 7 1 window=x") == ("READ", (7, 1))  # unknown keys ignored


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FOO", "unknown command 'FOO'"),
        ("id", "unknown command 'id'"),
        ("ID 1", "ID takes 0 arguments, got 1"),
        ("READ 1", "READ takes 2 arguments, got 1"),
        ("READ 0 10", "READ from must be at least 1, got 0"),
        ("READ 1 0", "READ count must be at least 1, got 0"),
        ("READ 1 1001", "READ count must be 1-1000, got 1001"),
        ("READ -1 10", "is not an unsigned decimal integer"),
        ("READ 1 +5", "is not an unsigned decimal integer"),
        ("READ  1 5", "single spaces"),
        ("READ 1 5 ", "single spaces"),
        (" ID", "single spaces"),
        ("READ 1 5 k=", "key 'k' has an empty value"),
        ("READ 1 5 =v", "key '' is not a name"),
        ("READ 1 5 k=1 k=2", "key 'k' appears twice"),
        ("READ 1 k=1 5", "token '5' follows key=value tokens"),
    ],
)
def test_parse_request_rejects(text: str, message: str) -> None:
    with pytest.raises(GxlError, match=message):
        parse_request(text)


@pytest.mark.parametrize(
    ("start", "count", "message"),
    [(0, 1, "at least 1"), (1, 0, "at least 1"), (1, 1001, "1-1000"), (True, 1, "integer")],
)
def test_request_records_checks_its_arguments(start: int, count: int, message: str) -> None:
    with pytest.raises(GxlError, match=message):
        request_records(start, count)


# --------------------------------------------------------------------------- malformed answers


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("CLK 2026-11-22T10:00:00Z", "expected ID, got"),
        ("ID model=M serial=S fw=1 interval=60 first=1", "ID answer lacks last, points"),
        ("ID model=M serial=S fw=1 interval=0 first=1 last=0 points=t:Cel", "interval_secs must"),
        ("ID model=M serial=S fw=1 interval=60 first=0 last=0 points=t:Cel", "first must"),
        ("ID model=M serial=S fw=1 interval=60 first=5 last=3 points=t:Cel", "below first=5"),
        ("ID model=M serial=S fw=1 interval=6x first=1 last=0 points=t:Cel", "interval '6x'"),
        ("ID model=M serial=S fw=1 interval=60 first=1 last=0 points=t", "not <name>:<unit>"),
        ("ID model=M serial=S fw=1 interval=60 first=1 last=0 points=t:", "not <name>:<unit>"),
        ("ID model=M serial=S fw=1 interval=60 first=1 last=0 points=t:C,t:C", "declared twice"),
        ("ID model=M serial=S fw=1 interval=60 first=1 last=0 points=1t:C", "point name '1t'"),
        ("ID model=M serial=S fw=1 interval=60 first=1 last=0 points=t:C,,", "not <name>:<unit>"),
        ("ID model=M serial=S fw=1 interval=60 first=1 last=0 points=t:C x", "follows key=value"),
    ],
)
def test_parse_identity_rejects(text: str, message: str) -> None:
    with pytest.raises(GxlError, match=message):
        parse_identity(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("CLK", "CLK has 1 positional tokens before its keys, got 0"),
        ("CLK 2026-11-22 10:00:00Z", "CLK has 1 positional tokens"),
        ("CLK 2026-11-22T10:00:00", "not RFC 3339 UTC"),
        ("CLK 2026-11-22T10:00:00+01:00", "not RFC 3339 UTC"),
        ("CLK 2026-11-22t10:00:00z", "not RFC 3339 UTC"),
        ("CLK 2026-11-22T10:00:00.Z", "not RFC 3339 UTC"),
        ("CLK 2026-11-22T10:00:00.1234567890Z", "not RFC 3339 UTC"),
        ("CLK 2026-02-30T10:00:00Z", "not a real date and time"),
        ("CLK 2026-11-22T24:00:00Z", "not a real date and time"),
        ("CLK 2026-12-31T23:59:60Z", "leap second"),
        ("LIVE 2026-11-22T10:00:00Z", "expected CLK, got"),
    ],
)
def test_parse_clock_rejects(text: str, message: str) -> None:
    with pytest.raises(GxlError, match=message):
        parse_clock(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("REC 2026-11-22T10:00:00Z t=1", "REC has 2 positional tokens"),
        ("REC x 2026-11-22T10:00:00Z t=1", "index 'x' is not an unsigned decimal integer"),
        ("REC 0 2026-11-22T10:00:00Z t=1", "index must be at least 1, got 0"),
        ("REC 1 2026-11-22T10:00:00Z t=1e3", "t=1e3 is neither a decimal number nor ERR"),
        ("REC 1 2026-11-22T10:00:00Z t=NaN", "neither a decimal number nor ERR"),
        ("REC 1 2026-11-22T10:00:00Z t=.5", "neither a decimal number nor ERR"),
        ("REC 1 2026-11-22T10:00:00Z t=5.", "neither a decimal number nor ERR"),
        ("REC 1 2026-11-22T10:00:00Z t=+5", "neither a decimal number nor ERR"),
        ("REC 1 2026-11-22T10:00:00Z t=err", "neither a decimal number nor ERR"),
        ("REC 1 2026-11-22T10:00:00Z t=" + "9" * 400, "out of range of a double"),
        ("REC 1 2026-11-22T10:00:00Z t=1 t=2", "key 't' appears twice"),
        ("END 3", "expected REC, got"),
    ],
)
def test_parse_record_rejects(text: str, message: str) -> None:
    with pytest.raises(GxlError, match=message):
        parse_record(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("LIVE 1 2026-11-22T10:00:00Z t=1", "LIVE has 1 positional tokens"),
        ("REC 1 2026-11-22T10:00:00Z t=1", "expected LIVE, got"),
        ("LIVE 2026-11-22T10:00:00Z t=1,5", "neither a decimal number nor ERR"),
    ],
)
def test_parse_live_rejects(text: str, message: str) -> None:
    with pytest.raises(GxlError, match=message):
        parse_live(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("END", "END has 1 positional tokens"),
        ("END -1", "not an unsigned decimal integer"),
        ("END 1001", "over the 1000 records"),
        ("REC 1 2026-11-22T10:00:00Z t=1", "expected END, got"),
    ],
)
def test_parse_end_rejects(text: str, message: str) -> None:
    with pytest.raises(GxlError, match=message):
        parse_end(text)


# --------------------------------------------------------------------------- values we cannot send


def test_values_that_cannot_be_written_are_refused() -> None:
    with pytest.raises(GxlError, match="timezone-aware"):
        LoggerRecord(1, datetime(2026, 11, 22), {"t": 1.0})
    with pytest.raises(GxlError, match="must be finite"):
        LoggerRecord(1, AT, {"t": math.inf})
    with pytest.raises(GxlError, match="a number or None"):
        LoggerRecord(1, AT, {"t": "5"})  # type: ignore[dict-item]
    with pytest.raises(GxlError, match="point name 't=1'"):
        LoggerRecord(1, AT, {"t=1": 1.0})
    with pytest.raises(GxlError, match="LIVE measurement has no index"):
        format_live(LoggerRecord(1, AT, {"t": 1.0}))
    with pytest.raises(GxlError, match="needs the record's index"):
        format_record(LoggerRecord(None, AT, {"t": 1.0}))
    with pytest.raises(GxlError, match="serial 'L 1' must be printable ASCII without spaces"):
        LoggerIdentity("M", "L 1", "1", 60, 1, 0, {"t": "Cel"})
    with pytest.raises(GxlError, match="at least one point"):
        LoggerIdentity("M", "L1", "1", 60, 1, 0, {})
    with pytest.raises(GxlError, match="unit 'a,b'"):
        LoggerIdentity("M", "L1", "1", 60, 1, 0, {"t": "a,b"})
    with pytest.raises(GxlError, match="over the 1000"):
        format_end(1001)


def test_values_are_frozen() -> None:
    values: dict[str, float | None] = {"t": 1.0}
    record = LoggerRecord(1, AT, values)
    values["t"] = 2.0  # the record took a copy
    assert record.values == {"t": 1.0}
    with pytest.raises(TypeError):
        record.values["t"] = 3.0  # type: ignore[index]
    with pytest.raises(TypeError):
        IDENTITY.points["x"] = "Cel"  # type: ignore[index]


# --------------------------------------------------------------------------- round trips

NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,11}", fullmatch=True)
TIMES = st.datetimes(timezones=st.just(UTC))
# Plain decimals of subnormal doubles run to 330 digits, so several to a line need a floor.
MODERATE = st.floats(-1e9, 1e9).filter(lambda v: v == 0 or abs(v) >= 1e-9)
READINGS = st.dictionaries(NAMES, st.none() | MODERATE, max_size=6)


def through_the_wire(text: str) -> str:
    return decode_line(encode_line(text))


@given(index=st.integers(1, 10**15), at=TIMES, values=READINGS)
def test_records_round_trip(index: int, at: datetime, values: dict[str, float | None]) -> None:
    record = LoggerRecord(index, at, values)
    parsed = parse_record(through_the_wire(format_record(record)))
    assert parsed == record
    assert list(parsed.values) == list(values)
    assert parse_record(through_the_wire(format_record(record)), points=list(values)) == record


@given(at=TIMES, values=READINGS)
def test_live_round_trips(at: datetime, values: dict[str, float | None]) -> None:
    record = LoggerRecord(None, at, values)
    assert parse_live(through_the_wire(format_live(record))) == record


@given(value=st.floats(allow_nan=False, allow_infinity=False))
def test_every_finite_double_round_trips_exactly(value: float) -> None:
    record = LoggerRecord(1, AT, {"t": value})
    parsed = parse_record(through_the_wire(format_record(record))).values["t"]
    assert parsed is not None
    assert parsed == value
    assert math.copysign(1.0, parsed) == math.copysign(1.0, value)


@given(at=TIMES)
def test_clock_round_trips(at: datetime) -> None:
    assert parse_clock(through_the_wire(format_clock(at))) == at


TOKEN = st.from_regex(r"[!-~]{1,16}", fullmatch=True)
UNIT = st.from_regex(r"[!-+\--~]{1,8}", fullmatch=True)


@given(
    model=TOKEN,
    serial=TOKEN,
    firmware=TOKEN,
    interval=st.integers(1, 86400),
    first=st.integers(1, 10**12),
    held=st.integers(0, 10**6),
    points=st.dictionaries(NAMES, UNIT, min_size=1, max_size=8),
)
def test_identity_round_trips(
    model: str,
    serial: str,
    firmware: str,
    interval: int,
    first: int,
    held: int,
    points: dict[str, str],
) -> None:
    identity = LoggerIdentity(model, serial, firmware, interval, first, first + held - 1, points)
    assert parse_identity(through_the_wire(format_identity(identity))) == identity


@given(start=st.integers(1, 10**15), count=st.integers(1, 1000))
def test_read_requests_round_trip(start: int, count: int) -> None:
    assert parse_request(decode_line(request_records(start, count))) == ("READ", (start, count))
