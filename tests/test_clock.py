"""Clock integrity: wall-clock steps are sealed with before/after, NTP synchronisation is on
record at start and on change, and readings taken while unsynchronised are flagged."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path

import pytest

from gxpgate.agent.health.clock import StepDetector, _adjtimex_state, ntp_synchronized
from gxpgate.simulators.modbus_sim import ModbusSimulator

from .running import Running, exported, until, watch_event


class FakeClocks:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = 1_800_000_000.0

    def tick(self, secs: float) -> None:
        self.mono += secs
        self.wall += secs


def test_no_step_while_the_clocks_run_together() -> None:
    clocks = FakeClocks()
    detector = StepDetector(2.0, wall=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    for _ in range(100):
        clocks.tick(1.0)
        clocks.wall += 0.01  # slewing, as NTP corrects gradually: 1 s over 100 s
        assert detector.check() is None


@pytest.mark.parametrize("jump", [120.0, -3600.0, 2.5])
def test_a_step_is_reported_once_with_before_and_after(jump: float) -> None:
    clocks = FakeClocks()
    detector = StepDetector(2.0, wall=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    clocks.tick(10)
    before = clocks.wall
    clocks.wall += jump
    step = detector.check()
    assert step is not None
    assert step.expected == pytest.approx(before)
    assert step.actual == pytest.approx(before + jump)
    assert step.step_secs == pytest.approx(jump)
    clocks.tick(10)
    assert detector.check() is None, "the new offset is the reference from now on"


def test_the_kernel_is_asked_directly() -> None:
    state = _adjtimex_state()
    assert state in range(6), "adjtimex answers TIME_OK … TIME_ERROR on Linux"
    synchronized, source = ntp_synchronized()
    assert source == "adjtimex"
    assert synchronized == (state != 5)


def test_agent_seals_steps_and_sync_changes_and_flags_readings(
    tmp_path: Path, write_config
) -> None:
    offset = [0.0]
    synced: list[bool | None] = [False]

    def wall() -> float:
        return time.time() + offset[0]

    async def main() -> None:
        async with ModbusSimulator() as sim:
            config = write_config(sim.port, poll=0.1)
            config.write_text(
                config.read_text() + "\n[clock]\nsync_check_secs = 1\n", encoding="utf-8"
            )
            async with Running(
                config, wall_clock=wall, sync_probe=lambda: (synced[0], "test")
            ) as agent:
                stepped = watch_event(agent, "clock_step")
                await until(lambda: agent.outbox.last_seq > 20, what="readings")
                offset[0] = 300.0  # someone sets the clock five minutes ahead
                await asyncio.wait_for(stepped.wait(), 10)
                synced[0] = True
                assert agent.clock is not None
                await until(lambda: agent.clock.synchronized is True, what="sync noticed")
                mark = agent.outbox.last_seq
                await until(lambda: agent.outbox.last_seq > mark + 20, what="more readings")
        records = exported(config)
        audits = [r for r in records if r["kind"] == "audit"]
        syncs = [r["data"] for r in audits if r["data"]["event"] == "clock_sync"]
        assert syncs[0] == {
            "event": "clock_sync", "synchronized": False, "source": "test", "at_start": True,
        }  # fmt: skip
        assert syncs[1]["synchronized"] is True
        assert syncs[1]["at_start"] is False
        assert len(syncs) == 2, "sealed on change only"
        (step,) = [r["data"] for r in audits if r["data"]["event"] == "clock_step"]
        before = datetime.fromisoformat(step["before"].replace("Z", "+00:00"))
        after = datetime.fromisoformat(step["after"].replace("Z", "+00:00"))
        assert (after - before).total_seconds() == pytest.approx(300, abs=1.5)
        assert step["step_secs"] == pytest.approx(300, abs=1.5)
        sync_seq = next(r["seq"] for r in audits if r["data"] == syncs[1])
        readings = [r for r in records if r["kind"] == "reading"]
        early = [r for r in readings if r["seq"] < sync_seq]
        late = [r for r in readings if r["seq"] > sync_seq]
        assert early
        assert all(r["data"] == {"clock_unsynced": True} for r in early)
        assert late
        assert all(r["data"] == {} for r in late)

    asyncio.run(main())


def test_accept_policy_leaves_readings_unmarked(tmp_path: Path, write_config) -> None:
    async def main() -> None:
        async with ModbusSimulator() as sim:
            config = write_config(sim.port, poll=0.1)
            config.write_text(
                config.read_text() + '\n[clock]\nunsynced_readings = "accept"\n', encoding="utf-8"
            )
            async with Running(config, sync_probe=lambda: (False, "test")) as agent:
                await until(lambda: agent.outbox.last_seq > 10, what="readings")
        readings = [r for r in exported(config) if r["kind"] == "reading"]
        assert readings
        assert all(r["data"] == {} for r in readings)

    asyncio.run(main())
