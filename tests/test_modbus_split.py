"""A device that refuses reads spanning unmapped registers (exception 2): the merged block is split
down to what the device accepts, learnt once, kept across reconnects and put on record.

The bundled simulator is such a device: any read touching an unmapped register gets exception 2
(its holding map is 100-103 and 200-201). ``max_gap = 100`` merges the two ranges into one
request, as the default ``max_gap`` does across smaller holes on real devices."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gxpgate.agent.cli.main import app
from gxpgate.drivers.base import DeviceUnreachable, Sample
from gxpgate.drivers.modbus_common import RESPLIT_EVERY
from gxpgate.drivers.modbus_model import ModbusTcpDevice
from gxpgate.drivers.modbus_tcp import ModbusTcpSource
from gxpgate.simulators.modbus_sim import ModbusSimulator

from .running import Running, exported, until

POINTS = {
    "temperature_x10": {"table": "holding", "address": 100, "type": "int16", "scale": 0.1},
    "humidity_x10": {"table": "holding", "address": 101, "type": "uint16", "scale": 0.1},
    "temperature": {"table": "holding", "address": 102, "type": "float32", "word_order": "little"},
    "unmapped": {"table": "holding", "address": 150, "type": "int16"},
    "uptime": {"table": "holding", "address": 200, "type": "uint32"},
}
for _spec in POINTS.values():  # registers of a test map, watched by no rule on purpose
    _spec["monitored"] = False
LEARNT = ["100..101", "102..103", "150..150", "200..201"]


def _source(port: int, unit: int = 1) -> ModbusTcpSource:
    config = ModbusTcpDevice.model_validate(
        {
            "type": "modbus_tcp",
            "host": "127.0.0.1",
            "port": port,
            "unit_id": unit,
            "zone": "cold-1",
            "max_gap": 100,
            "points": POINTS,
        }
    )
    return ModbusTcpSource("strict", config)


async def _counted_read(sim: ModbusSimulator, source: ModbusTcpSource) -> tuple[list[Sample], int]:
    before = sim.requests_served
    samples = await source.read()
    return samples, sim.requests_served - before


def test_a_refused_block_is_split_learnt_and_kept_across_reconnects() -> None:
    async def main() -> None:
        async with ModbusSimulator() as sim, _source(sim.port) as source:
            assert [(r.start, r.count) for r in source.plan.requests] == [(100, 102)]
            samples, requests = await _counted_read(sim, source)
            quality = {s.point: s.quality for s in samples}
            assert quality == {
                "temperature_x10": "good",
                "humidity_x10": "good",
                "temperature": "good",
                "unmapped": "bad",
                "uptime": "good",
            }
            bad = next(s for s in samples if s.point == "unmapped")
            assert bad.data["error"] == "Modbus exception 2 (illegal data address)"
            assert requests == 7  # the block, then its halves down to what the device accepts
            (event,) = source.drain_events()
            assert event.data == {
                "event": "modbus_plan_split",
                "table": "holding",
                "block": "100..201",
                "into": LEARNT,
                "error": "Modbus exception 2 (illegal data address)",
            }
            assert [s.point for s in samples] == list(POINTS)

            samples, requests = await _counted_read(sim, source)
            assert requests == len(LEARNT), "the learnt plan, not the split again"
            assert [s.quality for s in samples].count("good") == 4
            assert source.drain_events() == []

            sim.set_fault(1, "drop_connection")
            with pytest.raises(DeviceUnreachable):
                await source.read()
            sim.set_fault(1, None)
            samples, requests = await _counted_read(sim, source)
            assert requests == len(LEARNT), "kept across the reconnect"
            assert [s.quality for s in samples].count("good") == 4
            assert source.drain_events() == []
            assert "  holding 200..201: uptime" in source.describe()

    asyncio.run(main())


def test_a_device_refusing_everything_is_not_split_at_every_poll() -> None:
    async def main() -> None:
        async with ModbusSimulator() as sim, _source(sim.port) as source:
            sim.set_fault(1, "exception", exception_code=2)  # a wrong map or unit id
            samples, requests = await _counted_read(sim, source)
            assert {s.quality for s in samples} == {"bad"}
            assert requests == 9, "split down to every point once"
            assert source.drain_events() == [], "nothing learnt"
            for _ in range(RESPLIT_EVERY - 1):
                samples, requests = await _counted_read(sim, source)
                assert requests == 1, "the whole block only"
            sim.set_fault(1, None)
            samples, requests = await _counted_read(sim, source)
            assert requests == 1 + 6, "split again after RESPLIT_EVERY refusals, learnt now"
            assert [s.quality for s in samples].count("good") == 4
            assert [e.data["into"] for e in source.drain_events()] == [LEARNT]

    asyncio.run(main())


def _toml_points() -> str:
    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return f'"{v}"' if isinstance(v, str) else str(v)

    return "".join(
        f"points.{name} = {{ {', '.join(f'{k} = {value(v)}' for k, v in spec.items())} }}\n"
        for name, spec in POINTS.items()
    )


def test_the_split_is_sealed_once_and_the_points_read_good(write_config: Any) -> None:
    device = """
[devices.strict]
type = "modbus_tcp"
host = "127.0.0.1"
port = {port}
zone = "cold-1"
poll_interval_secs = 0.2
max_gap = 100
""" + _toml_points()

    async def main() -> Path:
        async with ModbusSimulator() as sim:
            config = write_config(
                modbus=False, extra_devices=device.replace("{port}", str(sim.port))
            )
            async with Running(config) as agent:
                (poller,) = agent.pollers
                await until(lambda: poller.polls >= 3, what="3 polls")
        return config

    records = exported(asyncio.run(main()))
    audits = [r["data"] for r in records if r["kind"] == "audit" and r["device"] == "strict"]
    assert [a["event"] for a in audits] == ["modbus_plan_split"]
    assert audits[0]["into"] == LEARNT
    readings = [r for r in records if r["kind"] == "reading" and r["device"] == "strict"]
    bad = {r["point"] for r in readings if r["quality"] == "bad"}
    assert bad == {"unmapped"}


def test_devices_test_shows_the_split(write_config: Any) -> None:
    runner = CliRunner()
    device = (
        '[devices.strict]\ntype = "modbus_tcp"\nhost = "127.0.0.1"\nport = {port}\n'
        'zone = "cold-1"\nmax_gap = 100\n'
    ) + _toml_points()

    async def main() -> None:
        async with ModbusSimulator() as sim:
            extra = device.replace("{port}", str(sim.port))
            config = write_config(modbus=False, extra_devices=extra)
            args = ["devices", "test", "--config", str(config)]
            result = await asyncio.to_thread(runner.invoke, app, args)
            assert result.exit_code == 0, result.output  # four of five points read
            assert "  holding 100..201: temperature_x10, humidity_x10, temperature" in result.output
            assert (
                "  modbus_plan_split: table holding, block 100..201, into ['100..101', '102..103',"
                in result.output
            )

    asyncio.run(main())
