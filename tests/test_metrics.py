"""The metrics endpoint scraped over HTTP while the agent runs against the simulators."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gxpgate.agent.service.runtime import Agent
from gxpgate.simulators.modbus_sim import ModbusSimulator
from gxpgate.simulators.quality_service import QualityServiceSimulator
from gxpgate.simulators.scanner_sim import DOCK_RECEIVING, BarcodeScannerSimulator
from tests.broker import free_port

from .running import GW, Running, exported, until

WAIT = 20.0

# probe-9 answers nowhere; its only point has no rules, so it raises no comm-loss alarm.
UNREACHABLE = """
[devices.probe-9]
type = "modbus_tcp"
host = "127.0.0.1"
port = {port}
unit_id = 1
zone = "ambient"
poll_interval_secs = 0.2
timeout_ms = 200
reconnect_max_secs = 0.5
points.door_open = {{ table = "discrete", address = 0, monitored = false }}
"""

# Zone cold-1 alarms at once above 8 °C (no delays).
EXCURSION_RULE = """
[zones.cold-1.rules.temperature]
high = { limit = 8.0, hysteresis = 0.5 }
on_delay_secs = 0
off_delay_secs = 0
rate = false
mkt = false
comm_loss = false
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Scraper:
    def __init__(self, agent: Agent) -> None:
        assert agent.metrics is not None
        self.url = agent.metrics.url
        self.client = httpx.AsyncClient(trust_env=False, timeout=5)

    async def __call__(self) -> Samples:
        answer = await self.client.get(self.url)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain")
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text)
            for s in family.samples
        }

    async def until(self, check: Any, what: str) -> Samples:
        """Scrape until ``check(samples)`` holds."""
        found: list[Samples] = []

        async def probe() -> bool:
            found[:] = [await self()]
            return bool(check(found[0]))

        deadline = asyncio.get_running_loop().time() + WAIT
        while not await probe():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what}; last scrape: {found}")
            await asyncio.sleep(0.05)
        return found[0]


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_follow_devices_buffer_uplink_and_alarms(
    tmp_path: Path, write_config: Any, signing_key: Any
) -> None:
    public = signing_key[1].public_key()

    async def main() -> None:
        async with ModbusSimulator() as sim:
            qs = QualityServiceSimulator(tmp_path / "qs.db", [public]).start()
            qs.outage_start()  # the port is known but nothing listens: connect errors
            try:
                config = write_config(
                    sim.port,
                    qs.url,
                    extra_devices=UNREACHABLE.format(port=free_port()) + EXCURSION_RULE,
                )
                async with Running(config) as agent:
                    scrape = Scraper(agent)
                    async with scrape.client:
                        await scenario(agent, scrape, qs, sim)
            finally:
                qs.stop()

    async def scenario(
        agent: Agent, scrape: Scraper, qs: QualityServiceSimulator, sim: ModbusSimulator
    ) -> None:
        outbox = agent.outbox
        assert outbox is not None
        s = await scrape.until(
            lambda s: (
                value(s, "gxpgate_device_up", device="probe-1") == 1
                and value(s, "gxpgate_device_up", device="probe-9") == 0
                and (value(s, "gxpgate_uplink_errors_total", kind="connect") or 0) >= 2
                and (value(s, "gxpgate_buffer_backlog_records") or 0) >= 10
            ),
            "devices up and down, connect errors, a backlog",
        )
        info = [k for k in s if k[0] == "gxpgate_info"]
        assert len(info) == 1
        labels = dict(info[0][1])
        assert labels["gw"] == GW
        assert labels["chain"] == outbox.chain
        assert labels["key"] == agent.key_id
        assert value(s, "gxpgate_device_info", device="probe-9", type="modbus_tcp", zone="ambient")
        age = value(s, "gxpgate_device_last_good_reading_age_seconds", device="probe-1")
        assert age is not None
        assert age < 2.0
        assert value(s, "gxpgate_device_last_good_reading_age_seconds", device="probe-9") is None
        errors = [k for k in s if k[0] == "gxpgate_device_last_error_info"]
        assert [dict(k[1])["device"] for k in errors] == ["probe-9"]
        assert value(s, "gxpgate_uplink_failing") == 1
        assert value(s, "gxpgate_uplink_errors_total", kind="timeout") == 0
        assert value(s, "gxpgate_uplink_errors_total", kind="http_5xx") is None  # none yet
        assert value(s, "gxpgate_uplink_last_success_timestamp_seconds") is None
        assert value(s, "gxpgate_buffer_acked_through") == 0
        assert (value(s, "gxpgate_buffer_oldest_undelivered_age_seconds") or 0) > 0
        assert value(s, "gxpgate_buffer_quota_bytes") == outbox.quota_bytes
        assert 0 < (value(s, "gxpgate_buffer_disk_bytes") or 0) < outbox.quota_bytes
        assert 0 < (value(s, "gxpgate_buffer_used_bytes") or 0) < outbox.quota_bytes
        sealed = value(s, "gxpgate_records_sealed_total")
        assert sealed is not None
        assert sealed > 0
        s = await scrape.until(
            lambda s: (value(s, "gxpgate_records_sealed_total") or 0) > sealed, "sealing goes on"
        )
        assert value(s, "gxpgate_alarms_active", severity="alarm", acknowledged="false") == 0

        qs.outage_end()
        s = await scrape.until(
            lambda s: (
                value(s, "gxpgate_buffer_backlog_records") == 0
                and value(s, "gxpgate_uplink_failing") == 0
            ),
            "the backlog drained",
        )
        assert value(s, "gxpgate_buffer_oldest_undelivered_age_seconds") == 0
        assert value(s, "gxpgate_uplink_last_success_timestamp_seconds") is not None
        assert not [k for k in s if k[0] == "gxpgate_uplink_last_error_info"]
        before = outbox.acked_through
        s = await scrape()
        after = outbox.acked_through
        acked = value(s, "gxpgate_buffer_acked_through")
        assert acked is not None
        assert before <= acked <= after
        assert acked <= qs.acked_through(GW, outbox.chain)

        sim.set_value(1, "temperature", 9.5)
        s = await scrape.until(
            lambda s: (
                value(s, "gxpgate_alarms_active", severity="alarm", acknowledged="false") == 1
            ),
            "the excursion alarm",
        )
        assert value(s, "gxpgate_alarms_active", severity="warning", acknowledged="false") == 0

        # Loopback only: the same port on another loopback address is closed.
        assert agent.metrics is not None
        assert agent.metrics.port is not None
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", agent.metrics.port), timeout=2).close()

    asyncio.run(main())


