"""The buffer quota: high-water alarm, early pruning of delivered records, thinning at the quota;
nothing undelivered is ever deleted. A real agent, a real Modbus simulator, a real service."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx

from gxpgate.simulators.modbus_sim import ModbusSimulator
from gxpgate.simulators.quality_service import QualityServiceSimulator

from .running import GW, Running, exported, until, watch_event

QUOTA = """commit_interval_ms = 20
quota_mb = 0.25
high_water_pct = {high_water}
at_quota = "thin_readings"
thin_interval_secs = 2
"""


def _small_quota(config: Path, high_water: float = 40) -> Path:
    text = config.read_text(encoding="utf-8")
    text = text.replace("commit_interval_ms = 20\n", QUOTA.format(high_water=high_water), 1)
    # Comm loss after 1 s (20 polls), not the profile's 3 polls (0.15 s), which a loaded CI
    # machine's stall can reach; thinning leaves a point out for thin_interval_secs (2 s).
    rules = "\n[zones.cold-1.rules.temperature]\ncomm_loss = { intervals = 20 }\n"
    routes = '\n[alarms.routes]\nhigh_water = "release"\n'
    config.write_text(text + rules + routes, encoding="utf-8")
    return config


def _alarms(records: list[dict], rule: str) -> list[str]:
    return [
        r["data"]["state"] for r in records if r["kind"] == "alarm" and r["data"]["rule"] == rule
    ]


def test_high_water_then_full_then_thinning_and_back(
    tmp_path: Path, write_config, signing_key
) -> None:
    public = signing_key[1].public_key()

    async def main() -> None:
        async with ModbusSimulator() as sim:
            qs = QualityServiceSimulator(tmp_path / "qs.db", [public]).start()
            qs.outage_start()  # nothing is delivered, so nothing may be pruned
            try:
                config = _small_quota(write_config(sim.port, qs.url, poll=0.05))
                async with Running(config) as agent:
                    high = watch_event(agent, "buffer_high_water")
                    full = watch_event(agent, "buffer_full")
                    ended = watch_event(agent, "buffer_thinning_ended")
                    await asyncio.wait_for(high.wait(), 60)
                    await asyncio.wait_for(full.wait(), 60)
                    guard = agent.buffer_guard
                    assert guard is not None
                    assert guard.full
                    # While thinning, each point gets about one in-spec reading per 2 s
                    # instead of twenty per second.
                    start = agent.outbox.last_seq
                    await asyncio.sleep(4)  # the window counted below
                    sealed = exported(config)
                    after = [r for r in sealed if r["seq"] > start and r["kind"] == "reading"]
                    per_point = Counter((r["device"], r["point"]) for r in after)
                    assert per_point, "readings are still sealed"
                    assert max(per_point.values()) <= 4, per_point
                    assert sum(guard.thinned.values()) > 100
                    assert agent.metrics is not None
                    async with httpx.AsyncClient() as client:
                        scraped = (await client.get(agent.metrics.url, timeout=5)).text
                    assert "\ngxpgate_buffer_thinning 1.0\n" in scraped
                    # No false communication-loss alarm although few readings are sealed.
                    assert not [
                        r
                        for r in sealed
                        if r["kind"] == "alarm" and "comm_loss" in r["data"]["rule"]
                    ]
                    # The service comes back: delivered records are pruned at once, use falls
                    # below the quota, thinning ends and says what it left out.
                    chain = agent.outbox.chain
                    qs.outage_end()
                    await asyncio.wait_for(ended.wait(), 60)
                    await until(
                        lambda: not guard.high, within=30, what="use below the high-water mark"
                    )
                    await until(lambda: qs.acked_through(GW, chain) >= agent.outbox.last_seq - 5)
                records = qs.records(GW, chain)
                assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
                assert qs.verification_report(GW, chain)["ok"], "nothing undelivered was deleted"
                audits = {r["data"]["event"]: r["data"] for r in records if r["kind"] == "audit"}
                assert audits["buffer_high_water"]["high_water_pct"] == 40
                assert audits["buffer_full"]["policy"] == "thin_readings"
                assert audits["buffer_pruned_early"]["records"] > 0
                summary = audits["buffer_thinning_ended"]
                assert summary["readings_left_out"] == sum(summary["by_point"].values()) > 100
                assert "probe-1.temperature" in summary["by_point"]
                assert summary["since"] < summary["until"]
                assert _alarms(records, "gateway.buffer.high_water")[:2] == ["active", "cleared"]
                assert _alarms(records, "gateway.buffer.full")[:2] == ["active", "cleared"]
                alarm = next(r for r in records if r["kind"] == "alarm")
                assert (alarm["zone"], alarm["device"], alarm["point"]) == (None, None, None)
                assert alarm["unit"] == "%"
                assert alarm["data"]["route"] == "release"  # configured below
                assert alarm["data"]["limit"] == 40
                assert alarm["data"]["value"] >= 40
            finally:
                qs.stop()

    asyncio.run(main())


def test_excursion_readings_are_sealed_while_thinning(
    tmp_path: Path, write_config, signing_key
) -> None:
    async def main() -> None:
        async with ModbusSimulator() as sim:
            config = _small_quota(write_config(sim.port, poll=0.05), high_water=30)
            async with Running(config) as agent:
                full = watch_event(agent, "buffer_full")
                await asyncio.wait_for(full.wait(), 60)
                start = agent.outbox.last_seq
                sim.set_value(1, "temperature", 12.0)  # refrigerated: high limit 8 °C

                def hot_sealed() -> bool:
                    return any(
                        r["kind"] == "reading" and r["device"] == "probe-1" and r["value"] == 12.0
                        for r in exported(config)
                        if r["seq"] > start
                    )

                await until(hot_sealed, within=10, what="a reading beyond the limit sealed")
                mark = agent.outbox.last_seq
                await asyncio.sleep(2)  # the window counted below, not a wait for readiness
                hot = [
                    r
                    for r in exported(config)
                    if r["seq"] > mark
                    and r["kind"] == "reading"
                    and (r["device"], r["point"]) == ("probe-1", "temperature")
                ]
                # Readings beyond a limit decide alarms: every one is sealed (up to 20/s), not
                # one per 2 s; the cooler points stay thinned.
                assert len(hot) >= 15, len(hot)
                assert agent.buffer_guard is not None
                assert agent.buffer_guard.thinned.get("probe-1.humidity", 0) > 20

    asyncio.run(main())
