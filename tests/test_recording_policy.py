"""``record = "interval"`` (issue 17): the same sample stream recorded both ways.

Three hours of a 1 s temperature probe in a refrigerated room (steady, a slow drift over the
8 °C limit long enough to alarm, a fast rise the rate rule catches, back to normal), and a lot
put away in the room mid-way and shipped later, go through the agent's own intake, recording
policy, recorder, alarm service and lot register, once with every sample sealed and once by
interval. The alarms, the rules' memory (rate window, rolling MKT), the lot's time out of
storage and its stay's readings count, minimum, maximum and MKT must come out the same, the
chain must verify, every alarm's triggering reading must be sealed, and the interval chain
must hold a small fraction of the readings.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gxpgate.agent.alarms.sampling import RecordingPolicy
from gxpgate.agent.alarms.service import AlarmService, build_engine
from gxpgate.agent.custody.epcis import CustodyBuilder
from gxpgate.agent.custody.exposure import ExposureBook
from gxpgate.agent.custody.lots import LotRegister
from gxpgate.agent.custody.report import lot_history
from gxpgate.agent.evidence import parse_time, verify_lines
from gxpgate.agent.recording.intake import Intake
from gxpgate.agent.recording.recorder import Recorder
from gxpgate.agent.recording.sealing import Fact, Sealer
from gxpgate.buffer import Outbox
from gxpgate.config import load_config
from gxpgate.config.policy_files import load_policy
from gxpgate.drivers.scanner import BarcodeRead, decode_scan
from gxpgate.simulators.scanner_sim import DOCK_RECEIVING
from tests.conftest import ConfigWriter

from .test_lots import device
from .test_offline_is_comm_loss import COLD_PROBE

GW = "gw-test"
START = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
SECONDS = 3 * 3600
LOT = "(01)10614141000019(10)LOT-A1"
CASE = next(s for s in DOCK_RECEIVING if s.name == "case-a1-1001")
CASE_LINE = (CASE.symbology or "").encode() + CASE.data

PROBE = """
[devices.probe-1]
type = "modbus_tcp"
host = "127.0.0.1"
zone = "cold-1"
poll_interval_secs = 1
{record}
points.temperature = {{ table = "input", address = 0, type = "float32", unit = "Cel" }}

[zones.dock]
profile = "controlled-room"