def test_endpoint_that_cannot_listen_is_on_record_and_the_agent_keeps_monitoring(
    write_config: Any,
) -> None:
    async def main() -> Path:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            async with ModbusSimulator() as sim:
                config = write_config(sim.port, metrics=f'address = "127.0.0.1"\nport = {port}')
                async with Running(config) as agent:
                    assert agent.metrics is None
                    recorder = agent.recorder
                    assert recorder is not None
                    await until(lambda: recorder.sealed >= 30, WAIT, "readings sealed")
        return config

    config = asyncio.run(main())
    records = exported(config)
    events = [r["data"] for r in records if r["kind"] == "audit"]
    unavailable = [e for e in events if e["event"] == "metrics_unavailable"]
    assert len(unavailable) == 1
    assert unavailable[0]["address"] == "127.0.0.1"
    assert "in use" in unavailable[0]["error"].lower()
    readings = [r for r in records if r["kind"] == "reading" and r["quality"] == "good"]
    assert len(readings) >= 20


def test_disabled_endpoint_does_not_listen(write_config: Any) -> None:
    port = free_port()

    async def main() -> None:
        async with ModbusSimulator() as sim:
            config = write_config(sim.port, metrics=f"enabled = false\nport = {port}")
            async with Running(config) as agent:
                assert agent.metrics is None
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.1", port), timeout=2).close()

    asyncio.run(main())


