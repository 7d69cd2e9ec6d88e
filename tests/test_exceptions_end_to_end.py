"""Custody exceptions end to end: scans from the scanner simulators over TCP, judged against the
product master and hold list the moment they are sealed, sealed as alarms naming lot, product,
zone and required profile; acknowledged through the CLI."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from gxpgate.agent.cli.main import app
from gxpgate.simulators.scanner_sim import DOCK_RECEIVING, GS, BarcodeScannerSimulator, Scan
from tests.running import Running, exported, until

runner = CliRunner()
WAIT = 20.0
GTIN_A, LOT_A = "10614141000019", "(01)10614141000019(10)LOT-A1"
GTIN_B, LOT_B = "10614141000026", "(01)10614141000026(10)LOT-B7"
CASE_A = next(s for s in DOCK_RECEIVING if s.name == "case-a1-1001")
CASE_A2 = next(s for s in DOCK_RECEIVING if s.name == "case-a1-1002")
CASE_B = next(s for s in DOCK_RECEIVING if s.name == "case-b7-2001")
PALLET_1 = next(s for s in DOCK_RECEIVING if s.name == "pallet-1")
PALLET_2 = next(s for s in DOCK_RECEIVING if s.name == "pallet-2")

PRODUCTS = f"""
[[products.items]]
gtin = "{GTIN_A}"
profile = "refrigerated"
name = "Vaccine A"
flags = ["do_not_freeze"]

[[products.items]]
gtin = "{GTIN_B}"
profile = "refrigerated"
name = "Insulin B"

[[hold_list.items]]
gtin = "{GTIN_B}"
lot = "LOT-B7"
reason = "QA hold, deviation DEV-2026-114"
"""


def scanner(name: str, sim: BarcodeScannerSimulator, zone: str, step: str) -> str:
    return f"""
