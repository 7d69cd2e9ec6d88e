"""Modbus RTU through the agent: three slaves on one pseudo-terminal bus, one of them silent."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gxpgate.agent.cli.main import app
from gxpgate.simulators.modbus_sim import ModbusRtuSimulator

from .running import Running, exported, until

POLL_SECS = 0.25
RUN_SECS = 3.0


def _bus(
    path: str, timeout_ms: int = 100, parity: str = "none", others_timeout_ms: int | None = None
) -> str:
    """Slaves 1-3 on one line; ``others_timeout_ms`` for slaves 1 and 2 (default: the same)."""
    # A Linux pty refuses even parity (EINVAL), which real RS-485 adapters accept.
    slaves = "".join(
        f"""
[devices.rtu-{unit}]
type = "modbus_rtu"
bus = "line-1"
unit_id = {unit}
zone = "{"ambient" if unit == 3 else "cold-1"}"
poll_interval_secs = {POLL_SECS}
timeout_ms = {timeout_ms if unit == 3 or others_timeout_ms is None else others_timeout_ms}
reconnect_max_secs = 0.5
points.temperature = {{ table = "input", address = 0, type = "float32", unit = "Cel" }}
points.humidity = {{ table = "input", address = 2, type = "float32", unit = "%" }}
"""
        for unit in (1, 2, 3)
    )
    return f"""
[buses.line-1]
port = "{path}"
baudrate = 19200
parity = "{parity}"
{slaves}"""


def _readings(records: list[dict], device: str) -> list[dict]:
    return [r for r in records if r["kind"] == "reading" and r["device"] == device]


def test_a_silent_slave_does_not_slow_the_others(write_config) -> None:
    async def main() -> Path:
        async with ModbusRtuSimulator() as sim:
            sim.set_fault(3, "no_answer")
            # The answering slaves get the default 300 ms: 100 ms left a loaded 2-core CI
            # machine a missed answer now and then (a healthy slave's miss, not the silent one's).
            bus = _bus(sim.device_path, others_timeout_ms=300)
            config = write_config(modbus=False, extra_devices=bus)
            async with Running(config) as agent:
                started = time.monotonic()
                await asyncio.sleep(RUN_SECS)  # the poll rate over a fixed time is what we test
                sim.set_fault(3, None)
                pollers = {p.device: p for p in agent.pollers}
                await until(lambda: pollers["rtu-3"].online, what="rtu-3 back online")
                elapsed.append(time.monotonic() - started)
                assert pollers["rtu-1"].overruns == 0
                assert pollers["rtu-2"].overruns == 0
        return config

    elapsed: list[float] = []
    config = asyncio.run(main())
    records = exported(config)
    expected_polls = elapsed[0] / POLL_SECS
    for device in ("rtu-1", "rtu-2"):
        readings = _readings(records, device)
        bad = [(r["point"], r["data"].get("error")) for r in readings if r["quality"] != "good"]
        assert not bad, f"{device} lost a poll to the silent slave: {bad}"
        assert len(readings) / 2 >= 0.85 * expected_polls, (device, len(readings))
    silent = _readings(records, "rtu-3")
    bad = [r for r in silent if r["quality"] == "bad"]
    assert bad, "the silent slave's failed attempts are on record"
    assert "slave 3 on line-1: no response within 100 ms" in bad[0]["data"]["error"]
    assert [r for r in silent if r["quality"] == "good"], "it is read again once it answers"
    events = [
        r["data"]["event"] for r in records if r["kind"] == "audit" and r["device"] == "rtu-3"
    ]
    assert events == ["device_offline", "device_online"]
    assert not [r for r in records if r["kind"] == "audit" and r["device"] in ("rtu-1", "rtu-2")]


def test_exception_and_bad_crc_stay_with_their_slave(write_config) -> None:
    async def main() -> Path:
        async with ModbusRtuSimulator() as sim:
            sim.set_fault(2, "exception", exception_code=4)
            sim.set_fault(3, "bad_crc")
            config = write_config(modbus=False, extra_devices=_bus(sim.device_path))
            async with Running(config) as agent:
                await until(lambda: min(p.polls for p in agent.pollers) >= 4, what="4 polls each")
        return config

    records = exported(asyncio.run(main()))
    assert {r["quality"] for r in _readings(records, "rtu-1")} == {"good"}
    failed = _readings(records, "rtu-2")
    assert {r["quality"] for r in failed} == {"bad"}
    assert failed[0]["data"]["error"] == "Modbus exception 4 (server device failure)"
    garbled = _readings(records, "rtu-3")
    assert {r["quality"] for r in garbled} == {"bad"}, "a frame with a bad CRC is never a value"


def test_a_refused_block_is_split_on_the_bus_too(write_config) -> None:
    """Slave 2 reads two holding ranges merged into one request it refuses (exception 2)."""
    merged = f"""
