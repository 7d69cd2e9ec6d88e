"""Modbus devices that answer wrongly (issue 14 items 3 and 15).

A rogue server on loopback answers with malformed frames (too few registers, another function
code, the wrong transaction id or unit, a truncated frame, a huge MBAP length, a stall
mid-frame): the driver turns each into ``bad`` readings or an unreachable device, never an
exception that reaches the agent; the agent keeps every other device at its rate. A device that
answers nothing but exceptions is *failing*: on record once, in the metrics, and ``devices
test`` exits 1.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gxpgate.agent.cli.main import app
from gxpgate.drivers.base import DeviceUnreachable
from gxpgate.drivers.modbus_model import ModbusTcpDevice
from gxpgate.drivers.modbus_tcp import ModbusTcpSource
from gxpgate.simulators.modbus_sim import ModbusSimulator

from .hostile import RogueModbus
from .running import Running, exported, until

POINTS = {
    "temperature": {"table": "input", "address": 0, "type": "float32", "unit": "Cel"},
    "humidity": {"table": "input", "address": 2, "type": "float32", "unit": "%"},
    "door_open": {"table": "discrete", "address": 0},
}


def device(port: int) -> ModbusTcpDevice:
    return ModbusTcpDevice.model_validate(
        {"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "unit_id": 1, "zone": "z",
         "timeout_ms": 300, "points": POINTS}
    )  # fmt: skip


@pytest.mark.parametrize("mode", RogueModbus.MODES)
def test_a_malformed_answer_is_bad_readings_or_unreachable_never_a_crash(mode: str) -> None:
    async def main() -> None:
        async with RogueModbus([mode], stall_secs=1.0) as rogue:
            source = ModbusTcpSource("rogue", device(rogue.port))
            async with source:
                for _ in range(2):  # the second read after whatever the first left behind
                    try:
                        samples = await asyncio.wait_for(source.read(), 10)
                    except DeviceUnreachable as exc:
                        samples = exc.samples
                    assert {s.point for s in samples} == set(POINTS)
                    assert all(s.quality == "bad" and s.value is None for s in samples), samples
                    assert all(s.data.get("error") for s in samples)
                    if mode in ("short", "wrong_fc"):
                        assert "malformed answer" in samples[0].data["error"]

    asyncio.run(main())


ROGUE = """
[devices.rogue]
type = "modbus_tcp"
host = "127.0.0.1"
port = {port}
unit_id = 1
zone = "cold-1"
poll_interval_secs = 0.1
timeout_ms = 200
reconnect_max_secs = 0.3
points.temperature = {{ table = "input", address = 0, type = "float32", unit = "Cel" }}
points.door_open = {{ table = "discrete", address = 0, monitored = false }}
"""


def test_a_rogue_device_leaves_the_others_at_their_rate(tmp_path: Path, write_config) -> None:
    async def main() -> None:
        async with ModbusSimulator() as sim, RogueModbus(stall_secs=0.5) as rogue:
            config = write_config(sim.port, poll=0.1, extra_devices=ROGUE.format(port=rogue.port))
            async with Running(config) as agent:
                task = next(t for t in asyncio.all_tasks() if t.get_name() == "device:rogue")
                await until(lambda: sum(rogue.served.values()) >= 3 * len(RogueModbus.MODES), 60)
                assert not task.done(), "the rogue device's task is alive"
                healthy = next(p for p in agent.pollers if p.device == "probe-1")
                before, started = healthy.polls, asyncio.get_running_loop().time()
                await asyncio.sleep(2.0)  # a counted window of the healthy device's polls
                rate = (healthy.polls - before) / (asyncio.get_running_loop().time() - started)
        assert set(rogue.served) == set(RogueModbus.MODES)
        assert rate >= 5.0, f"probe-1 polled {rate:.1f}/s beside the rogue (nominal 10/s)"
        records = exported(config)
        rogue_readings = [r for r in records if r["device"] == "rogue" and r["kind"] == "reading"]
        assert rogue_readings
        assert all(r["quality"] == "bad" and r["data"]["error"] for r in rogue_readings)
        assert any("malformed answer" in r["data"]["error"] for r in rogue_readings)
        good = [r for r in records if r["device"] == "probe-1" and r["quality"] == "good"]
        assert len(good) > 20

    asyncio.run(main())


WRONG_UNIT = """
[devices.wrong-unit]
type = "modbus_tcp"
host = "127.0.0.1"
port = {port}
unit_id = 1
zone = "cold-1"
poll_interval_secs = 0.1
timeout_ms = 300
points.temperature = {{ table = "input", address = 0, type = "float32", unit = "Cel" }}
"""


def test_a_device_answering_only_exceptions_is_failing_once_then_recovered(
    tmp_path: Path, write_config, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gxpgate.agent.devices.supervisor")

    async def main() -> None:
        async with ModbusSimulator() as sim:
            config = write_config(
                sim.port, modbus=False, extra_devices=WRONG_UNIT.format(port=sim.port)
            )
            sim.set_fault(1, "exception", exception_code=2)
            async with Running(config) as agent:
                poller = agent.pollers[0]
                await until(lambda: poller.polls >= 5, what="polls")
                assert poller.up is True, "it answers: not offline"
                assert poller.failing is not None
                assert "Modbus exception 2" in poller.failing
                health = agent.snapshot().devices[0]
                assert health.failing
                assert "Modbus exception 2" in (health.last_error or "")
                sim.set_fault(1, None)
                await until(lambda: poller.failing is None, what="recovery")
                assert agent.snapshot().devices[0].failing is False
        events = [
            r["data"] for r in exported(config)
            if r["kind"] == "audit" and r["device"] == "wrong-unit"
        ]  # fmt: skip
        assert [e["event"] for e in events] == ["device_failing", "device_recovered"]
        assert "illegal data address" in events[0]["error"]
        lines = [r.getMessage() for r in caplog.records if "device." in r.getMessage()]
        assert sum("device.failing" in m for m in lines) == 1, lines
        assert sum("device.recovered" in m for m in lines) == 1, lines

    asyncio.run(main())


def test_devices_test_exits_1_for_a_device_answering_only_exceptions(
    tmp_path: Path, write_config
) -> None:
    async def main() -> None:
        async with ModbusSimulator() as sim:
            config = write_config(
                sim.port, modbus=False, extra_devices=WRONG_UNIT.format(port=sim.port)
            )
            sim.set_fault(1, "exception", exception_code=11)
            failing = await asyncio.to_thread(
                CliRunner().invoke, app, ["devices", "test", "--config", str(config)]
            )
            sim.set_fault(1, None)
            healthy = await asyncio.to_thread(
                CliRunner().invoke, app, ["devices", "test", "--config", str(config)]
            )
        assert failing.exit_code == 1, failing.output
        assert "FAILING: Modbus exception 11" in failing.output
        assert healthy.exit_code == 0, healthy.output

    asyncio.run(main())
