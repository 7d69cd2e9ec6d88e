"""The GXL/1 logger simulator, exercised over its real pty with pyserial.

pyserial blocks, so every exchange runs in a worker thread (``asyncio.to_thread``) while the
event loop answers. A fake clock makes time move only when a test says so: an hour of records is
``clock.now += 3600``, and with ``drift=False`` every value is exact. Expected checksums and
requests come from the codec, which ``test_gxl.py`` checks on its own.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import serial

from gxpgate.drivers.gxl import (
    MAX_READ_COUNT,
    GxlDeviceError,
    GxlError,
    LoggerIdentity,
    LoggerRecord,
    decode_line,
    encode_line,
    parse_clock,
    parse_end,
    parse_identity,
    parse_live,
    parse_record,
    request_clock,
    request_identity,
    request_live,
    request_records,
)
from gxpgate.simulators.logger_sim import LoggerSimulator, run_forever

TIMEOUT_SECS = 2.0
SILENCE_TIMEOUT_SECS = 0.3
T0 = 1_795_000_000.0  # 2026-11-19T...Z, a whole second
POINTS = ("temperature", "humidity")


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run one async test body; fail if it leaves a task behind."""

    async def main() -> None:
        await test()
        leftover = asyncio.all_tasks() - {asyncio.current_task()}
        assert not leftover, f"tasks left behind: {leftover}"

    asyncio.run(main())


def utc(epoch_secs: float) -> datetime:
    return datetime.fromtimestamp(epoch_secs, UTC)


class Port:
    """The gateway's end: a pyserial port on the device path, used from worker threads."""

    def __init__(self, port: serial.Serial) -> None:
        self.serial = port

    async def exchange(self, request: bytes, lines: int = 1) -> list[bytes]:
        """Send ``request`` and read ``lines`` raw lines (an empty one on timeout)."""

        def io() -> list[bytes]:
            self.serial.write(request)
            return [self.serial.read_until(b"\n") for _ in range(lines)]

        return await asyncio.to_thread(io)

    async def ask(self, request: bytes) -> str:
        """Send ``request`` and return the decoded text of its one-line answer."""
        (raw,) = await self.exchange(request)
        return decode_line(raw)

    async def read(self, start: int, count: int) -> tuple[list[LoggerRecord], int]:
        """``READ start count``: the records and END's count."""

        def io() -> list[bytes]:
            self.serial.write(request_records(start, count))
            lines: list[bytes] = []
            while not lines or not lines[-1].startswith((b"END", b"ERR")):
                raw = self.serial.read_until(b"\n")
                assert raw, f"timed out after {len(lines)} lines"
                lines.append(raw)
            return lines

        *recs, end = [decode_line(raw) for raw in await asyncio.to_thread(io)]
        return [parse_record(text, points=POINTS) for text in recs], parse_end(end)


@asynccontextmanager
async def connect(sim: LoggerSimulator, timeout_secs: float = TIMEOUT_SECS) -> AsyncIterator[Port]:
    port = await asyncio.to_thread(serial.Serial, sim.device_path, timeout=timeout_secs)
    try:
        yield Port(port)
    finally:
        port.close()


def make(clock: FakeClock, **options: Any) -> LoggerSimulator:
    options.setdefault("drift", False)
    return LoggerSimulator(clock=clock, **options)


# --------------------------------------------------------------------------- the four requests


def test_identity_clock_and_live() -> None:
    async def body() -> None:
        clock = FakeClock()
        sim = make(clock, serial="L0042", model="GXL-T2", firmware="3.4.5", interval_secs=300)
        async with sim, connect(sim) as port:
            identity = parse_identity(await port.ask(request_identity()))
            assert identity == LoggerIdentity(
                "GXL-T2", "L0042", "3.4.5", 300, 1, 0, {"temperature": "Cel", "humidity": "%"}
            )
            assert parse_clock(await port.ask(request_clock())) == utc(T0)
            clock.now += 12.5
            assert parse_clock(await port.ask(request_clock())) == utc(T0 + 12.5)
            live = parse_live(await port.ask(request_live()), points=POINTS)
            assert live == LoggerRecord(
                None, utc(T0 + 12.5), {"temperature": 5.0, "humidity": 45.0}
            )
            assert sim.requests_served == 4

    run(body)


