"""Alarms end to end: Modbus simulator excursion → sealed alarm naming the lots the scanner put in
the zone → retained MQTT state on a real broker and the beacon coil → acknowledgement through
the control socket (the CLI) → cleared; the state survives a restart; outputs never block."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
from typer.testing import CliRunner

from gxpgate.agent.alarms.outputs import alarm_topic
from gxpgate.agent.cli.main import app
from gxpgate.agent.service.runtime import Agent
from gxpgate.simulators.modbus_sim import ModbusSimulator
from gxpgate.simulators.scanner_sim import DOCK_RECEIVING, PUT_AWAY, BarcodeScannerSimulator
from tests.broker import Broker, free_port, retained
from tests.running import GW, Running, exported, until

runner = CliRunner()
WAIT = 20.0
RULE = "probe-1.temperature.high"


def alarm_config(broker_port: int, coil: bool = True) -> str:
    """Zone cold-1 alarms at once above 8 °C (no delays) and clears below 7.5 °C."""
    coils = (
        '[[alarms.coils]]\ndevice = "probe-1"\naddress = 3\nwhen = "unacknowledged"\n'
        "refresh_secs = 0.5\n"
        if coil
        else ""
    )
    return f"""
[zones.cold-1.rules.temperature]
high = {{ limit = 8.0, hysteresis = 0.5 }}
on_delay_secs = 0
off_delay_secs = 0
rate = false
mkt = false
comm_loss = false

[alarms]
control_socket = "ctl.sock"
snapshot_secs = 1

[alarms.mqtt]
host = "127.0.0.1"
port = {broker_port}

{coils}"""


def scanners(dock: BarcodeScannerSimulator, door: BarcodeScannerSimulator) -> str:
    return f"""
[devices.dock-scanner]
type = "barcode_scanner"
transport = "tcp"
host = "{dock.host}"
port = {dock.port}
zone = "ambient"
biz_step = "receiving"
reconnect_max_secs = 0.5