[devices.{name}]
type = "barcode_scanner"
transport = "tcp"
host = "{sim.host}"
port = {sim.port}
zone = "{zone}"
biz_step = "{step}"
reconnect_max_secs = 0.5
"""


def case(gtin: str, lot: str, expiry: datetime, serial: str) -> Scan:
    yymmdd = expiry.strftime("%y%m%d")
    return Scan(
        f"case-{lot}-{serial}",
        f"01{gtin}17{yymmdd}10{lot}".encode() + GS + f"21{serial}".encode(),
        "]d2",
        f"(01){gtin}(17){yymmdd}(10){lot}(21){serial}",
    )


def alarms(config: Path) -> list[dict[str, Any]]:
    return [r for r in exported(config) if r["kind"] == "alarm"]


def sealed_at(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(record["at"].replace("Z", "+00:00"))


def test_wrong_zone_put_away_alarms_within_a_second_and_clears_when_moved(
    write_config: Any,
) -> None:
    async def scenario() -> Path:
        async with (
            BarcodeScannerSimulator("tcp") as dock,
            BarcodeScannerSimulator("tcp") as room_door,
            BarcodeScannerSimulator("tcp") as cold_door,
        ):
            config = write_config(
                modbus=False,
                extra_devices=PRODUCTS
                + scanner("dock", dock, "ambient", "receiving")
                + scanner("room-door", room_door, "ambient", "storing")
                + scanner("cold-door", cold_door, "cold-1", "storing"),
            )
            async with Running(config) as agent:
                for sim in (dock, room_door, cold_door):
                    await sim.wait_for_clients(1, WAIT)
                assert agent.alarms is not None
                service = agent.alarms
                judged = service.engine.judged_through
                await dock.play([CASE_A])
                # Judged (and any alarm queued) once judged_through passes the scan's record;
                # the half second after is the window in which nothing may be sealed.
                await until(lambda: service.engine.judged_through > judged, WAIT, "judged")
                await asyncio.sleep(0.5)
                assert service.sealed_alarms == 0  # receiving at the dock is no exception
                await room_door.play([CASE_A])  # a 2–8 °C product into a 15–30 °C room
                await until(lambda: service.sealed_alarms >= 1, WAIT, "wrong-zone alarm")
                await dock.play([CASE_A2])
                await room_door.play([CASE_A2])  # more of the lot: the same alarm goes on
                await cold_door.play([CASE_A2])  # part of it put right
                assert agent.lots is not None
                register = agent.lots.register
                await until(lambda: len(register.in_zone("cold-1")) == 2, WAIT, "one case moved")
                await asyncio.sleep(0.5)  # the window in which a wrong clearing would be sealed
                assert service.sealed_alarms == 1  # the rest of the lot is still in the room
                await cold_door.play([CASE_A])
                await until(lambda: service.sealed_alarms >= 2, WAIT, "wrong-zone cleared")
            return config

    config = asyncio.run(scenario())
    records = exported(config)
    put_away = next(r for r in records if r["kind"] == "custody" and r["device"] == "room-door")
    active, cleared = [r for r in records if r["kind"] == "alarm"]
    assert 0 <= (sealed_at(active) - sealed_at(put_away)).total_seconds() <= 1.0
    data = active["data"]
    assert (data["kind"], data["state"], data["severity"]) == ("wrong_zone", "active", "alarm")
    assert data["route"] == "warehouse"
    assert active["zone"] == "ambient"
    assert active["device"] == "room-door"
    assert data["lots"] == [LOT_A]
    detail = data["detail"]
    assert detail["lot"] == LOT_A
    assert detail["product"] == "Vaccine A"
    assert detail["gtin"] == GTIN_A
    assert detail["required_profile"] == "refrigerated"
    assert detail["zone_profile"] == "controlled-room"
    assert detail["scan_seq"] == put_away["seq"]
    assert "2 to 8 °C" in detail["reason"]
    assert cleared["data"]["alarm_id"] == data["alarm_id"]
    assert cleared["data"]["state"] == "cleared"


def test_expired_expiring_held_and_unreceived_scans(write_config: Any) -> None:
    today = datetime.now(UTC)
    expired = case(GTIN_A, "OLD-1", today - timedelta(days=2), "1")
    expiring = case(GTIN_A, "SOON-1", today + timedelta(days=10), "2")
    fine = case(GTIN_A, "FINE-1", today + timedelta(days=400), "3")

    async def scenario() -> Path:
        async with (
            BarcodeScannerSimulator("tcp") as dock,
            BarcodeScannerSimulator("tcp") as outbound,
        ):
            config = write_config(
                modbus=False,
                extra_devices=PRODUCTS
                + scanner("dock", dock, "ambient", "receiving")
                + scanner("outbound", outbound, "ambient", "shipping"),
            )
            async with Running(config) as agent:
                await dock.wait_for_clients(1, WAIT)
                await outbound.wait_for_clients(1, WAIT)
                assert agent.alarms is not None
                service = agent.alarms
                await dock.play([expired, expiring, fine, PALLET_2, CASE_B])
                await until(lambda: service.sealed_alarms >= 2, WAIT, "expiry alarms")
                # Held lot shipped; a pallet never received shipped; a received one shipped.
                await outbound.play([CASE_B, PALLET_1, PALLET_2])
                await until(lambda: service.sealed_alarms >= 4, WAIT, "hold and receipt alarms")
                views = {v.rule.split(".")[1]: v for v in service.engine.alarms()}
                acked = await asyncio.to_thread(
                    runner.invoke,
                    app,
                    ["alarms", "ack", views["expired"].alarm_id, "--by", "qa.anna",
                     "--comment", "lot rejected, returned to supplier", "--config", str(config)],
                )  # fmt: skip
                assert acked.exit_code == 0, acked.output
                await until(lambda: service.sealed_alarms >= 6, WAIT, "acknowledged and over")
                assert {v.rule.split(".")[1] for v in service.engine.alarms()} == {
                    "expiring", "on_hold", "not_received",
                }  # fmt: skip
            return config

    config = asyncio.run(scenario())
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for record in alarms(config):
        by_kind.setdefault(record["data"]["kind"], []).append(record["data"])
    assert sorted(by_kind) == ["expired", "expiring", "not_received", "on_hold"]
    (exp_active, exp_acked, exp_over) = by_kind["expired"]
    assert [exp_active["state"], exp_acked["state"], exp_over["state"]] == [
        "active", "acknowledged", "cleared",
    ]  # fmt: skip
    assert exp_active["severity"] == "alarm"
    assert exp_active["route"] == "quality"
    assert exp_active["lots"] == [f"(01){GTIN_A}(10)OLD-1"]
    assert exp_active["detail"]["days_left"] == -2
    assert exp_active["detail"]["product"] == "Vaccine A"
    assert exp_acked["by"] == "qa.anna"
    (soon,) = by_kind["expiring"]
    assert soon["severity"] == "warning"
    assert soon["detail"]["days_left"] == 10
    assert soon["lots"] == [f"(01){GTIN_A}(10)SOON-1"]
    (held,) = by_kind["on_hold"]
    assert held["lots"] == [LOT_B]
    assert held["route"] == "release"
    assert held["detail"]["reason"] == "QA hold, deviation DEV-2026-114"
    assert held["detail"]["step"] == "shipping"
    (unreceived,) = by_kind["not_received"]
    assert unreceived["lots"] == ["(00)306141410000001010"]  # pallet 1 only: pallet 2 came in
    assert unreceived["route"] == "logistics"
