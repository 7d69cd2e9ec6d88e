"""Time out of storage: the register's exposure projection over a real sealed chain.

Custody records come from the real custody builder and readings are sealed beside them into a
real outbox; the register reads them back from there as the agent's does, and an agent restart
is the register closed and opened again on the same files, replaying what was sealed meanwhile.
Times are fixed (one reading a minute), so every figure can be worked out by hand.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gxpgate.agent.custody.epcis import CustodyBuilder
from gxpgate.agent.custody.exposure import ExposureBook, union_secs
from gxpgate.agent.custody.lots import LotRegister
from gxpgate.agent.custody.report import lot_history
from gxpgate.agent.recording.sealing import Fact
from gxpgate.config import GatewayConfig, load_config
from gxpgate.config.policy_files import load_policy
from gxpgate.config.products import Policy
from gxpgate.simulators.scanner_sim import DOCK_RECEIVING

from .test_lots import Site, at, device

LOT_A = "(01)10614141000019(10)LOT-A1"
CASE = next(s for s in DOCK_RECEIVING if s.name == "case-a1-1001")
CASE_LINE = (CASE.symbology or "").encode() + CASE.data
MIN = 60.0

PROBES = """
[devices.probe-1]
type = "modbus_tcp"
host = "127.0.0.1"
zone = "cold-1"
poll_interval_secs = 60
points.temperature = { table = "input", address = 0, type = "float32", unit = "Cel" }

[devices.probe-3]
type = "modbus_tcp"
host = "127.0.0.1"
zone = "dock"
poll_interval_secs = 60
points.temperature = { table = "input", address = 0, type = "float32", unit = "Cel" }

[zones.dock]
profile = "controlled-room"

[[products.items]]
gtin = "10614141000019"
profile = "refrigerated"
name = "Vaccine A"
tos_allowance_hours = 1.0
flags = ["do_not_freeze"]

[exceptions]
tos_warn_share = 0.5
tos_alarm_share = 0.95
"""


class Gateway:
    """The site's chain and a register kept from it, restartable."""

    def __init__(self, tmp: Path, key: Ed25519PrivateKey, write_config: Any) -> None:
        loaded = load_config(write_config(modbus=False, extra_devices=PROBES))
        self.config: GatewayConfig = loaded.config
        self.policy: Policy = load_policy(loaded.config, loaded.path)
        self.site = Site(tmp / "buffer.db", key)
        # test_lots' builders, at this config's zones.
        self.site.builders["dock"] = CustodyBuilder(
            "gw-test", "dock", device("barcode", "dock", "receiving")
        )
        self.site.builders["cold"] = CustodyBuilder(
            "gw-test", "cold-door", device("barcode", "cold-1", "storing")
        )
        self.path = tmp / "lots.db"
        self.now = 0.0
        self.register = self._open()

    def _open(self) -> LotRegister:
        register = LotRegister.open(self.path)
        register.attach(ExposureBook(self.config, lambda: self.policy, clock=lambda: self.now))
        register.sync(self.site.outbox)
        return register

    def restart(self) -> None:
        self.register.close()
        self.register = self._open()

    def apply_new(self) -> None:
        self.register.sync(self.site.outbox)

    def reading(self, zone: str, when: datetime, value: float) -> None:
        device = "probe-1" if zone == "cold-1" else "probe-3"
        fact = Fact(
            "reading", when, zone=zone, device=device, point="temperature", value=value,
            unit="Cel", quality="good",
        )  # fmt: skip
        self.site.seal([fact])

    def used(self, when: datetime) -> float:
        assert self.register.book is not None
        return self.register.book.used_secs(LOT_A, when.timestamp())

    def check(self, when: datetime) -> list[str]:
        self.apply_new()
        assert self.register.book is not None
        return [e.kind for e in self.register.book.check(when.timestamp())]


@pytest.fixture
def gateway(
    tmp_path: Path, signing_key: tuple[Path, Ed25519PrivateKey], write_config: Any
) -> Iterator[Gateway]:
    gw = Gateway(tmp_path, signing_key[1], write_config)
    yield gw
    gw.register.close()
    gw.site.outbox.close()


def minutes(start: datetime, count: int) -> list[datetime]:
    return [start + timedelta(minutes=i) for i in range(count)]