def test_an_hour_of_records() -> None:
    async def body() -> None:
        clock = FakeClock()
        async with make(clock, drift=True) as sim, connect(sim) as port:
            clock.now += 3600  # a simulated hour: 60 records, taken at the next request
            identity = parse_identity(await port.ask(request_identity()))
            assert (identity.first, identity.last) == (1, 60)
            records, n = await port.read(1, MAX_READ_COUNT)
            assert n == 60
            assert [r.index for r in records] == list(range(1, 61))
            assert [r.at for r in records] == [utc(T0 + 60 * i) for i in range(1, 61)]
            assert records == [sim.record(i) for i in range(1, 61)]
            for record in records:
                temperature, humidity = record.values["temperature"], record.values["humidity"]
                assert temperature is not None
                assert humidity is not None
                assert abs(temperature - 5.0) <= 0.3 + 0.005  # drift bound, 0.01 resolution
                assert abs(humidity - 45.0) <= 1.5 + 0.005
                assert temperature == round(temperature, 2)
            assert len({r.values["temperature"] for r in records}) > 1  # it does drift

            records, n = await port.read(58, 10)
            assert ([r.index for r in records], n) == ([58, 59, 60], 3)
            assert await port.read(61, 5) == ([], 0)

    run(body)


def test_started_at_in_the_past_gives_stored_records_at_once() -> None:
    async def body() -> None:
        clock = FakeClock()
        async with make(clock, started_at=T0 - 3600, interval_secs=10) as sim, connect(sim) as port:
            identity = parse_identity(await port.ask(request_identity()))
            assert (identity.first, identity.last) == (1, 360)
            records, n = await port.read(355, 1000)
            assert n == 6
            assert records[-1].at == utc(T0)

    run(body)


def test_same_seed_same_history() -> None:
    clock = FakeClock()
    a = LoggerSimulator(clock=clock, started_at=T0 - 86400, seed=7)
    b = LoggerSimulator(clock=clock, started_at=T0 - 86400, seed=7)
    c = LoggerSimulator(clock=clock, started_at=T0 - 86400, seed=8)
    assert [a.record(i) for i in range(1, 1441)] == [b.record(i) for i in range(1, 1441)]
    assert [a.record(i) for i in range(1, 1441)] != [c.record(i) for i in range(1, 1441)]


# --------------------------------------------------------------------------- clock and memory


def test_clock_offset_stamps_clock_live_and_records() -> None:
    async def body() -> None:
        clock = FakeClock()
        async with make(clock, clock_offset_secs=-90.25) as sim, connect(sim) as port:
            assert parse_clock(await port.ask(request_clock())) == utc(T0 - 90.25)
            clock.now += 120
            assert parse_live(await port.ask(request_live())).at == utc(T0 + 120 - 90.25)
            sim.set_clock_offset(3600)  # someone sets the logger's clock an hour ahead
            clock.now += 60
            assert parse_clock(await port.ask(request_clock())) == utc(T0 + 180 + 3600)
            records, _ = await port.read(1, 10)
            assert [r.at for r in records] == [
                utc(T0 + 60 - 90.25),
                utc(T0 + 120 - 90.25),  # taken before the clock was set
                utc(T0 + 180 + 3600),
            ]

    run(body)


def test_full_memory_overwrites_the_oldest() -> None:
    async def body() -> None:
        clock = FakeClock()
        async with make(clock, capacity=10) as sim, connect(sim) as port:
            clock.now += 25 * 60
            identity = parse_identity(await port.ask(request_identity()))
            assert (identity.first, identity.last) == (16, 25)
            records, n = await port.read(1, 5)  # from below first: starts at first
            assert ([r.index for r in records], n) == ([16, 17, 18, 19, 20], 5)
            assert records[0].at == utc(T0 + 16 * 60)
            clock.now += 3 * 60
            records, n = await port.read(20, 100)
            assert [r.index for r in records] == list(range(20, 29))
            with pytest.raises(IndexError, match="record 18 is not held: first=19 last=28"):
                sim.record(18)

    run(body)


def test_a_thousand_records_in_one_read() -> None:
    # About 60 kB: more than the pty buffer holds, so the simulator has to wait for the reader.
    async def body() -> None:
        clock = FakeClock()
        async with make(clock, started_at=T0 - 1500 * 60) as sim, connect(sim) as port:
            records, n = await port.read(101, 1000)
            assert n == 1000
            assert [r.index for r in records] == list(range(101, 1101))
            assert parse_identity(await port.ask(request_identity())).last == 1500

    run(body)


