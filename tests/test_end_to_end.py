"""Modbus simulator → agent → quality-service simulator, over real sockets."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from gxpgate.agent.evidence import verify_lines
from gxpgate.config import load_config
from gxpgate.simulators.modbus_sim import ModbusSimulator
from gxpgate.simulators.quality_service import QualityServiceSimulator

from .running import GW, Running, exported, until


def test_every_record_arrives_verified_and_once(tmp_path: Path, write_config, signing_key) -> None:
    public = signing_key[1].public_key()

    async def main() -> None:
        async with ModbusSimulator() as sim:
            with QualityServiceSimulator(tmp_path / "qs.db", [public]) as qs:
                config = write_config(sim.port, qs.url)
                async with Running(config) as agent:
                    chain = agent.outbox.chain
                    await until(lambda: qs.acked_through(GW, chain) >= 40, what="40 records acked")
                ours = exported(config)
                theirs = qs.records(GW, chain)
                assert theirs == ours, "the service holds exactly what was sealed, in order"
                assert [r["seq"] for r in theirs] == list(range(1, len(ours) + 1))
                report = qs.verification_report(GW, chain)
                assert report["ok"], report
                assert qs.stats["integrity_incidents"] == 0
                readings = [r for r in ours if r["kind"] == "reading"]
                zones = {(r["device"], r["point"]): r["zone"] for r in readings}
                assert zones[("probe-1", "temperature")] == "cold-1"
                assert zones[("probe-3", "temperature")] == "ambient"
                temps = [
                    r["value"]
                    for r in readings
                    if r["device"] == "probe-1" and r["point"] == "temperature"
                ]
                assert all(4.0 < t < 6.0 for t in temps), temps  # unit 1 drifts around 5.0 °C
                ambient = [r["value"] for r in readings if r["device"] == "probe-3"]
                assert all(20.0 < t < 22.0 for t in ambient), ambient  # int16 x10 decoded
                assert {r["quality"] for r in readings} == {"good"}
                events = [r["data"]["event"] for r in ours if r["kind"] == "audit"]
                assert events[0] == "agent_started"
                assert events[-1] == "agent_stopped"
                start = ours[0]["data"]
                assert start["config_sha256"] == load_config(config).sha256
                assert start["key_id"] == ours[0]["key"]

    asyncio.run(main())


def test_outage_backlog_drains_in_order(tmp_path: Path, write_config, signing_key) -> None:
    async def main() -> None:
        async with ModbusSimulator() as sim:
            with QualityServiceSimulator(tmp_path / "qs.db", [signing_key[1].public_key()]) as qs:
                config = write_config(sim.port, qs.url, batch=7)
                async with Running(config) as agent:
                    chain = agent.outbox.chain
                    await until(lambda: qs.acked_through(GW, chain) >= 10)
                    qs.outage_start()
                    held = qs.acked_through(GW, chain)
                    await until(lambda: agent.outbox.last_seq >= held + 60, what="backlog")
                    assert qs.acked_through(GW, chain) == held
                    assert agent.forwarder.stats.last_error is not None
                    qs.outage_end()
                    await until(lambda: qs.acked_through(GW, chain) >= agent.outbox.last_seq - 5)
                records = qs.records(GW, chain)
                assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
                assert records == exported(config)
                assert qs.verification_report(GW, chain)["ok"]

    asyncio.run(main())


def test_started_while_service_unreachable(tmp_path: Path, write_config, signing_key) -> None:
    async def main() -> None:
        async with ModbusSimulator() as sim:
            qs = QualityServiceSimulator(tmp_path / "qs.db", [signing_key[1].public_key()])
            qs.start()
            qs.outage_start()  # the port is known but nothing listens
            try:
                config = write_config(sim.port, qs.url)
                async with Running(config) as agent:
                    chain = agent.outbox.chain
                    await until(lambda: agent.outbox.last_seq >= 30, what="sealing while offline")
                    assert qs.acked_through(GW, chain) == 0
                    qs.outage_end()
                    await until(lambda: qs.acked_through(GW, chain) >= 30)
                records = qs.records(GW, chain)
                assert records[0]["seq"] == 1
                assert records[0]["data"]["event"] == "agent_started"
                assert records == exported(config)
            finally:
                qs.stop()

    asyncio.run(main())


def test_service_that_lost_records_is_refilled(tmp_path: Path, write_config, signing_key) -> None:
    public = signing_key[1].public_key()

    async def main() -> None:
        async with ModbusSimulator() as sim:
            qs = QualityServiceSimulator(tmp_path / "qs.db", [public]).start()
            port = qs.port
            try:
                config = write_config(sim.port, qs.url)
                async with Running(config) as agent:
                    chain = agent.outbox.chain
                    await until(lambda: qs.acked_through(GW, chain) >= 20)
                    qs.stop()  # "restored from an empty backup": a new service on the same port
                    qs = QualityServiceSimulator(tmp_path / "qs2.db", [public], port=port).start()
                    await until(lambda: qs.acked_through(GW, chain) >= agent.outbox.last_seq - 3)
                assert qs.records(GW, chain) == exported(config)
            finally:
                qs.stop()

    asyncio.run(main())


def test_uplink_errors_retry_split_and_audit(tmp_path: Path, write_config, signing_key) -> None:
    async def main() -> None:
        async with ModbusSimulator() as sim:
            qs = QualityServiceSimulator(
                tmp_path / "qs.db", [signing_key[1].public_key()], max_body_records=5
            ).start()
            try:
                config = write_config(sim.port, qs.url, batch=50)
                async with Running(config) as agent:
                    chain = agent.outbox.chain
                    await until(lambda: qs.acked_through(GW, chain) >= 20, what="split batches")
                    qs.fail_next(429, retry_after=0.3)
                    qs.fail_next(503)
                    mark = qs.acked_through(GW, chain)
                    await until(lambda: qs.acked_through(GW, chain) >= mark + 20)
                stats = qs.stats
                assert stats["rejected_batches"].get(413, 0) >= 1
                assert stats["faults_injected"] >= 2
                records = qs.records(GW, chain)
                assert records == exported(config)
                audits = [r["data"] for r in records if r["kind"] == "audit"]
                assert any(a["event"] == "uplink_rejected" and a["status"] == 413 for a in audits)
            finally:
                qs.stop()

    asyncio.run(main())


def test_device_faults_become_bad_readings_and_audits(tmp_path: Path, write_config) -> None:
    async def main() -> None:
        async with ModbusSimulator() as sim:
            config = write_config(sim.port)
            async with Running(config) as agent:
                await until(lambda: agent.outbox.last_seq >= 10)
                sim.set_fault(1, "exception", exception_code=4)
                seen = agent.outbox.last_seq
                await until(lambda: agent.outbox.last_seq >= seen + 10)
                sim.set_fault(1, "no_answer")
                await until(lambda: not agent.pollers[0].online, what="offline")
                await until(lambda: agent.outbox.last_seq >= seen + 30)
                sim.set_fault(1, None)
                await until(lambda: agent.pollers[0].online, what="back online")
                seen = agent.outbox.last_seq
                await until(lambda: agent.outbox.last_seq >= seen + 10)
        records = exported(config)
        probe1 = [r for r in records if r["device"] == "probe-1"]
        errors = {
            r["data"].get("error")
            for r in probe1
            if r["kind"] == "reading" and r["quality"] == "bad"
        }
        assert "Modbus exception 4 (server device failure)" in errors
        assert "no response within 300 ms" in errors, errors
        assert all(r["value"] is None for r in probe1 if r["quality"] == "bad")
        events = [r["data"]["event"] for r in probe1 if r["kind"] == "audit"]
        # Exceptions only: failing (it answers); then no answer: offline; then good again.
        assert events == ["device_failing", "device_offline", "device_online", "device_recovered"]
        others = [r for r in records if r["device"] == "probe-3" and r["kind"] == "reading"]
        assert {r["quality"] for r in others} == {"good"}, "a faulty device does not affect others"

    asyncio.run(main())


def test_request_plan_reads_device_in_fewest_requests(tmp_path: Path, write_config) -> None:
    async def main() -> None:
        async with ModbusSimulator() as sim:
            config = write_config(sim.port, poll=0.05)
            async with Running(config) as agent:
                await until(lambda: all(p.polls >= 5 for p in agent.pollers))
                served, polls = sim.requests_served, sum(p.polls for p in agent.pollers)
        # probe-1: temperature + humidity in one input-register request, door in one discrete
        # request; probe-3: one holding request → 3 requests for 2 polls at the same rate.
        assert served <= polls * 1.5 + 3

    asyncio.run(main())


def test_kill_9_mid_stream_then_restart_completes_chain(
    tmp_path: Path, write_config, signing_key
) -> None:
    public = signing_key[1].public_key()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    async def main() -> None:
        async with ModbusSimulator() as sim:
            with QualityServiceSimulator(tmp_path / "qs.db", [public]) as qs:
                config = write_config(sim.port, qs.url, poll=0.05)
                cmd = [sys.executable, "-m", "gxpgate", "run", "--config", str(config)]

                def acked() -> int:
                    return qs.acked_through(*qs.chains()[0]) if qs.chains() else 0

                async def start() -> asyncio.subprocess.Process:
                    return await asyncio.create_subprocess_exec(
                        *cmd, env=env, stdout=subprocess.DEVNULL
                    )

                marks = 0
                for _ in range(2):
                    proc = await start()
                    await until(lambda m=marks: acked() >= m + 30, what="delivery")
                    await asyncio.sleep(0.1)  # let it run on mid-stream, then kill it
                    proc.send_signal(signal.SIGKILL)
                    await proc.wait()
                    marks = acked()
                proc = await start()
                chain = qs.chains()[0][1]
                await until(lambda: qs.acked_through(GW, chain) > marks + 20)
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 30) == 0
                records = exported(config)
                assert qs.records(GW, chain) == records, "service has seq 1..N, all of it"
                assert verify_lines((orjson.dumps(r) for r in records), [public]).ok
                starts = [
                    r
                    for r in records
                    if r["kind"] == "audit" and r["data"]["event"] == "agent_started"
                ]
                assert len(starts) == 3
                assert records[-1]["data"]["event"] == "agent_stopped"

    asyncio.run(main())


def test_service_asking_for_pruned_records_is_audited_once(
    tmp_path: Path, write_config, signing_key
) -> None:
    public = signing_key[1].public_key()

    async def main() -> None:
        async with ModbusSimulator() as sim:
            qs = QualityServiceSimulator(tmp_path / "qs.db", [public]).start()
            port = qs.port
            try:
                config = write_config(sim.port, qs.url)
                async with Running(config) as agent:
                    chain = agent.outbox.chain
                    await until(lambda: qs.acked_through(GW, chain) >= 20)
                    qs.stop()
                    # retention 0: everything delivered is pruned (the newest record stays)
                    agent.outbox.prune(retention_secs=0)
                    qs = QualityServiceSimulator(tmp_path / "empty.db", [public], port=port)
                    qs.start()
                    await until(
                        lambda: any(
                            r["kind"] == "audit" and r["data"]["event"] == "uplink_records_pruned"
                            for r in (orjson.loads(b) for b in agent.outbox.tail(40))
                        ),
                        what="the audit record",
                    )
                    assert qs.acked_through(GW, chain) == 0, "nothing can be accepted past a hole"
            finally:
                qs.stop()
        records = exported(config)
        gaps = [
            r["data"]
            for r in records
            if r["kind"] == "audit" and r["data"]["event"] == "uplink_records_pruned"
        ]
        assert len(gaps) == 1, "said once, not on every retry"
        assert gaps[0]["first_seq"] == 1

    asyncio.run(main())