[[products.items]]
gtin = "10614141000019"
profile = "refrigerated"
name = "Vaccine A"
tos_allowance_hours = 4.0
"""
INTERVAL = 'record = "interval"\nrecord_interval_secs = 60\nrecord_deadband = 0.3'


def temperature(s: int) -> float:
    """The room over the three hours (°C): a small wiggle on every phase."""
    minute = s / 60
    wiggle = 0.08 * math.sin(s / 37) + 0.03 * math.sin(s / 7)
    if minute < 40:
        base = 5.0
    elif minute < 60:
        base = 5.0 + 3.6 * (minute - 40) / 20  # slow drift to 8.6 °C
    elif minute < 85:
        base = 8.6  # long enough over 8 °C for the 15-minute delay
    elif minute < 100:
        base = 8.6 - 3.6 * (minute - 85) / 15
    elif minute < 120:
        base = 5.0
    elif minute < 126:
        base = 5.0 + 0.9 * (minute - 120)  # a door left open: 0.9 °C a minute
    elif minute < 140:
        base = 10.4 - 5.4 * (minute - 126) / 14
    else:
        base = 5.0
    return round(base + wiggle, 3)


@dataclass
class Outcome:
    alarms: list[tuple[str, str, str, Any, Any]]
    readings: list[dict[str, Any]]
    memory: dict[str, Any]
    history: dict[str, Any]
    verified: bool
    moved_by_unsealed: int


def record_stream(
    tmp: Path, key: Ed25519PrivateKey, write_config: ConfigWriter, record: str
) -> Outcome:
    config_path = write_config(
        modbus=False, extra_devices=PROBE.format(record=record), name=f"{tmp.name}.toml"
    )
    loaded = load_config(config_path)
    cfg = loaded.config
    policy = load_policy(cfg, loaded.path)
    outbox = Outbox(tmp / "buffer.db", GW)
    put_away = CustodyBuilder(GW, "cold-scanner", device("barcode", "cold-1", "storing"))
    shipping = CustodyBuilder(GW, "ship-scanner", device("barcode", "dock", "shipping"))

    async def main() -> list[Fact]:
        engine = build_engine(cfg)
        recording = RecordingPolicy(cfg, engine)
        intake = Intake(stage=recording if recording.active else None)
        alarms = AlarmService(cfg, intake, engine=engine, clock=lambda: START.timestamp())
        recorder = Recorder(
            outbox, Sealer(key, GW, outbox.chain), intake,
            sample_listeners=[alarms.on_samples], commit_interval_secs=0.01,
        )  # fmt: skip
        task = asyncio.create_task(recorder.run())
        for s in range(SECONDS):
            when = START + timedelta(seconds=s)
            if s == 30 * 60 + 17:  # mid-way through an interval
                for fact in put_away.facts(BarcodeRead(when, decode_scan(CASE_LINE, when, None))):
                    await intake.put(fact)
            if s == 150 * 60 + 41:
                for fact in shipping.facts(BarcodeRead(when, decode_scan(CASE_LINE, when, None))):
                    await intake.put(fact)
            reading = Fact(
                "reading", when, zone="cold-1", device="probe-1", point="temperature",
                value=temperature(s), unit="Cel", quality="good",
            )  # fmt: skip
            await intake.put(reading)
            if s % 30 == 29:
                # A 1 s poll gives the recorder time to commit between readings; here the
                # stream waits for it every 30, so the rules are never far behind.
                while intake.queued or intake.committing:  # noqa: ASYNC110 (a test's pacing)
                    await asyncio.sleep(0.001)
        await intake.put(
            Fact("audit", START + timedelta(seconds=SECONDS), {"event": "agent_stopped"})
        )
        recorder.close()
        await task
        moved[0] = alarms.moved_by_unsealed
        found = []
        while not alarms._queue.empty():  # the transitions the engine found, in order
            found.append(alarms._queue.get_nowait())
        state = engine.checkpoint()
        point = json.loads(state["rules:p:probe-1.temperature"] or "{}")
        window = {k: v for k, v in state.items() if k.startswith("rules:w:probe-1.temperature:")}
        mkt = {k: v for k, v in state.items() if k.startswith("rules:mkt:probe-1.temperature:")}
        assert window, "the rate window is checkpointed"
        assert mkt, "the MKT buckets are checkpointed"
        memory.update({"window": window, "mkt": mkt, "last_t": point["last_t"]})
        return found

    memory: dict[str, Any] = {}
    moved = [0]
    transitions = asyncio.run(main())
    records = [json.loads(body) for body in outbox.export()]
    verdict = verify_lines(outbox.export(), [key.public_key()])
    register = LotRegister.open(tmp / "lots.db")  # rebuilt from the chain alone
    end = (START + timedelta(seconds=SECONDS)).timestamp()
    register.attach(ExposureBook(cfg, lambda: policy, clock=lambda: end))
    register.sync(outbox)
    product = policy.product(LOT[4:18])
    history = lot_history(register, LOT, cfg, product, end).as_dict()
    register.close()
    outbox.close()
    alarms_found = [
        (t.data["rule"], t.data["state"], t.data["started_at"], t.data["value"], t.data["extreme"])
        for t in transitions
    ]
    return Outcome(
        alarms_found, [r for r in records if r["kind"] == "reading"], memory, history,
        verdict.ok and verdict.records == len(records), moved[0],
    )  # fmt: skip


def test_interval_recording_keeps_every_figure_of_every_sample(
    tmp_path: Path, signing_key: tuple[Path, Ed25519PrivateKey], write_config: ConfigWriter
) -> None:
    (tmp_path / "every").mkdir()
    (tmp_path / "interval").mkdir()
    every = record_stream(tmp_path / "every", signing_key[1], write_config, "")
    interval = record_stream(tmp_path / "interval", signing_key[1], write_config, INTERVAL)

    assert every.verified
    assert interval.verified
    assert len(every.readings) == SECONDS
    # Quiet stretches: one sealed reading a minute, and a few where the wiggle leaves the
    # deadband; while a rule is not normal (the excursions) every reading is sealed.
    per_ten_minutes = phases(interval.readings)
    for quiet in ("010", "020", "040", "100", "110", "160", "170"):
        assert per_ten_minutes[quiet] <= 12, per_ten_minutes
    assert per_ten_minutes["070"] == 600, "an active alarm: every reading"
    assert len(interval.readings) <= SECONDS // 3, len(interval.readings)

    # The alarms: the high limit (slow drift, held past the delay) and the rate rule, alike.
    rules = {rule for rule, *_ in every.alarms}
    assert {"probe-1.temperature.high", "probe-1.temperature.rate"} <= rules
    assert interval.alarms == every.alarms
    assert interval.moved_by_unsealed == 0, "every triggering reading is sealed"

    # The rules saw every sample: the same rate window, rolling MKT and clock.
    assert interval.memory == every.memory

    # The lot's time out of storage and its stay in the room, from the chain alone.
    assert every.history["used_secs"] > 0
    assert interval.history == every.history

    # Every sample is counted in exactly one sealed record.
    counted = sum((r["data"].get("samples") or {}).get("count", 1) for r in interval.readings)
    assert counted == SECONDS
    lows = [(r["data"].get("samples") or {}).get("min", r["value"]) for r in interval.readings]
    highs = [(r["data"].get("samples") or {}).get("max", r["value"]) for r in interval.readings]
    assert min(lows) == min(r["value"] for r in every.readings)
    assert max(highs) == max(r["value"] for r in every.readings)


def phases(readings: list[dict[str, Any]]) -> dict[str, int]:
    """Sealed readings per ten minutes of the stream ("000", "010", …)."""
    counts: dict[str, int] = {}
    for r in readings:
        secs = (parse_time(r["at"]) - START).total_seconds()
        slot = f"{int(secs // 600) * 10:03d}"
        counts[slot] = counts.get(slot, 0) + 1
    return counts


# The comm-loss test's cold probe (polled every 0.1 s), recorded by a 1 s interval.
INTERVAL_PROBE = (
    COLD_PROBE + 'record = "interval"\nrecord_interval_secs = 1\nrecord_deadband = 0.5\n'
)


def test_the_agent_records_by_interval_over_modbus(write_config: ConfigWriter) -> None:
    """The running agent (its intake stage and the alarm service as sample listener) against
    the Modbus simulator: a steady probe is sealed about once a second though polled ten times;
    a step out of the deadband is sealed at once; every poll is counted in the chain."""
    from gxpgate.simulators.modbus_sim import ModbusSimulator

    from .running import Running, exported, until

    async def main() -> tuple[Path, int]:
        async with ModbusSimulator() as sim:
            sim.set_value(1, "temperature", 5.0)
            config = write_config(modbus=False, extra_devices=INTERVAL_PROBE.format(port=sim.port))
            async with Running(config) as agent:
                poller = agent.pollers[0]
                await until(lambda: poller.polls >= 40, 30, "40 polls")
                sim.set_value(1, "temperature", 6.0)
                polls = poller.polls
                await until(lambda: poller.polls >= polls + 20, 30, "20 more polls")
            return config, poller.polls

    config, polls = asyncio.run(main())
    readings = [r for r in exported(config) if r["kind"] == "reading"]
    counted = sum((r["data"].get("samples") or {}).get("count", 1) for r in readings)
    # Every poll is in exactly one sealed reading (a poll the stop cut short may be missing).
    assert polls - 1 <= counted <= polls, (counted, polls)
    assert len(readings) <= polls // 4, (len(readings), polls)
    step = next(i for i, r in enumerate(readings) if r["value"] == 6.0)
    assert readings[step - 1]["value"] == 5.0  # the group before the step, sealed for itself
    assert all(r["value"] == 6.0 for r in readings[step:])