def test_port_can_be_closed_and_reopened() -> None:
    async def body() -> None:
        async with make(FakeClock()) as sim:
            for _ in range(3):
                async with connect(sim) as port:
                    assert parse_identity(await port.ask(request_identity())).serial == "L0001"

    run(body)


# --------------------------------------------------------------------------- scripting


def test_scripted_values_apply_from_the_moment_they_are_set() -> None:
    async def body() -> None:
        clock = FakeClock()
        async with make(clock) as sim, connect(sim) as port:
            clock.now += 60
            sim.set_value("temperature", 8.123)
            clock.now += 60
            sim.excursion("humidity", 90.0, 90)
            clock.now += 60
            live = parse_live(await port.ask(request_live()))
            assert live.values == {"temperature": 8.12, "humidity": 90.0}
            clock.now += 60  # the excursion is over
            live = parse_live(await port.ask(request_live()))
            assert live.values == {"temperature": 8.12, "humidity": 45.0}
            records, _ = await port.read(1, 10)
            assert [r.values for r in records] == [
                {"temperature": 5.0, "humidity": 45.0},  # taken before set_value
                {"temperature": 8.12, "humidity": 45.0},  # taken as the excursion began
                {"temperature": 8.12, "humidity": 90.0},
                {"temperature": 8.12, "humidity": 45.0},
            ]
            with pytest.raises(ValueError, match="no point 'door_open'"):
                sim.set_value("door_open", 1)

    run(body)


def test_sensor_fault_reads_err() -> None:
    async def body() -> None:
        clock = FakeClock()
        async with make(clock) as sim, connect(sim) as port:
            sim.sensor_fault("humidity")
            assert "humidity=ERR" in await port.ask(request_live())
            clock.now += 120
            sim.sensor_fault("humidity", on=False)
            clock.now += 60
            records, _ = await port.read(1, 3)
            assert [r.values["humidity"] for r in records] == [None, None, 45.0]
            assert parse_live(await port.ask(request_live())).values["humidity"] == 45.0

    run(body)


def test_swap_puts_another_logger_with_empty_memory_on_the_line() -> None:
    async def body() -> None:
        clock = FakeClock()
        async with make(clock) as sim, connect(sim) as port:
            clock.now += 600
            sim.sensor_fault("temperature")
            sim.swap("L0002", interval_secs=30, clock_offset_secs=5)
            identity = parse_identity(await port.ask(request_identity()))
            assert (identity.serial, identity.interval_secs) == ("L0002", 30)
            assert (identity.first, identity.last) == (1, 0)
            clock.now += 60
            records, _ = await port.read(1, 10)
            assert [(r.index, r.at) for r in records] == [
                (1, utc(T0 + 630 + 5)),
                (2, utc(T0 + 660 + 5)),
            ]
            assert records[0].values["temperature"] == 5.0  # a fresh sensor

    run(body)


# --------------------------------------------------------------------------- faults


def test_silence_until_resumed_and_for_some_seconds() -> None:
    async def body() -> None:
        clock = FakeClock()
        async with make(clock) as sim, connect(sim, SILENCE_TIMEOUT_SECS) as port:
            sim.go_silent()
            assert await port.exchange(request_identity()) == [b""]
            assert (sim.requests_ignored, sim.requests_served) == (1, 0)
            sim.resume()
            assert parse_identity(await port.ask(request_identity())).serial == "L0001"

            sim.go_silent(30)
            clock.now += 29
            assert await port.exchange(request_clock()) == [b""]
            clock.now += 1
            assert parse_clock(await port.ask(request_clock())) == utc(T0 + 30)
            assert (sim.requests_ignored, sim.requests_served) == (2, 2)

    run(body)


