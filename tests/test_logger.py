"""Serial data loggers through the agent, over a pseudo-terminal: live values, the clock offset,
and the gap read back from the logger's memory exactly once, across an agent restart."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from gxpgate.simulators.logger_sim import LoggerSimulator

from .running import Running, exported, observe, until, watch_event

INTERVAL = 1  # the logger records every second: an hour is 3600 records


class FakeClock:
    """The logger's wall clock, so that an hour of its memory fills in an instant."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


def _device(path: str, chunk: int = 100) -> str:
    return f"""
[devices.logger-1]
type = "serial_logger"
serial = {{ port = "{path}", baudrate = 9600 }}
zone = "cold-1"
poll_interval_secs = 0.2
timeout_ms = 1000
reconnect_max_secs = 0.3
backfill_chunk_records = {chunk}
points.temperature = {{ unit = "Cel", calibration_offset = -0.2 }}
points.humidity = {{ unit = "%" }}
"""


def _audits(records: list[dict], event: str) -> list[dict]:
    return [r["data"] for r in records if r["kind"] == "audit" and r["data"]["event"] == event]


def _backfilled(records: list[dict]) -> list[dict]:
    return [r for r in records if r["kind"] == "reading" and r["data"].get("backfill")]


def test_an_hour_off_the_line_is_read_back_once_across_a_restart(write_config) -> None:
    clock = FakeClock()

    async def main() -> tuple[Path, LoggerSimulator]:
        sim = LoggerSimulator(
            serial="L0042", clock=clock, started_at=clock.now - 10 * INTERVAL,
            interval_secs=INTERVAL, clock_offset_secs=120.0, drift=False,
        )  # fmt: skip
        async with sim:
            config = write_config(modbus=False, extra_devices=_device(sim.device_path, chunk=2))
            running = Running(config)
            async with running as agent:
                await asyncio.wait_for(watch_event(agent, "logger_enrolled").wait(), 10)
                sim.go_silent()  # the cable is pulled ...
                offline = watch_event(agent, "device_offline")
                await asyncio.wait_for(offline.wait(), 10)
                clock.now += 3600  # ... for an hour, while the logger keeps logging
                assert sim.identity().last == 3610
                sim.resume()

                def stop_mid_backfill(facts: list) -> None:
                    if any(f.data.get("backfill") for f in facts):
                        running.stop.set()

                observe(agent, stop_mid_backfill)
                await asyncio.wait_for(running.stop.wait(), 10)
            partial = _backfilled(exported(config))
            assert 0 < len(partial) < 2 * 3600, "the agent stopped in the middle of the back-fill"
            clock.now += 5 * INTERVAL  # the agent is down for five more records
            async with Running(config) as agent:
                await asyncio.wait_for(watch_event(agent, "backfill_completed").wait(), 20)
        return config, sim

    config, sim = asyncio.run(main())
    records = exported(config)
    back = _backfilled(records)
    indices = Counter(r["data"]["record"] for r in back)
    assert set(indices) == set(range(11, 3616)), "the hour (11..3610), the restart (..3615)"
    assert set(indices.values()) == {2}, "each record's two points once"
    for r in back:
        stored = sim.record(r["data"]["record"])
        assert r["src_at"] == stored.at.strftime("%Y-%m-%dT%H:%M:%S.000000Z"), "never re-timed"
        assert r["data"]["logger"] == "L0042"
        expected = stored.values[r["point"]] + (-0.2 if r["point"] == "temperature" else 0.0)
        assert r["value"] == expected
        assert r["quality"] == "good"
        assert r["zone"] == "cold-1"
    [first_clock, *_] = _audits(records, "logger_clock")
    assert abs(first_clock["offset_secs"] - 120.0) < 5
    assert len(_audits(records, "logger_enrolled")) == 1
    events = [r["data"]["event"] for r in records if r["kind"] == "audit"]
    assert events.count("device_offline") == 1
    assert events.count("device_online") == 1
    live = [r for r in records if r["kind"] == "reading" and not r["data"].get("backfill")]
    assert {r["quality"] for r in live if r["src_at"]} == {"good"}


def test_garbage_and_bad_checksums_are_on_record_not_a_crash(write_config) -> None:
    clock = FakeClock()

    async def main() -> Path:
        async with LoggerSimulator(clock=clock, drift=False, interval_secs=INTERVAL) as sim:
            config = write_config(modbus=False, extra_devices=_device(sim.device_path))
            async with Running(config) as agent:
                await asyncio.wait_for(watch_event(agent, "logger_enrolled").wait(), 10)
                sim.garbage(2)
                sim.bad_checksum(2)
                await until(lambda: sim.requests_served > 12, what="more polls")
                sim.go_silent()
                await asyncio.wait_for(watch_event(agent, "device_offline").wait(), 10)
                clock.now += 300 * INTERVAL
                sim.resume()
                sim.garbage(1)  # lands in the first answer after reconnecting
                sim.bad_checksum(3)
                await asyncio.wait_for(watch_event(agent, "backfill_completed").wait(), 20)
        return config

    records = exported(asyncio.run(main()))
    live = [r for r in records if r["kind"] == "reading" and not r["data"].get("backfill")]
    errors = [r["data"]["error"] for r in live if r["quality"] == "bad"]
    assert any("checksum mismatch" in e for e in errors), "a bad checksum is a bad reading"
    assert any("is not printable ASCII" in e for e in errors), "so is garbage"
    assert any("no answer within 1000 ms" in e for e in errors), "and silence"
    assert [r for r in live if r["quality"] == "good"]
    back = Counter(r["data"]["record"] for r in _backfilled(records))
    assert set(back) == set(range(1, 301))
    assert set(back.values()) == {2}


def test_simulate_logger_prints_a_device_path_that_answers() -> None:
    import serial

    from gxpgate.drivers import gxl

    proc = subprocess.Popen(
        [sys.executable, "-m", "gxpgate", "simulate", "logger", "--stored", "5", "--serial", "L9"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        path = lines[1].split()[2]
        with serial.Serial(path, 9600, timeout=5) as port:
            port.write(gxl.request_identity())
            identity = gxl.parse_identity(gxl.decode_line(port.readline()))
        assert identity.serial == "L9"
        assert (identity.first, identity.last) == (1, 5)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