def test_dock_dwell_across_a_restart_then_an_excursion_in_the_cold_room(gateway: Gateway) -> None:
    t0 = at(10, 0)
    gateway.site.scan("dock", CASE_LINE, t0)
    seen: dict[str, datetime] = {}
    for when in minutes(t0, 50):
        gateway.reading("dock", when + timedelta(seconds=30), 20.0)
        gateway.reading("cold-1", when + timedelta(seconds=30), 5.0)
        for kind in gateway.check(when + timedelta(seconds=45)):
            seen.setdefault(kind, when + timedelta(seconds=45))
        if when == t0 + timedelta(minutes=20):
            gateway.restart()  # the dock time goes on counting, agent or not
    gateway.site.scan("cold", CASE_LINE, t0 + timedelta(minutes=50))
    gateway.apply_new()
    # 50 minutes at a 15–30 °C dock for a 2–8 °C product: all of it counts.
    assert gateway.used(t0 + timedelta(minutes=50)) == pytest.approx(50 * MIN, abs=MIN)
    assert gateway.used(t0 + timedelta(minutes=55)) == pytest.approx(50 * MIN, abs=MIN)
    # The warning at half the hour's allowance, once; no alarm yet.
    assert set(seen) == {"tos_warning"}
    assert abs((seen["tos_warning"] - (t0 + timedelta(minutes=30))).total_seconds()) <= MIN

    # In the cold room: 5 °C for 10 minutes, 9.5 °C for 10, then 5 °C again.
    t1 = t0 + timedelta(minutes=51)
    temps = [5.0] * 10 + [9.5] * 10 + [5.0] * 10
    for when, value in zip(minutes(t1, 30), temps, strict=True):
        gateway.reading("cold-1", when, value)
        for kind in gateway.check(when + timedelta(seconds=1)):
            seen.setdefault(kind, when)
    end = t1 + timedelta(minutes=30)
    assert gateway.used(end) == pytest.approx(60 * MIN, abs=MIN)
    # The alarm at 95 % (57 minutes): 7 minutes into the excursion.
    assert abs((seen["tos_exhausted"] - (t1 + timedelta(minutes=17))).total_seconds()) <= MIN

    history = lot_history(
        gateway.register, LOT_A, gateway.config, gateway.policy.product("10614141000019"),
        end.timestamp(),
    )  # fmt: skip
    dock, cold = history.stays
    assert (dock.zone, dock.keeps, cold.zone, cold.keeps) == ("dock", False, "cold-1", True)
    assert dock.out_secs == pytest.approx(50 * MIN, abs=1)
    assert dock.readings == 50
    assert dock.min == dock.max == 20.0
    assert dock.mkt == pytest.approx(20.0, abs=0.01)
    assert cold.out_secs == pytest.approx(10 * MIN, abs=MIN)
    assert (cold.min, cold.max) == (5.0, 9.5)
    assert 5.0 < (cold.mkt or 0) < 9.5
    assert history.share == pytest.approx(1.0, abs=0.02)
    assert history.product == "Vaccine A"
    assert history.required_band == "2 to 8 °C"


def test_a_rebuilt_register_counts_the_same(gateway: Gateway, tmp_path: Path) -> None:
    t0 = at(10, 0)
    gateway.site.scan("dock", CASE_LINE, t0)
    for when in minutes(t0, 20):
        gateway.reading("cold-1", when, 9.0)
    gateway.site.scan("cold", CASE_LINE, t0 + timedelta(minutes=20))
    for when in minutes(t0 + timedelta(minutes=20), 10):
        gateway.reading("cold-1", when, 9.0 if when.minute < 25 else 5.0)
    gateway.apply_new()
    end = t0 + timedelta(minutes=30)
    before = gateway.used(end)
    assert before == pytest.approx(25 * MIN, abs=MIN)  # 20 at the dock, 5 too warm
    gateway.register.close()
    gateway.path.unlink()  # lost: rebuilt from the chain
    gateway.register = gateway._open()
    assert gateway.used(end) == pytest.approx(before, abs=1e-6)


def test_freezing_a_do_not_freeze_lot_alarms_at_once(gateway: Gateway) -> None:
    t0 = at(10, 0)
    gateway.site.scan("cold", CASE_LINE, t0)
    gateway.reading("cold-1", t0 + timedelta(minutes=1), 3.0)
    assert gateway.check(t0 + timedelta(minutes=1)) == []
    gateway.reading("cold-1", t0 + timedelta(minutes=2), -0.5)
    assert gateway.check(t0 + timedelta(minutes=2)) == ["freezing"]


def test_union_counts_overlapping_time_once() -> None:
    assert union_secs([(0, 10), (5, 15), (20, 30)]) == 25
    assert union_secs([(0, 10), (2, 3)]) == 10
    assert union_secs([]) == 0


# --------------------------------------------------------------------------- end to end

SECS_PRODUCTS = """
[[products.items]]
gtin = "10614141000019"
profile = "refrigerated"
name = "Vaccine A"
tos_allowance_hours = 0.0025   # 9 s
[exceptions]
tos_warn_share = 0.1           # 0.9 s
tos_alarm_share = 0.8          # 7.2 s
"""


def raised(service: Any, kind: str) -> list[Any]:
    """The lot's alarms of ``kind`` not over yet."""
    return [v for v in service.engine.alarms() if v.rule.startswith(f"exposure.{kind}.")]


