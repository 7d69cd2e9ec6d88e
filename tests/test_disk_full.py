"""A full disk (issue 14 items 4 and 10), on a real small filesystem (tmpfs; needs root, as CI
runs): the agent stays up, keeps every record in memory until the disk takes it, raises the
local ``gateway.buffer.disk_full`` alarm at once, and starts on a full disk and says so. A quota
that is not a finite number is refused; the high-water alarm is about undelivered evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gxpgate.agent.cli.main import app
from gxpgate.agent.service.runtime import Agent
from gxpgate.simulators.modbus_sim import ModbusSimulator
from gxpgate.simulators.quality_service import QualityServiceSimulator

from .running import GW, Running, exported, until


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("mounting a tmpfs needs root (CI runs as root, so there it runs)")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path, name: str = "filler") -> None:
    with (folder / name).open("ab", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 16384)


def on_small_disk(config: Path, disk: Path) -> None:
    text = config.read_text().replace(
        'path = "buffer.db"', f'path = "{disk}/buffer.db"\nreserve_mb = 1'
    )
    config.write_text(text)


def disk_alarm(agent: Agent) -> str | None:
    assert agent.alarms is not None
    views = [v for v in agent.alarms.engine.alarms() if v.rule == "gateway.buffer.disk_full"]
    return views[0].state if views else None


def test_a_full_disk_keeps_the_agent_up_and_every_record(
    tmp_path: Path, write_config, signing_key, small_disk: Path
) -> None:
    public = signing_key[1].public_key()

    async def main() -> None:
        async with ModbusSimulator() as sim:
            with QualityServiceSimulator(tmp_path / "qs.db", [public]) as qs:
                config = write_config(sim.port, qs.url, poll=0.05)
                on_small_disk(config, small_disk)
                async with Running(config) as agent:
                    assert (small_disk / "buffer.db.reserve").stat().st_size == 1024 * 1024
                    await until(lambda: qs.chains() and qs.acked_through(*qs.chains()[0]) > 20)
                    await asyncio.to_thread(fill, small_disk)
                    await until(lambda: agent.outbox.disk_full, what="the reserve given back")
                    await until(lambda: disk_alarm(agent) == "active", what="the alarm")
                    await asyncio.to_thread(fill, small_disk, "filler-2")
                    recorder = agent.recorder
                    assert recorder is not None
                    await until(lambda: recorder.write_failing, what="failing commits")
                    sealed_before = recorder.sealed
                    await asyncio.sleep(1.5)  # a counted stretch of readings kept in memory
                    assert recorder.sealed == sealed_before, "nothing committed while full"
                    assert recorder.queued > 0, "the readings wait in memory"
                    assert agent.forwarder is not None
                    for name in ("filler", "filler-2"):
                        (small_disk / name).unlink()
                    await until(lambda: not recorder.write_failing, what="commits again")
                    await until(lambda: disk_alarm(agent) in (None, "cleared"), what="cleared")
                    last = agent.outbox.last_seq
                    await until(lambda: qs.acked_through(GW, agent.outbox.chain) >= last, 30)
        records = exported(config)
        assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
        events = [r["data"]["event"] for r in records if r["kind"] == "audit"]
        assert "buffer_write_failed" in events
        states = [
            r["data"]["state"] for r in records
            if r["kind"] == "alarm" and r["data"]["rule"] == "gateway.buffer.disk_full"
        ]  # fmt: skip
        assert states[:1] == ["active"]
        assert "cleared" in states
        temps = [
            r["at"] for r in records if r["device"] == "probe-1" and r["point"] == "temperature"
        ]
        assert temps == sorted(temps), "readings in order"
        assert not [
            r for r in records
            if r["kind"] == "alarm" and r["data"]["rule"].endswith("comm_loss")
        ], "the device kept answering: the gateway's lag is no communication loss"  # fmt: skip

    asyncio.run(main())


def test_a_start_on_a_full_disk_comes_up_and_says_so(
    tmp_path: Path, write_config, small_disk: Path
) -> None:
    async def main() -> None:
        async with ModbusSimulator() as sim:
            config = write_config(sim.port)
            on_small_disk(config, small_disk)
            async with Running(config) as agent:
                await until(lambda: agent.outbox.last_seq > 5)
            await asyncio.to_thread(fill, small_disk)
            async with Running(config) as agent:
                assert agent.outbox.disk_full
                await until(lambda: disk_alarm(agent) == "active", what="the alarm")
                seen = agent.outbox.last_seq
                await until(lambda: agent.outbox.last_seq > seen + 5, what="sealing goes on")
            (small_disk / "filler").unlink()
        events = [r["data"]["event"] for r in exported(config) if r["kind"] == "audit"]
        assert events.count("agent_started") == 2

    asyncio.run(main())


def test_a_quota_that_is_not_a_finite_number_is_refused(tmp_path: Path, write_config) -> None:
    config = write_config()
    for bad in ("inf", "nan"):
        config.write_text(
            config.read_text().replace("[buffer]\n", f"[buffer]\nquota_mb = {bad}\n", 1)
        )
        result = CliRunner().invoke(app, ["config", "validate", str(config)])
        assert result.exit_code == 2, result.output
        assert "buffer.quota_mb" in result.output
        config.write_text(config.read_text().replace(f"quota_mb = {bad}\n", ""))


def test_high_water_is_about_undelivered_records_not_delivered_ones(
    tmp_path: Path, write_config, signing_key
) -> None:
    public = signing_key[1].public_key()

    async def main() -> None:
        async with ModbusSimulator() as sim:
            with QualityServiceSimulator(tmp_path / "qs.db", [public]) as qs:
                config = write_config(sim.port, qs.url, poll=0.02)
                buffer = "[buffer]\nquota_mb = 1\nhigh_water_pct = 20\n"
                config.write_text(config.read_text().replace("[buffer]\n", buffer, 1))
                async with Running(config) as agent:
                    guard = agent.buffer_guard
                    assert guard is not None
                    await until(lambda: guard.used_pct >= 30, 60, "use past the mark")
                    await guard.check()
                    assert agent.outbox.acked_through > 0
                    assert guard.used_pct >= 20
                    assert not guard.high, "delivered records are not evidence at risk"
                    qs.stop()  # now nothing is delivered: what is sealed next is at risk
                    await until(lambda: guard.high, 60, "high water on undelivered records")

    asyncio.run(main())