def test_scanner_health_and_last_scan_age(write_config: Any) -> None:
    async def main() -> None:
        async with BarcodeScannerSimulator("tcp") as dock:
            extra = f"""
[devices.dock-scanner]
type = "barcode_scanner"
transport = "tcp"
host = "{dock.host}"
port = {dock.port}
zone = "ambient"
biz_step = "receiving"
reconnect_max_secs = 0.5
"""
            config = write_config(modbus=False, extra_devices=extra)
            async with Running(config) as agent:
                scrape = Scraper(agent)
                async with scrape.client:
                    s = await scrape.until(
                        lambda s: value(s, "gxpgate_device_up", device="dock-scanner") == 1,
                        "the scanner connected",
                    )
                    assert (
                        value(s, "gxpgate_scanner_last_scan_age_seconds", device="dock-scanner")
                        is None
                    )
                    await dock.play(DOCK_RECEIVING[:1])
                    s = await scrape.until(
                        lambda s: (
                            value(s, "gxpgate_scanner_last_scan_age_seconds", device="dock-scanner")
                            is not None
                        ),
                        "a scan seen",
                    )
                    age = value(s, "gxpgate_scanner_last_scan_age_seconds", device="dock-scanner")
                    assert age is not None
                    assert age < 5
                    assert value(
                        s, "gxpgate_device_info", device="dock-scanner", type="barcode_scanner",
                        zone="ambient",
                    ) == 1  # fmt: skip
                    assert not [
                        k for k in s if k[0] == "gxpgate_device_last_good_reading_age_seconds"
                    ]

    asyncio.run(main())


# A probe of the simulator's humidity (in an ambient zone: no rule can move), polled fast.
HUMIDITY_PROBE = """
[devices.{name}]
type = "modbus_tcp"
host = "127.0.0.1"
port = {port}
unit_id = 1
zone = "ambient"
poll_interval_secs = 0.1
{policy}points.humidity = {{ table = "input", address = 2, type = "float32", unit = "%" }}
"""
# Its first reading sealed, then one a minute unless it moves 5 %.
THIN = 'record = "interval"\nrecord_interval_secs = 60\nrecord_deadband = 5.0\n'


def test_readings_taken_are_counted_whether_sealed_or_not(write_config: Any) -> None:
    """``gxpgate_device_readings_total`` counts what was read, not what was kept: the operator's
    (and the footprint benchmark's) only view of sampling under ``record = "interval"``."""

    async def main() -> Path:
        async with ModbusSimulator() as sim:
            probes = HUMIDITY_PROBE.format(name="every", port=sim.port, policy="")
            probes += HUMIDITY_PROBE.format(name="thin", port=sim.port, policy=THIN)
            config = write_config(modbus=False, extra_devices=probes)
            async with Running(config) as agent:
                outbox = agent.outbox
                assert outbox is not None
                scrape = Scraper(agent)
                async with scrape.client:
                    s = await scrape.until(
                        lambda s: (
                            (value(s, "gxpgate_device_readings_total", device="thin") or 0) >= 30
                        ),
                        "30 readings of the interval probe",
                    )
                    taken = value(s, "gxpgate_device_readings_total", device="every")
                    assert taken is not None
                    assert taken >= 25
                    # Every reading counted is sealed, a commit later at most.
                    await until(
                        lambda: sealed_readings(outbox, "every") >= taken,
                        what="the counted readings of 'every' sealed",
                    )
        return config

    def sealed_readings(outbox: Any, device: str) -> int:
        bodies = (orjson.loads(body) for _, body in outbox.pending(0, 10**9))
        return sum(1 for r in bodies if r["kind"] == "reading" and r["device"] == device)

    config = asyncio.run(main())
    thin = [r for r in exported(config) if r["kind"] == "reading" and r["device"] == "thin"]
    # Its first reading, and on stopping the latest, standing for all the others.
    assert 1 <= len(thin) <= 2
    assert sum(r["data"].get("samples", {}).get("count", 1) for r in thin) >= 30