def test_agent_counts_a_dock_dwell_across_its_restart_and_an_excursion(
    write_config: Any,
) -> None:
    """The agent on real sockets: received at the (15–30 °C) ambient dock, restarted, put away
    into cold-1 after ~5 s; a 9.5 °C excursion there of ~3 s takes the lot past its alarm
    share. ``gxpgate lots exposure`` tells the story."""
    from typer.testing import CliRunner

    from gxpgate.agent.cli.main import app
    from gxpgate.simulators.modbus_sim import ModbusSimulator
    from gxpgate.simulators.scanner_sim import BarcodeScannerSimulator

    from .running import Running, exported, until
    from .test_exceptions_end_to_end import scanner

    async def scenario() -> tuple[Path, float, float]:
        async with (
            ModbusSimulator() as modbus,
            BarcodeScannerSimulator("tcp") as dock,
            BarcodeScannerSimulator("tcp") as door,
        ):
            modbus.set_value(1, "temperature", 5.0)
            config = write_config(
                modbus.port,
                poll=0.1,
                extra_devices=SECS_PRODUCTS
                + scanner("dock", dock, "ambient", "receiving")
                + scanner("cold-door", door, "cold-1", "storing"),
            )
            async with Running(config) as agent:
                await dock.wait_for_clients(1, 20)
                await dock.play([CASE])
                received = time.monotonic()
                assert agent.alarms is not None
                first = agent.alarms
                await until(lambda: bool(raised(first, "tos_warning")), 20, "the warning")
                (warning,) = raised(first, "tos_warning")
                acked = await asyncio.to_thread(
                    CliRunner().invoke,
                    app,
                    ["alarms", "ack", warning.alarm_id, "--by", "qa.anna", "--comment",
                     "dock team told", "--config", str(config)],
                )  # fmt: skip
                assert acked.exit_code == 0, acked.output
                await until(lambda: not raised(first, "tos_warning"), 20, "acknowledged, over")
            async with Running(config) as agent:  # restarted with the lot on the dock
                await door.wait_for_clients(1, 20)
                assert agent.alarms is not None
                service = agent.alarms
                await asyncio.sleep(max(0.0, 5.0 - (time.monotonic() - received)))
                await door.play([CASE])
                dwell = time.monotonic() - received
                assert agent.lots is not None
                register = agent.lots.register
                await until(lambda: bool(register.in_zone("cold-1")), 20, "put away")
                await asyncio.sleep(1.0)
                modbus.set_value(1, "temperature", 9.5)
                hot = time.monotonic()
                await asyncio.sleep(3.0)
                modbus.set_value(1, "temperature", 5.0)
                excursion = time.monotonic() - hot
                await until(lambda: bool(raised(service, "tos_exhausted")), 20, "the alarm")
                await asyncio.sleep(1.0)
            return config, dwell, excursion

    config, dwell, excursion = asyncio.run(scenario())
    records = exported(config)
    # Only the lot's own alarms: at 0.1 s polls a loaded machine may also see a comm loss.
    kinds = [
        (r["data"]["kind"], r["data"]["state"])
        for r in records
        if r["kind"] == "alarm" and r["data"]["kind"].startswith("tos_")
    ]
    # Each once: the restarted agent found the warning due again, and knew it had been raised
    # (and was over: acknowledged, which ends it).
    assert kinds == [
        ("tos_warning", "active"), ("tos_warning", "acknowledged"), ("tos_warning", "cleared"),
        ("tos_exhausted", "active"),
    ]  # fmt: skip
    result = CliRunner().invoke(app, ["lots", "exposure", LOT_A, "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    history = json.loads(result.stdout)
    dock, cold = history["stays"]
    assert (dock["zone"], dock["keeps"], cold["zone"], cold["keeps"]) == (
        "ambient", False, "cold-1", True,
    )  # fmt: skip
    assert dock["out_secs"] == pytest.approx(dwell, abs=0.5)
    assert cold["out_secs"] == pytest.approx(excursion, abs=0.6)  # ± the 0.1 s poll, and the
    assert cold["max"] == 9.5  # Modbus round trips either side
    assert [
        (e["kind"], e["state"]) for e in history["exceptions"] if e["kind"].startswith("tos_")
    ] == kinds
    text = CliRunner().invoke(app, ["lots", "exposure", LOT_A, "--config", str(config)])
    assert text.exit_code == 0, text.output
    assert "Vaccine A" in text.stdout
    assert "of 0:00:09" in text.stdout
    assert "ambient" in text.stdout
    assert "(not kept)" in text.stdout


def test_exposure_cli_says_what_it_cannot_answer(gateway: Gateway, write_config: Any) -> None:
    from typer.testing import CliRunner

    from gxpgate.agent.cli.main import app

    config = write_config(modbus=False, extra_devices=PROBES, name="cli.toml")
    gateway.site.scan("dock", CASE_LINE, at(10, 0))
    gateway.apply_new()
    gateway.register.flush_book(force=True)

    def run(*args: str) -> Any:
        return CliRunner().invoke(app, ["lots", "exposure", *args, "--config", str(config)])

    sscc = run("306141410000001010")
    assert sscc.exit_code == 2
    assert "names a sscc, not a lot" in sscc.output
    unknown = run("(01)10614141000019(10)NEVER")
    assert unknown.exit_code == 0, unknown.output
    assert "never seen in a zone" in unknown.stdout
    untracked = run("(01)10614141000026(10)LOT-B7")
    assert "not in the product master" in untracked.stdout
    item = run("(01)10614141000019(21)1001")  # the case of LOT-A1 scanned at the dock
    assert item.exit_code == 0, item.output
    assert item.stdout.startswith(f"{LOT_A}: Vaccine A")
    assert "dock" in item.stdout