[devices.cold-door]
type = "barcode_scanner"
transport = "tcp"
host = "{door.host}"
port = {door.port}
zone = "cold-1"
biz_step = "storing"
reconnect_max_secs = 0.5
"""


def alarm_records(config: Path) -> list[dict[str, Any]]:
    return [r for r in exported(config) if r["kind"] == "alarm"]


async def more_readings(agent: Agent, count: int) -> None:
    """Wait until ``count`` more records are sealed: polls went on, whatever they judged."""
    recorder = agent.recorder
    assert recorder is not None
    target = recorder.sealed + count
    await until(lambda: recorder.sealed >= target, WAIT, f"{count} more records")


async def cli(*args: str, config: Path) -> Any:
    # The CLI talks to the daemon with its own event loop: run it beside this one.
    return await asyncio.to_thread(runner.invoke, app, [*args, "--config", str(config)])


def test_excursion_alarm_names_the_lots_reaches_the_broker_and_is_acknowledged(
    write_config: Any, mqtt_broker: Broker
) -> None:
    async def scenario() -> Path:
        async with (
            ModbusSimulator() as modbus,
            BarcodeScannerSimulator("tcp") as dock,
            BarcodeScannerSimulator("tcp") as door,
        ):
            config = write_config(
                modbus.port,
                poll=0.1,
                extra_devices=scanners(dock, door) + alarm_config(mqtt_broker.port),
            )
            async with Running(config) as agent:
                await dock.wait_for_clients(1, WAIT)
                await door.wait_for_clients(1, WAIT)
                await dock.play(DOCK_RECEIVING)
                await door.play(PUT_AWAY)
                assert agent.lots is not None
                register = agent.lots.register
                await until(lambda: len(register.in_zone("cold-1")) == 7, WAIT, "put-away applied")
                assert agent.alarms is not None
                service = agent.alarms
                modbus.set_value(1, "temperature", 9.5)
                await until(lambda: service.sealed_alarms >= 1, WAIT, "alarm sealed")
                topic = alarm_topic(GW, "cold-1", RULE)
                assert service.outputs.mqtt is not None
                # Sealed is not yet delivered: read the broker's retained state after the PUBACK.
                assert await service.outputs.mqtt.wait_delivered(5)
                held = await retained(mqtt_broker, f"gxpgate/{GW}/alarms/#")
                assert set(held) == {topic}
                state = orjson.loads(held[topic])
                assert state["state"] == "active"
                assert state["zone"] == "cold-1"
                assert sorted(state["lots"]) == [
                    "(01)10614141000019(10)LOT-A1",
                    "(01)10614141000026(10)LOT-B7",
                ]
                await until(lambda: modbus.coil(1, 3), WAIT, "beacon coil on")

                listed = await cli("alarms", "list", "--json", config=config)
                assert listed.exit_code == 0, listed.output
                alarms = json.loads(listed.stdout)
                assert [(a["rule"], a["state"]) for a in alarms] == [(RULE, "active")]
                alarm_id = alarms[0]["alarm_id"]

                missing = await cli(
                    "alarms", "ack", alarm_id, "--by", "qa.anna", "--comment", " ", config=config
                )
                assert missing.exit_code == 2
                note = "door closed, product moved"
                acked = await cli(
                    "alarms", "ack", alarm_id, "--by", "qa.anna", "--comment", note, config=config
                )
                assert acked.exit_code == 0, acked.output
                assert "sealed as record" in acked.stdout
                again = await cli(
                    "alarms", "ack", alarm_id, "--by", "qa.ben", "--comment", "x", config=config
                )
                assert again.exit_code == 1
                assert "already acknowledged" in again.output
                await until(lambda: not modbus.coil(1, 3), WAIT, "beacon off once acknowledged")

                modbus.set_value(1, "temperature", 7.8)  # within the hysteresis: still active
                await more_readings(agent, 20)
                assert service.sealed_alarms == 2
                modbus.set_value(1, "temperature", 7.0)
                await until(lambda: service.sealed_alarms >= 3, WAIT, "alarm cleared")
                assert agent.alarms.outputs.mqtt is not None
                assert await agent.alarms.outputs.mqtt.wait_delivered(5)
                held = await retained(mqtt_broker, f"gxpgate/{GW}/alarms/#")
                assert orjson.loads(held[topic])["state"] == "cleared"
            return config

    config = asyncio.run(scenario())
    records = alarm_records(config)
    assert [r["data"]["state"] for r in records] == ["active", "acknowledged", "cleared"]
    active, ack, cleared = records
    assert {r["data"]["alarm_id"] for r in records} == {active["data"]["alarm_id"]}
    assert active["zone"] == "cold-1"
    assert active["device"] == "probe-1"
    assert active["data"]["rule"] == RULE
    assert active["data"]["severity"] == "alarm"
    assert {r["data"]["route"] for r in records} == {"quality"}  # the default for limits
    assert active["data"]["limit"] == 8.0
    assert active["data"]["value"] > 8.0
    assert "(01)10614141000019(10)LOT-A1" in active["data"]["lots"]
    assert (ack["data"]["by"], ack["data"]["comment"]) == ("qa.anna", "door closed, product moved")
    assert ack["data"]["os_user"]
    assert cleared["data"]["value"] <= 7.5
    audits = [r["data"] for r in exported(config) if r["kind"] == "audit"]
    acks = [a for a in audits if a["event"] == "alarm_acknowledged"]
    assert [(a["alarm_id"], a["by"]) for a in acks] == [(active["data"]["alarm_id"], "qa.anna")]


def test_an_active_alarm_survives_a_restart_and_clears_once(
    write_config: Any, tmp_path: Path
) -> None:
    dead_broker = free_port()  # nothing listens: the MQTT output fails, sealing does not wait

    async def scenario() -> Path:
        async with ModbusSimulator() as modbus:
            config = write_config(
                modbus.port, poll=0.1, extra_devices=alarm_config(dead_broker, coil=False)
            )
            modbus.set_value(1, "temperature", 9.5)
            async with Running(config) as agent:
                assert agent.alarms is not None
                service = agent.alarms
                await until(lambda: service.sealed_alarms >= 1, WAIT, "alarm sealed")
            modbus.set_value(1, "temperature", 6.0)
            async with Running(config) as agent:
                assert agent.alarms is not None
                service = agent.alarms
                await until(lambda: service.sealed_alarms >= 1, WAIT, "cleared after restart")
                await more_readings(agent, 20)  # and nothing more: no second "active"
            return config

    config = asyncio.run(scenario())
    records = alarm_records(config)
    assert [r["data"]["state"] for r in records] == ["active", "cleared"]
    assert records[0]["data"]["alarm_id"] == records[1]["data"]["alarm_id"]
    audits = [r["data"]["event"] for r in exported(config) if r["kind"] == "audit"]
    assert "alarm_output_failed" in audits
