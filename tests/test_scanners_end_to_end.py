"""Barcode scanners and RFID readers → agent → sealed custody records → the lot register.

The simulators speak over real pseudo-terminals (opened with pyserial, as a USB serial scanner
is) and real loopback TCP (the device is the server). First the driver on its own: connect,
read, garbage, a torn line, drop, reconnect, no device at all, repeated RFID reads. Then the
agent: scripted dock receiving and put-away become sealed custody records, faulty scans become
custody records with ``scan.error`` plus ``audit`` records, an RFID tag read many times within
the window is one record, and ``gxpgate lots where`` / ``lots in`` answer what the scripts did,
also after a restart and after the register file is lost. Readiness is a handshake (the
simulator's ``wait_for_clients``, the streamer's first batch), never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gxpgate.agent.cli.lots import app as lots_app
from gxpgate.agent.devices.scanners import CustodyStreamer
from gxpgate.agent.recording.sealing import Committed as Record
from gxpgate.agent.service.runtime import Agent
from gxpgate.drivers.base import DeviceUnreachable
from gxpgate.drivers.gs1 import escape_text
from gxpgate.drivers.scanner import (
    BarcodeRead,
    BarcodeScannerSource,
    LineFramer,
    Observation,
    ReadFilter,
    RfidReaderSource,
    TagRead,
)
from gxpgate.drivers.scanner_model import BarcodeScannerDevice, RfidReaderDevice
from gxpgate.simulators.scanner_sim import (
    DOCK_PORTAL_TAGS,
    DOCK_RECEIVING,
    FAULTY_SCANS,
    FAULTY_TAGS,
    PUT_AWAY,
    REFERENCE_TAGS,
    BarcodeScannerSimulator,
    RfidReaderSimulator,
    Transport,
)

from .running import Running, exported, observe, until

runner = CliRunner()
WAIT_SECS = 5.0
LOT_A = "(01)10614141000019(10)LOT-A1"
LOT_B = "(01)10614141000026(10)LOT-B7"
PALLET_1 = "(00)306141410000001010"
PALLET_2 = "(00)306141410000001027"
CASES = [f"(01)10614141000019(21){s}" for s in ("1001", "1002", "1003")] + [
    f"(01)10614141000026(21){s}" for s in ("2001", "2002")
]


# --------------------------------------------------------------------------- driver helpers


def barcode_config(sim: BarcodeScannerSimulator | None = None, **fields: Any) -> Any:
    return BarcodeScannerDevice.model_validate(
        {"type": "barcode_scanner", "zone": "dock", "biz_step": "receiving"}
        | _transport(sim)
        | fields
    )


def rfid_config(sim: RfidReaderSimulator | None = None, **fields: Any) -> Any:
    return RfidReaderDevice.model_validate(
        {"type": "rfid_reader", "zone": "dock", "biz_step": "receiving"} | _transport(sim) | fields
    )


def _transport(sim: BarcodeScannerSimulator | RfidReaderSimulator | None) -> dict[str, Any]:
    if sim is None:
        return {"transport": "tcp", "host": "127.0.0.1", "port": free_port()}
    if sim.transport == "pty":
        return {"transport": "serial", "serial": {"port": sim.device_path, "baudrate": 9600}}
    return {"transport": "tcp", "host": sim.host, "port": sim.port}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def collect(stream: AsyncIterator[list[Observation]], count: int) -> list[Observation]:
    got: list[Observation] = []
    while len(got) < count:
        got += await asyncio.wait_for(anext(stream), WAIT_SECS)
    assert len(got) == count
    return got


def run(test: Any) -> None:
    async def main() -> None:
        await test()
        leftover = asyncio.all_tasks() - {asyncio.current_task()}
        assert not leftover, f"tasks left behind: {leftover}"

    asyncio.run(main())


# --------------------------------------------------------------------------- pure driver logic


def test_line_framer_terminators_blank_lines_and_runaway_lines() -> None:
    framer = LineFramer(b"\r\n", max_line=16)
    assert framer.feed(b"AB\r") == []
    assert framer.feed(b"\nCD\r\n\r\n  \r\nEF") == [(b"AB", None), (b"CD", None)]
    assert framer.flush() == b"EF"
    assert framer.flush() is None
    lines = framer.feed(b"0123456789ABCDEFG")
    assert len(lines) == 1
    assert lines[0][0] == b"0123456789ABCDEFG"
    assert "no line terminator within 16 bytes" in (lines[0][1] or "")
    assert LineFramer(b"\r").feed(b"A\r\nB\r") == [(b"A", None), (b"\nB", None)]


def test_read_filter_is_a_sliding_window_on_the_injected_clock() -> None:
    now = [0.0]
    reads = ReadFilter(5.0, clock=lambda: now[0])
    assert reads.admit("tag-1")
    for step in (1.0, 4.9, 4.9):  # read again and again, each within 5 s of the last
        now[0] += step
        assert not reads.admit("tag-1")
    assert reads.admit("tag-2")
    now[0] += 5.0  # out of the field for the whole window
    assert reads.admit("tag-1")
    assert reads.suppressed == 3
    assert ReadFilter(0.0).admit("x")
    assert ReadFilter(0.0).admit("x")


# --------------------------------------------------------------------------- driver over real links


@pytest.mark.parametrize("transport", ["pty", "tcp"])
def test_barcode_source_reads_scans_garbage_and_a_torn_line(transport: Transport) -> None:
    async def body() -> None:
        async with BarcodeScannerSimulator(transport) as sim:
            source = BarcodeScannerSource("dock-scanner", barcode_config(sim))
            async with source:
                stream = source.stream()
                assert await asyncio.wait_for(anext(stream), WAIT_SECS) == []
                if transport == "tcp":
                    await sim.wait_for_clients(1, WAIT_SECS)
                await sim.play(DOCK_RECEIVING)
                reads = await collect(stream, len(DOCK_RECEIVING))
                assert all(isinstance(r, BarcodeRead) and r.scan.ok for r in reads)
                assert [r.scan.hri for r in reads if isinstance(r, BarcodeRead)] == [
                    s.hri for s in DOCK_RECEIVING
                ]
                await sim.play(FAULTY_SCANS)
                faulty = await collect(stream, len(FAULTY_SCANS))
                errors = [r.scan.problem for r in faulty if isinstance(r, BarcodeRead)]
                assert sum(e is None for e in errors) == 1  # the plain Code 128 tote label
                assert "control character" in (errors[0] or "")
                assert "no read" in (errors[-1] or "")
                if transport == "tcp":
                    await sim.send_raw(b"]C10030614")
                    await sim.disconnect_clients()
                    torn = await collect(stream, 1)
                    assert isinstance(torn[0], BarcodeRead)
                    assert torn[0].scan.raw == "]C10030614"
                    assert "incomplete" in (torn[0].scan.error or "")
                    with pytest.raises(DeviceUnreachable, match="closed the connection"):
                        await asyncio.wait_for(anext(stream), WAIT_SECS)
                    again = source.stream()  # the agent's reconnect: a fresh stream
                    assert await asyncio.wait_for(anext(again), WAIT_SECS) == []
                    await sim.wait_for_clients(1, WAIT_SECS)
                    await sim.scan(DOCK_RECEIVING[0])
                    (after,) = await collect(again, 1)
                    assert isinstance(after, BarcodeRead)
                    assert after.scan.hri == DOCK_RECEIVING[0].hri
                    await again.aclose()
                await stream.aclose()
            # every whole line counted; the torn one came from the flush at the drop
            assert source.lines == 7 + 8 + (1 if transport == "tcp" else 0)

    run(body)


def test_serial_scanner_gone_and_no_device_at_all_are_unreachable(tmp_path: Path) -> None:
    async def body() -> None:
        sim = BarcodeScannerSimulator("pty")
        await sim.__aenter__()
        async with BarcodeScannerSource("dock-scanner", barcode_config(sim)) as source:
            stream = source.stream()
            assert await asyncio.wait_for(anext(stream), WAIT_SECS) == []
            await sim.__aexit__(None, None, None)  # the other side of the line goes away
            with pytest.raises(DeviceUnreachable, match="serial port"):
                await asyncio.wait_for(anext(stream), WAIT_SECS)
            await stream.aclose()
        serial = {"port": str(tmp_path / "ttyUSB9")}
        missing = barcode_config(None, transport="serial", host=None, port=None, serial=serial)
        async with BarcodeScannerSource("gone", missing) as nowhere:
            with pytest.raises(DeviceUnreachable, match="ttyUSB9"):
                await nowhere.read()
        async with BarcodeScannerSource("closed", barcode_config(None)) as closed:
            with pytest.raises(DeviceUnreachable, match=r"connect to 127\.0\.0\.1"):
                await anext(closed.stream())

    run(body)


@pytest.mark.parametrize("transport", ["pty", "tcp"])
def test_rfid_source_strips_the_pc_word_and_reports_a_tag_in_the_field_once(
    transport: Transport,
) -> None:
    async def body() -> None:
        async with RfidReaderSimulator(transport, pc_word=True) as sim:
            config = rfid_config(sim, strip_pc_word=True, dedupe_window_secs=60)
            source = RfidReaderSource("dock-portal", config)
            async with source:
                stream = source.stream()
                assert await asyncio.wait_for(anext(stream), WAIT_SECS) == []
                if transport == "tcp":
                    await sim.wait_for_clients(1, WAIT_SECS)
                await sim.play(DOCK_PORTAL_TAGS, times=10)
                await sim.play(FAULTY_TAGS, times=3)
                await sim.read(DOCK_PORTAL_TAGS[0], times=5)  # still in the field
                await sim.read(REFERENCE_TAGS[0])  # a marker: everything before it has arrived
                reads = await collect(stream, len(DOCK_PORTAL_TAGS) + len(FAULTY_TAGS) + 1)
                tags = [r.tag for r in reads if isinstance(r, TagRead)]
                assert [t.hex for t in tags[:7]] == [t.epc_hex for t in DOCK_PORTAL_TAGS]
                assert all(t.ok and t.pc == "3000" for t in tags[:7])
                assert [t.ok for t in tags[7:9]] == [False, False]
                assert tags[-1].pure_uri == "urn:epc:id:sgtin:0614141.812345.6789"
                assert source.lines == 7 * 10 + 2 * 3 + 5 + 1
                assert source.filter.suppressed == 7 * 9 + 2 * 2 + 5
                await stream.aclose()

    run(body)


# --------------------------------------------------------------------------- the agent


class Committed:
    """What the recorder has committed since attached: custody records and audit events."""

    def __init__(self, agent: Agent) -> None:
        self.custody = 0
        self.audits: Counter[str] = Counter()
        observe(agent, self.on_commit)

    def on_commit(self, facts: Sequence[Record]) -> None:
        for fact in facts:
            if fact.kind == "custody":
                self.custody += 1
            elif fact.kind == "audit":
                self.audits[str(fact.data.get("event"))] += 1


def streamer(agent: Agent, device: str) -> CustodyStreamer:
    found = next(p for p in agent.pollers if p.device == device)
    assert isinstance(found, CustodyStreamer)
    return found


def device_toml(name: str, kind: str, sim: Any, zone: str, step: str, extra: str = "") -> str:
    where = _transport(sim)
    if where["transport"] == "serial":
        link = f'transport = "serial"\nserial = {{ port = "{sim.device_path}", baudrate = 9600 }}'
    else:
        link = f'transport = "tcp"\nhost = "{sim.host}"\nport = {sim.port}'
    return (
        f'[devices.{name}]\ntype = "{kind}"\n{link}\nzone = "{zone}"\nbiz_step = "{step}"\n'
        f"reconnect_max_secs = 0.5\n{extra}\n"
    )


DOCK_ZONE = '[zones.dock]\nprofile = "unclassified"\n\n'


async def ready(agent: Agent, sim: Any, device: str) -> None:
    if sim.transport == "tcp":
        await sim.wait_for_clients(1, WAIT_SECS)
    else:
        await until(lambda: streamer(agent, device).batches >= 1, WAIT_SECS, f"{device} open")


def lots(*args: str, config: Path) -> Any:
    result = runner.invoke(lots_app, [*args, "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("transport", ["pty", "tcp"])
def test_receiving_and_put_away_become_custody_records_and_lot_locations(
    transport: Transport, write_config: Any, tmp_path: Path
) -> None:
    async def scenario() -> Path:
        async with (
            BarcodeScannerSimulator(transport) as dock,
            BarcodeScannerSimulator(transport) as cold,
        ):
            devices = device_toml(
                "dock-scanner", "barcode_scanner", dock, "dock", "receiving",
                'disposition = "in_progress"',
            ) + device_toml(
                "cold-scanner", "barcode_scanner", cold, "cold-1", "storing",
                'disposition = "sellable_not_accessible"',
            )  # fmt: skip
            config: Path = write_config(modbus=False, extra_devices=DOCK_ZONE + devices)
            async with Running(config) as agent:
                seen = Committed(agent)
                await ready(agent, dock, "dock-scanner")
                await ready(agent, cold, "cold-scanner")
                await dock.play(DOCK_RECEIVING)
                await until(lambda: seen.custody == 7, WAIT_SECS, "receiving sealed")
                await cold.play(PUT_AWAY)
                await until(lambda: seen.custody == 12, WAIT_SECS, "put-away sealed")
                await dock.play(FAULTY_SCANS)
                await until(lambda: seen.custody == 20, WAIT_SECS, "faulty scans sealed")
                await until(lambda: seen.audits["scan_invalid"] == 7, WAIT_SECS, "audits")
                assert agent.lots is not None
                assert agent.lots.failed is None
        return config

    async def main() -> None:
        config = await scenario()
        check_records(config)
        answers = check_lot_answers(config)
        async with Running(config):  # a restart: the register is kept, nothing to replay
            pass
        assert check_lot_answers(config) == answers
        for suffix in ("", "-wal", "-shm"):  # the register lost: rebuilt from the chain
            with contextlib.suppress(FileNotFoundError):
                (tmp_path / f"lots.db{suffix}").unlink()
        async with Running(config):
            pass
        assert check_lot_answers(config) == answers

    run(main)


def check_records(config: Path) -> None:
    records = exported(config)
    custody = [r for r in records if r["kind"] == "custody"]
    assert len(custody) == 20
    for record in custody:
        assert (record["point"], record["value"], record["unit"], record["quality"]) == (
            None,
            None,
            None,
            None,
        )
    receiving, put_away, faulty = custody[:7], custody[7:12], custody[12:]
    assert {(r["device"], r["zone"]) for r in receiving} == {("dock-scanner", "dock")}
    assert {(r["device"], r["zone"]) for r in put_away} == {("cold-scanner", "cold-1")}
    pallet = receiving[0]["data"]
    assert pallet["scan"] == {
        "raw": "]C100306141410000001010",
        "symbology": "]C1",
        "ai": {"00": "306141410000001010"},
    }
    event = pallet["epcis"]
    assert event["type"] == "ObjectEvent"
    assert event["eventTime"] == receiving[0]["at"]
    assert event["epcList"] == ["urn:epc:id:sscc:0614141.3000000101"]
    assert (event["action"], event["bizStep"], event["disposition"]) == (
        "OBSERVE",
        "receiving",
        "in_progress",
    )
    assert event["readPoint"] == {"id": "urn:gxpgate:gw-test:device:dock-scanner"}
    assert event["bizLocation"] == {"id": "urn:gxpgate:gw-test:zone:dock"}
    stored = put_away[0]["data"]["epcis"]
    assert stored["epcList"] == ["urn:epc:id:sgtin:0614141.100001.1001"]
    assert (stored["bizStep"], stored["disposition"]) == ("storing", "sellable_not_accessible")
    assert (stored["gxp:lot"], stored["gxp:expiry"]) == ("LOT-A1", "2027-03-31")
    assert all(r["at"] < p["at"] for r in receiving for p in put_away)

    errors = [r["data"]["scan"].get("error") for r in faulty]
    assert [e is None for e in errors].count(True) == 1  # the Code 128 tote label
    assert all(r["data"]["epcis"] is None for r in faulty)
    garbage = faulty[0]["data"]["scan"]
    assert garbage["raw"] == "\\x00ÿþ\\x9cX\\x81Ã(\\x1b[?"
    assert "control character" in garbage["error"]
    audits = [r for r in records if r["kind"] == "audit" and r["data"]["event"] == "scan_invalid"]
    assert [a["data"]["reason"] for a in audits] == [e for e in errors if e is not None]
    by_seq = {r["seq"]: r for r in records}
    for audit in audits:  # each audit directly follows its custody record
        assert by_seq[audit["seq"] - 1]["data"]["scan"]["error"] == audit["data"]["reason"]
        assert (audit["device"], audit["zone"]) == ("dock-scanner", "dock")


def check_lot_answers(config: Path) -> dict[str, Any]:
    records = [r for r in exported(config) if r["kind"] == "custody"]
    at = {(r["device"], r["data"]["scan"]["raw"]): r["at"] for r in records if r["data"]["epcis"]}

    def when(device: str, index: int, script: Any) -> str:
        scan = script[index]
        return at[(device, escape_text((scan.symbology or "") + scan.data.decode("latin-1")))]

    lot_a = lots("where", LOT_A, config=config)
    assert [(p["zone"], p["since"], p["until"]) for p in lot_a] == [
        ("dock", when("dock-scanner", 1, DOCK_RECEIVING), when("cold-scanner", 2, PUT_AWAY)),
        ("cold-1", when("cold-scanner", 0, PUT_AWAY), None),
    ]
    in_dock = lots("in", "dock", config=config)
    assert [(p["kind"], p["identifier"]) for p in in_dock] == [
        ("sscc", PALLET_1),
        ("sscc", PALLET_2),
    ]
    in_cold = lots("in", "cold-1", config=config)
    assert [p["identifier"] for p in in_cold] == [*CASES, LOT_A, LOT_B]
    put_away = datetime.fromisoformat(when("cold-scanner", 0, PUT_AWAY))
    earlier = (put_away - timedelta(microseconds=1)).astimezone(UTC).isoformat()
    assert lots("in", "cold-1", "--at", earlier, config=config) == []
    assert {p["identifier"] for p in lots("in", "dock", "--at", earlier, config=config)} == {
        PALLET_1,
        PALLET_2,
        LOT_A,
        LOT_B,
        *CASES,
    }
    # other spellings of the same things
    assert lots("where", "urn:epc:id:sscc:0614141.3000000101", config=config) == lots(
        "where", "306141410000001010", config=config
    )
    assert lots("where", "LOT-B7", config=config) == lots("where", LOT_B, config=config)
    table = runner.invoke(lots_app, ["where", LOT_A, "--config", str(config)])
    assert table.exit_code == 0, table.output
    assert f"{LOT_A} (lot): cold-1" in table.stdout
    assert "ZONE" in table.stdout
    bad = runner.invoke(lots_app, ["where", "(01)10614141000018(10)X", "--config", str(config)])
    assert bad.exit_code == 2
    assert "check digit" in bad.stderr
    unknown_zone = runner.invoke(lots_app, ["in", "attic", "--config", str(config)])
    assert unknown_zone.exit_code == 2
    bad_time = runner.invoke(lots_app, ["in", "dock", "--at", "noon", "--config", str(config)])
    assert bad_time.exit_code == 2
    return {"lot_a": lot_a, "dock": in_dock, "cold": in_cold}


def test_lots_cli_without_a_register_fails_and_does_not_create_one(
    write_config: Any, tmp_path: Path
) -> None:
    config = write_config(modbus=False)
    result = runner.invoke(lots_app, ["in", "cold-1", "--config", str(config)])
    assert result.exit_code == 1
    assert "no lot register yet" in result.stderr
    assert not (tmp_path / "lots.db").exists()


def test_rfid_portal_repeated_reads_are_one_record_and_a_drop_is_audited(
    write_config: Any,
) -> None:
    async def body() -> None:
        async with RfidReaderSimulator("tcp", pc_word=True) as portal:
            extra = "strip_pc_word = true\ndedupe_window_secs = 30"
            devices = device_toml("dock-portal", "rfid_reader", portal, "dock", "receiving", extra)
            config = write_config(modbus=False, extra_devices=DOCK_ZONE + devices)
            async with Running(config) as agent:
                seen = Committed(agent)
                await ready(agent, portal, "dock-portal")
                await portal.play(DOCK_PORTAL_TAGS, times=10)
                await portal.play(FAULTY_TAGS, times=3)
                await until(lambda: seen.custody == 9, WAIT_SECS, "portal reads sealed")
                await portal.read(DOCK_PORTAL_TAGS[0], times=5)  # still in the field
                await portal.read(REFERENCE_TAGS[0])
                await until(lambda: seen.custody == 10, WAIT_SECS, "marker sealed")
                await portal.disconnect_clients()
                await until(lambda: seen.audits["device_online"] == 1, WAIT_SECS, "reconnected")
                await portal.wait_for_clients(1, WAIT_SECS)
                await portal.read(REFERENCE_TAGS[1])
                await until(lambda: seen.custody == 11, WAIT_SECS, "read after reconnect")
                assert seen.audits["device_offline"] == 1
                assert seen.audits["scan_invalid"] == 2
        custody = [r for r in exported(config) if r["kind"] == "custody"]
        uris = [r["data"]["scan"]["uri"] for r in custody]
        assert uris[0] == "urn:epc:id:sscc:0614141.3000000101"
        assert uris[7:9] == [None, None]
        assert uris[9:] == [
            "urn:epc:id:sgtin:0614141.812345.6789",
            "urn:epc:id:sscc:0614141.1234567890",
        ]
        assert custody[0]["data"]["epcis"]["epcList"] == [uris[0]]
        assert "header 0xE2" in custody[7]["data"]["scan"]["error"]
        pallet = lots("where", "(00)306141410000001010", config=config)
        assert [(p["zone"], p["until"]) for p in pallet] == [("dock", None)]
        assert [p["since"] for p in pallet] == [custody[0]["at"]]

    run(body)
