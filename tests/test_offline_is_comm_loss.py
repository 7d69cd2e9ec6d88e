"""One offline device raises one alarm, communication loss (issue 14 item 18); a sensor fault
is a device that answers with bad values."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gxpgate.agent.service.runtime import Agent
from gxpgate.simulators.modbus_sim import ModbusSimulator

from .running import Running, exported, until

COLD_PROBE = """
[devices.cold-probe]
type = "modbus_tcp"
host = "127.0.0.1"
port = {port}
unit_id = 1
zone = "cold-1"
poll_interval_secs = 0.1
timeout_ms = 200
reconnect_max_secs = 0.2
points.temperature = {{ table = "input", address = 0, type = "float32", unit = "Cel" }}
"""


def active(agent: Agent, kind: str, states: tuple[str, ...] = ("active",)) -> bool:
    assert agent.alarms is not None
    return any(
        v.rule == f"cold-probe.temperature.{kind}" and v.state in states
        for v in agent.alarms.engine.alarms()
    )


def test_an_offline_device_is_comm_loss_only_and_bad_answers_a_sensor_fault(
    tmp_path: Path, write_config
) -> None:
    async def main() -> None:
        async with ModbusSimulator() as sim:
            config = write_config(modbus=False, extra_devices=COLD_PROBE.format(port=sim.port))
            async with Running(config) as agent:
                poller = agent.pollers[0]
                await until(lambda: poller.polls >= 3, what="first polls")
                sim.set_fault(1, "no_answer")
                await until(lambda: active(agent, "comm_loss"), 30, "the comm-loss alarm")
                polls = poller.polls
                await until(lambda: poller.polls >= polls + 10, 30, "more offline polls")
                pending_or_active = ("pending", "active")
                assert not active(agent, "sensor_fault", pending_or_active), "offline: no fault"
                sim.set_fault(1, "exception", exception_code=4)
                await until(lambda: active(agent, "sensor_fault"), 30, "the sensor-fault alarm")
        rules = {
            r["data"]["rule"].rsplit(".", 1)[1]
            for r in exported(config)
            if r["kind"] == "alarm" and r["data"]["state"] == "active"
        }
        assert rules == {"comm_loss", "sensor_fault"}

    asyncio.run(main())