[buses.line-1]
port = "{{path}}"
baudrate = 19200
[devices.rtu-2]
type = "modbus_rtu"
bus = "line-1"
unit_id = 2
zone = "cold-1"
poll_interval_secs = {POLL_SECS}
max_gap = 100
points.temperature = {{ table = "holding", address = 100, type = "int16", unit = "Cel" }}
points.uptime = {{ table = "holding", address = 200, type = "uint32", monitored = false }}
"""

    async def main() -> Path:
        async with ModbusRtuSimulator() as sim:
            extra = merged.replace("{path}", sim.device_path)
            config = write_config(modbus=False, extra_devices=extra)
            async with Running(config) as agent:
                await until(lambda: agent.pollers[0].polls >= 3, what="3 polls")
        return config

    records = exported(asyncio.run(main()))
    assert {r["quality"] for r in _readings(records, "rtu-2")} == {"good"}
    splits = [r["data"] for r in records if r["data"].get("event") == "modbus_plan_split"]
    assert len(splits) == 1, "learnt once"
    assert splits[0]["into"] == ["100..100", "200..201"]


def test_an_unpluggable_port_is_each_slaves_offline_episode(write_config, tmp_path: Path) -> None:
    config = write_config(modbus=False, extra_devices=_bus(str(tmp_path / "ttyUSB9")))

    async def main() -> None:
        async with Running(config) as agent:
            await until(lambda: not any(p.online for p in agent.pollers), what="all offline")

    asyncio.run(main())
    records = exported(config)
    for device in ("rtu-1", "rtu-2", "rtu-3"):
        offline = [r for r in records if r["device"] == device and r["kind"] == "audit"]
        assert [r["data"]["event"] for r in offline] == ["device_offline"]
        assert "ttyUSB9" in offline[0]["data"]["error"]


@pytest.mark.parametrize(
    ("change", "where", "why"),
    [
        ('bus = "line-1"', "devices.rtu-1.bus", "unknown bus 'line-2'"),
        ("unit_id = 2", "devices.rtu-2.unit_id", "slave 1 on bus 'line-1' is already"),
    ],
)
def test_bus_config_errors(write_config, change: str, where: str, why: str) -> None:
    text = _bus("/dev/ttyUSB0")
    if "bus" in change:
        text = text.replace(change, 'bus = "line-2"', 1)
    else:
        text = text.replace(change, "unit_id = 1", 1)
    config = write_config(modbus=False, extra_devices=text)
    result = CliRunner().invoke(app, ["config", "validate", str(config)])
    assert result.exit_code == 2
    assert where in result.output
    assert why in result.output


def test_a_port_opened_twice_is_a_config_error(write_config) -> None:
    text = _bus("/dev/ttyUSB0") + '\n[buses.line-2]\nport = "/dev/ttyUSB0"\n'
    config = write_config(modbus=False, extra_devices=text)
    result = CliRunner().invoke(app, ["config", "validate", str(config)])
    assert result.exit_code == 2
    assert "buses.line-2.port" in result.output
    assert "already used by buses.line-1" in result.output


def test_line_settings_the_port_refuses_are_named(write_config) -> None:
    async def main() -> Path:
        async with ModbusRtuSimulator() as sim:
            text = _bus(sim.device_path, parity="even")
            config = write_config(modbus=False, extra_devices=text)
            async with Running(config) as agent:
                await until(lambda: not any(p.online for p in agent.pollers), what="all offline")
        return config

    records = exported(asyncio.run(main()))
    offline = [r["data"] for r in records if r["data"].get("event") == "device_offline"]
    assert len(offline) == 3
    assert "refuses 19200 baud, 8 data bits, parity even, 1 stop bit(s)" in offline[0]["error"]