def test_garbage_replaces_answer_lines_and_framing_survives() -> None:
    async def body() -> None:
        clock = FakeClock()
        async with make(clock) as sim, connect(sim) as port:
            sim.garbage(1)
            (raw,) = await port.exchange(request_identity())
            assert raw.endswith(b"\r\n")
            assert raw[0] >= 0x80
            with pytest.raises(GxlError, match="not printable ASCII"):
                decode_line(raw)
            assert parse_identity(await port.ask(request_identity())).serial == "L0001"

            clock.now += 180
            sim.garbage(2)
            lines = await port.exchange(request_records(1, 3), lines=4)
            for raw in lines[:2]:
                with pytest.raises(GxlError):
                    decode_line(raw)
            assert parse_record(decode_line(lines[2])).index == 3
            assert parse_end(decode_line(lines[3])) == 3

    run(body)


def test_bad_checksum_keeps_the_text_and_breaks_the_crc() -> None:
    async def body() -> None:
        clock = FakeClock()
        async with make(clock) as sim, connect(sim) as port:
            sim.bad_checksum(1)
            (raw,) = await port.exchange(request_clock())
            assert raw.startswith(b"CLK ")
            with pytest.raises(GxlError, match="checksum mismatch"):
                decode_line(raw)
            assert parse_clock(await port.ask(request_clock())) == utc(T0)

    run(body)


@pytest.mark.parametrize(
    ("request_line", "reason"),
    [
        (b"ID*00000000\r\n", "checksum mismatch"),
        (b"ID\n", "does not end with CR LF"),
        (encode_line("FOO"), "unknown command 'FOO'"),
        (encode_line("READ 0 5"), "READ from must be at least 1"),
        (encode_line("READ 1 5000"), "READ count must be 1-1000"),
        (b"\xff" * 600 + b"\r\n", "over the 512-byte limit"),
    ],
)
def test_malformed_requests_get_err(request_line: bytes, reason: str) -> None:
    async def body() -> None:
        async with make(FakeClock()) as sim, connect(sim) as port:
            with pytest.raises(GxlDeviceError, match=reason):
                parse_identity(await port.ask(request_line))
            assert parse_identity(await port.ask(request_identity())).serial == "L0001"

    run(body)


def test_bare_line_ends_are_skipped_and_long_lines_answered_once() -> None:
    async def body() -> None:
        async with make(FakeClock()) as sim, connect(sim) as port:
            text = await port.ask(b"\r\n\r\n" + request_identity())
            assert parse_identity(text).serial == "L0001"
            # No line end yet: the logger answers as soon as the line is too long ...
            with pytest.raises(GxlDeviceError, match="over the 512-byte limit"):
                parse_clock(await port.ask(b"x" * 3000))
            # ... and drops the rest of it, up to its LF, without a second ERR.
            text = await port.ask(b"y" * 3000 + b"\r\n" + request_clock())
            assert parse_clock(text) == utc(T0)
            assert sim.requests_served == 3

    run(body)


# --------------------------------------------------------------------------- set-up


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"points": ("pressure",)}, "unknown point 'pressure'"),
        ({"points": ()}, "at least one point"),
        ({"points": ("humidity", "humidity")}, "duplicate points"),
        ({"capacity": 0}, "capacity must be at least 1"),
        ({"serial": "L 1"}, "serial 'L 1'"),
        ({"interval_secs": 0}, "interval_secs must be at least 1"),
        ({"clock_offset_secs": math.nan}, "must be finite"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoggerSimulator(**options)


def test_device_path_only_while_running() -> None:
    async def body() -> None:
        sim = make(FakeClock())
        with pytest.raises(RuntimeError, match="not running"):
            _ = sim.device_path
        async with sim:
            assert sim.device_path.startswith("/dev/")
            with pytest.raises(RuntimeError, match="already running"):
                await sim.__aenter__()
        with pytest.raises(RuntimeError, match="not running"):
            _ = sim.device_path

    run(body)


def test_run_forever_prints_the_device_path() -> None:
    async def body() -> None:
        printed: list[str] = []
        ready = asyncio.Event()

        def print_fn(text: str) -> None:
            printed.append(text)
            if "device path" in text:
                ready.set()

        task = asyncio.create_task(run_forever(print_fn, serial="L0009", clock=FakeClock()))
        await asyncio.wait_for(ready.wait(), TIMEOUT_SECS)
        path = next(line for line in printed if "device path" in line).split()[2]
        port = await asyncio.to_thread(serial.Serial, path, timeout=TIMEOUT_SECS)
        try:
            assert parse_identity(await Port(port).ask(request_identity())).serial == "L0009"
        finally:
            port.close()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(body)
