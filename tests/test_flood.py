"""A flooding scanner does not starve the gateway (issue 14 item 8).

A barcode scanner on real TCP sends 20,000 distinct scans as fast as the socket takes them,
beside a Modbus device polled ten times a second: the Modbus device keeps its rate, no
communication-loss alarm is raised, every scan is accounted for (sealed, or counted in a
``scan_overflow`` audit record), and the agent stops promptly afterwards.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gxpgate.simulators.modbus_sim import ModbusSimulator

from .running import Running, exported, until

SCANS = 20_000

COLD_PROBE = """
[devices.cold-probe]
type = "modbus_tcp"
host = "127.0.0.1"
port = {modbus}
unit_id = 1
zone = "cold-1"
poll_interval_secs = 0.1
timeout_ms = 300
points.temperature = {{ table = "input", address = 0, type = "float32", unit = "Cel" }}

[devices.dock-scanner]
type = "barcode_scanner"
transport = "tcp"
host = "127.0.0.1"
port = {scanner}
zone = "cold-1"
biz_step = "receiving"
"""


def test_a_scanner_flood_is_throttled_counted_and_starves_nothing(
    tmp_path: Path, write_config
) -> None:
    sent = 0
    flooded = asyncio.Event()

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        if sent == 0:
            for start in range(0, SCANS, 500):
                writer.writelines(
                    f"(01)10614141000019(21)F{n:07d}\r\n".encode()
                    for n in range(start, start + 500)
                )
                await writer.drain()
                sent += 500
            flooded.set()
        await reader.read()  # then quiet, until the gateway closes
        writer.close()

    async def main() -> float:
        scanner = await asyncio.start_server(flood, "127.0.0.1", 0)
        port = scanner.sockets[0].getsockname()[1]
        async with ModbusSimulator() as sim:
            extra = COLD_PROBE.format(modbus=sim.port, scanner=port)
            config = write_config(modbus=False, extra_devices=extra)
            runner = Running(config)
            async with runner as agent:
                probe = next(p for p in agent.pollers if p.device == "cold-probe")
                before, started = probe.polls, time.monotonic()
                await asyncio.wait_for(flooded.wait(), 60)
                await asyncio.sleep(2.0)  # a counted window: the flood and its aftermath
                rate = (probe.polls - before) / (time.monotonic() - started)
                streamer = next(p for p in agent.pollers if p.device == "dock-scanner")
                await until(lambda: streamer.source.overflowed + streamer.observations >= SCANS)
                stop_started = time.monotonic()
            stop_secs = time.monotonic() - stop_started
        scanner.close()
        assert rate >= 8.0, f"the Modbus device polled {rate:.1f}/s during the flood (10/s)"
        return stop_secs

    stop_secs = asyncio.run(main())
    records = exported(tmp_path / "gxpgate.toml")
    sealed = sum(1 for r in records if r["kind"] == "custody")
    overflows = [r["data"] for r in records if r["data"].get("event") == "scan_overflow"]
    assert overflows, "the flood is on record"
    assert sealed + sum(o["count"] for o in overflows) == sent == SCANS, "every scan accounted"
    assert sealed < SCANS, "the flood was throttled"
    comm_loss = [r for r in records if r["kind"] == "alarm" and "comm_loss" in r["data"]["rule"]]
    assert not comm_loss, "the gateway's load is no device's silence"
    assert stop_secs < 10, f"stop took {stop_secs:.1f} s"
