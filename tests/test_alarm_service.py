"""The alarm service (agent/alarms/service.py, :class:`AlarmService`): raising, acknowledging,
clearing, surviving a restart, and what it seals, wired to a real recorder and outbox.

Zone cold-1 keeps the refrigerated profile (high 8 °C, 0.5 °C hysteresis, 15 min on-delay,
5 min off-delay). Delays run on the readings' own times, so a quarter of an hour of readings
takes milliseconds; the service's clock (acknowledgements) is injected.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gxpgate.agent.alarms.service import AlarmService, stop_quietly
from gxpgate.agent.evidence import format_time
from gxpgate.agent.recording.recorder import Intake, Recorder
from gxpgate.agent.recording.sealing import Committed, Fact, Sealer
from gxpgate.agent.service.control import Peer
from gxpgate.agent.service.control_ops import AlarmOps
from gxpgate.buffer import Outbox
from gxpgate.config import load_config
from gxpgate.config.model import GatewayConfig

from .running import until
from .sealed import T0

GW = "gw-test"
RULE = "probe-1.temperature.high"
PEER = Peer(pid=4242, uid=1000, gid=1000, user="anna")
NOW = (T0 + timedelta(hours=1)).timestamp()

RULES = """
[zones.cold-1.rules.temperature]
rate = false
mkt = false
comm_loss = false
"""


def temperature(secs: float, value: float) -> Fact:
    return Fact(
        "reading", T0 + timedelta(seconds=secs), zone="cold-1", device="probe-1",
        point="temperature", value=value, unit="Cel", quality="good",
    )  # fmt: skip


class Session:
    """One run of the agent's alarm path: outbox, recorder and service, started and stopped.

    ``alarms=False`` runs the recorder alone (the agent died before judging what it stored).
    """

    def __init__(
        self, config: GatewayConfig, key: Ed25519PrivateKey, *, alarms: bool = True
    ) -> None:
        self.outbox = Outbox(config.buffer.path, GW)
        intake = Intake()
        self.service = AlarmService(config, intake, clock=lambda: NOW)
        # The service judges what is committed (when it is on); the session counts readings.
        listeners = [self.service.on_commit, self._count] if alarms else [self._count]
        self.recorder = Recorder(
            self.outbox, Sealer(key, GW, self.outbox.chain), intake,
            listeners=listeners, commit_interval_secs=0.01,
        )  # fmt: skip
        self.alarms = alarms
        self.judged = 0
        """Readings committed and, before this count moved, handed to the service."""
        self._recorder_task: asyncio.Task[None] | None = None
        self._service_task: asyncio.Task[None] | None = None

    def _count(self, committed: Sequence[Committed]) -> None:
        self.judged += sum(1 for record in committed if record.kind == "reading")

    async def __aenter__(self) -> Session:
        if self.alarms:
            await asyncio.to_thread(self.service.restore, self.outbox)
            self._service_task = asyncio.create_task(self.service.run())
        self._recorder_task = asyncio.create_task(self.recorder.run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if self._service_task is not None:
                await stop_quietly(self._service_task)  # hands what it holds to the recorder
            self.recorder.close()
            assert self._recorder_task is not None
            await self._recorder_task
        finally:
            self.outbox.close()

    async def feed(self, *facts: Fact) -> None:
        """Put the readings ``facts`` and wait until they are committed and judged."""
        target = self.judged + len(facts)
        for fact in facts:
            await self.recorder.put(fact)
        await until(lambda: self.judged >= target, 10, "readings committed")

    async def alarms_sealed(self, count: int) -> None:
        await until(lambda: self.service.sealed_alarms >= count, 10, f"{count} alarm(s) sealed")

    def records(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in map(orjson.loads, self.outbox.export()) if r["kind"] == kind]

    def views(self) -> list[tuple[str, str]]:
        return [(v.rule, v.state) for v in self.service.engine.alarms()]


def stored(config: GatewayConfig, kind: str) -> list[dict[str, Any]]:
    """What the buffer holds of ``kind`` once the sessions are over."""
    outbox = Outbox(config.buffer.path, GW)
    try:
        return [r for r in map(orjson.loads, outbox.export()) if r["kind"] == kind]
    finally:
        outbox.close()


@pytest.fixture
def config(write_config: Callable[..., Path]) -> GatewayConfig:
    return load_config(write_config(extra_devices=RULES)).config


@pytest.fixture
def key(signing_key: tuple[Path, Ed25519PrivateKey]) -> Ed25519PrivateKey:
    return signing_key[1]


async def raise_alarm(session: Session, start: float = 0.0) -> dict[str, Any]:
    """An excursion held through the 15 min on-delay: one ``active`` record; returns it."""
    before = session.service.sealed_alarms
    await session.feed(
        temperature(start, 9.5), temperature(start + 600, 9.7), temperature(start + 900, 9.4)
    )
    await session.alarms_sealed(before + 1)
    return session.records("alarm")[-1]


def test_an_excursion_alarms_after_its_on_delay_and_a_short_one_never(
    config: GatewayConfig, key: Ed25519PrivateKey
) -> None:
    async def main() -> None:
        async with Session(config, key) as session:
            # 14 min 59 s above the limit, then back: pending only, never an alarm.
            await session.feed(temperature(0, 9.0), temperature(899, 9.1))
            assert session.views() == [(RULE, "pending")]
            await session.feed(temperature(900, 5.0))
            assert session.views() == []
            await raise_alarm(session, 1000)
            machine = orjson.loads(session.outbox.state(f"rules:m:{RULE}") or "{}")
            assert machine["phase"] == "active", "its machine is checkpointed with it"
            await session.feed(temperature(1960, 9.9))
            assert session.views() == [(RULE, "active")], "still the same alarm"

    asyncio.run(main())
    alarms = stored(config, "alarm")
    assert [a["data"]["state"] for a in alarms] == ["active"]
    active = alarms[0]
    data = active["data"]
    assert (data["rule"], data["kind"], data["severity"]) == (RULE, "limit", "alarm")
    assert data["started_at"] == format_time(T0 + timedelta(seconds=1000))
    assert (data["value"], data["extreme"], data["limit"]) == (9.4, 9.7, 8.0)
    assert data["condition"] == "active"
    assert data["route"] == "quality"
    assert (active["zone"], active["device"], active["point"]) == (
        "cold-1", "probe-1", "temperature",
    )  # fmt: skip
    due_at = format_time(T0 + timedelta(seconds=1900))
    due = next(r for r in stored(config, "reading") if r["at"] == due_at)
    assert active["seq"] > due["seq"], "sealed after the reading that made it due"


def test_an_alarm_is_announced_only_once_it_is_sealed(
    config: GatewayConfig, key: Ed25519PrivateKey
) -> None:
    announced: list[bool] = []
    outputs = logging.getLogger("gxpgate.agent.alarms.outputs")

    async def main() -> None:
        async with Session(config, key) as session:

            class SealedYet(logging.Handler):
                def emit(self, record: logging.LogRecord) -> None:
                    if record.getMessage().startswith("alarm.active"):
                        announced.append(bool(session.outbox.newest("alarm", 1)))

            check = SealedYet()
            outputs.addHandler(check)
            try:
                await raise_alarm(session)
            finally:
                outputs.removeHandler(check)

    asyncio.run(main())
    assert announced == [True]


def test_an_acknowledgement_is_sealed_with_who_and_why_and_only_once(
    config: GatewayConfig, key: Ed25519PrivateKey
) -> None:
    async def main() -> tuple[str, int]:
        async with Session(config, key) as session:
            alarm_id = (await raise_alarm(session))["data"]["alarm_id"]
            handle = AlarmOps(session.service).handle
            missing = await handle({"op": "ack", "alarm_id": alarm_id, "by": "anna"}, PEER)
            assert missing == {"ok": False, "error": "alarm_id, by and comment are all required"}
            unknown = await handle(
                {"op": "ack", "alarm_id": "A99", "by": "anna", "comment": "x"}, PEER
            )
            assert unknown["ok"] is False
            assert "A99" in unknown["error"]
            request = {"op": "ack", "alarm_id": alarm_id, "by": "qa.anna", "comment": "door shut"}
            acked = await handle(request, PEER)
            assert acked["ok"] is True, acked
            again = await handle({**request, "by": "qa.ben"}, PEER)
            assert again["ok"] is False
            assert "already acknowledged" in again["error"]
            listed = await handle({"op": "list"}, PEER)
            assert [(a["alarm_id"], a["state"]) for a in listed["alarms"]] == [
                (alarm_id, "acknowledged")
            ]
            return alarm_id, acked["seq"]

    alarm_id, seq = asyncio.run(main())
    alarms = stored(config, "alarm")
    assert [a["data"]["state"] for a in alarms] == ["active", "acknowledged"]
    ack = alarms[-1]
    assert ack["seq"] == seq, "the answer names the sealed record"
    assert ack["data"]["alarm_id"] == alarm_id
    assert (ack["data"]["by"], ack["data"]["comment"]) == ("qa.anna", "door shut")
    assert ack["data"]["os_user"] == "anna"
    assert [r["data"] for r in stored(config, "audit")] == [
        {
            "event": "alarm_acknowledged", "alarm_id": alarm_id, "rule": RULE,
            "by": "qa.anna", "comment": "door shut", "os_user": "anna", "os_uid": 1000,
        }
    ], "the refused requests left nothing on record"  # fmt: skip


def test_an_alarm_clears_after_its_off_delay_beyond_the_hysteresis(
    config: GatewayConfig, key: Ed25519PrivateKey
) -> None:
    async def main() -> None:
        async with Session(config, key) as session:
            await raise_alarm(session)
            # Within the hysteresis (8.0 - 0.5): still active however long.
            await session.feed(temperature(1000, 7.8), temperature(2000, 7.6))
            assert session.views() == [(RULE, "active")]
            # Beyond it, but for less than the 5 min off-delay: still active.
            await session.feed(temperature(2100, 7.0), temperature(2399, 7.2))
            assert session.views() == [(RULE, "active")]
            await session.feed(temperature(2400, 7.1))
            await session.alarms_sealed(2)
            # Cleared but never acknowledged: it waits for someone to acknowledge it.
            assert session.views() == [(RULE, "cleared")]
            alarm_id = session.records("alarm")[-1]["data"]["alarm_id"]
            request = {"op": "ack", "alarm_id": alarm_id, "by": "qa.anna", "comment": "seen"}
            assert (await AlarmOps(session.service).handle(request, PEER))["ok"] is True
            assert session.views() == []

    asyncio.run(main())
    alarms = stored(config, "alarm")
    assert [a["data"]["state"] for a in alarms] == ["active", "cleared", "acknowledged"]
    assert len({a["data"]["alarm_id"] for a in alarms}) == 1
    cleared = alarms[1]["data"]
    assert cleared["condition"] == "normal"
    assert cleared["value"] == 7.1


def test_an_active_acknowledged_alarm_survives_a_restart_and_clears_once(
    config: GatewayConfig, key: Ed25519PrivateKey
) -> None:
    async def main() -> str:
        async with Session(config, key) as first:
            alarm_id = str((await raise_alarm(first))["data"]["alarm_id"])
            request = {"op": "ack", "alarm_id": alarm_id, "by": "qa.anna", "comment": "moving"}
            assert (await AlarmOps(first.service).handle(request, PEER))["ok"] is True
        async with Session(config, key) as second:
            assert second.views() == [(RULE, "acknowledged")]
            again = await AlarmOps(second.service).handle({**request, "by": "qa.ben"}, PEER)
            assert "already acknowledged" in again["error"]
            await second.feed(temperature(1000, 9.8))
            await second.feed(temperature(1100, 6.0), temperature(1400, 6.1))
            await second.alarms_sealed(1)
            assert second.views() == []
        return alarm_id

    alarm_id = asyncio.run(main())
    alarms = stored(config, "alarm")
    assert [(a["data"]["alarm_id"], a["data"]["state"]) for a in alarms] == [
        (alarm_id, "active"), (alarm_id, "acknowledged"), (alarm_id, "cleared"),
    ]  # fmt: skip


def test_readings_sealed_after_the_checkpoint_are_replayed_and_alarm_once(
    config: GatewayConfig, key: Ed25519PrivateKey
) -> None:
    """The agent stopped after the excursion's readings were committed but before the alarm
    they called for was sealed (a crash): the next start judges them and seals it."""

    async def main() -> None:
        async with Session(config, key) as first:
            await first.feed(temperature(0, 5.0))
        async with Session(config, key, alarms=False) as crashed:
            await crashed.feed(temperature(100, 9.5), temperature(700, 9.6), temperature(1000, 9.2))
        async with Session(config, key) as second:
            assert second.service.replayed == 3
            assert second.views() == [(RULE, "active")]
            await second.alarms_sealed(1)
        async with Session(config, key) as third:
            assert third.views() == [(RULE, "active")]

    asyncio.run(main())
    alarms = stored(config, "alarm")
    assert [a["data"]["state"] for a in alarms] == ["active"], "no transition sealed twice"
    assert alarms[0]["data"]["started_at"] == format_time(T0 + timedelta(seconds=100))


def test_a_gateway_condition_is_sealed_as_an_alarm_of_no_device(
    config: GatewayConfig, key: Ed25519PrivateKey
) -> None:
    async def main() -> None:
        async with Session(config, key) as session:
            service = session.service
            service.condition(
                "buffer", "disk_full", active=True, clear=False, value=None, limit=None
            )
            await session.alarms_sealed(1)
            assert session.views() == [("gateway.buffer.disk_full", "active")]
            service.condition(
                "buffer", "disk_full", active=False, clear=True, value=None, limit=None
            )
            await session.alarms_sealed(2)

    asyncio.run(main())
    alarms = stored(config, "alarm")
    assert [a["data"]["state"] for a in alarms] == ["active", "cleared"]
    for alarm in alarms:
        assert alarm["data"]["rule"] == "gateway.buffer.disk_full"
        assert (alarm["zone"], alarm["device"], alarm["point"]) == (None, None, None)


def test_an_unreadable_rate_window_in_the_checkpoint_starts_afresh_on_record(
    write_config: Callable[..., Path], key: Ed25519PrivateKey
) -> None:
    """The rules' checkpoint is not signed: if a rate window's chunks in it cannot be read,
    the agent still starts, that window starts empty (it refills), the repair is sealed as
    ``buffer_repaired``, and the next checkpoint replaces the damaged chunks."""
    with_rate = "[zones.cold-1.rules.temperature]\nmkt = false\ncomm_loss = false\n"
    config = load_config(write_config(extra_devices=with_rate)).config

    async def main() -> None:
        async with Session(config, key) as first:
            await first.feed(*(temperature(s, 5.0) for s in range(0, 100, 10)))
        db = sqlite3.connect(config.buffer.path)
        with db:
            damaged = db.execute("UPDATE state SET value = 'x' WHERE key LIKE 'rules:w:%'")
            assert damaged.rowcount == 1
        db.close()
        async with Session(config, key) as second:
            assert second.service.engine.damaged == [
                "probe-1.temperature: rate window (invalid literal for int() with base 10: "
                "'x'): starts empty"
            ]
            await second.feed(*(temperature(s, 5.0) for s in range(100, 200, 10)))
        async with Session(config, key) as third:
            assert third.service.engine.damaged == []
            window = third.service.engine._points["probe-1", "temperature"].window
            assert len(window) == 10  # what the second session saw

    asyncio.run(main())
    repairs = [
        a["data"] for a in stored(config, "audit") if a["data"]["event"] == "buffer_repaired"
    ]
    assert repairs == [
        {
            "event": "buffer_repaired",
            "what": "rules checkpoint: probe-1.temperature: rate window (invalid literal for "
            "int() with base 10: 'x'): starts empty",
        }
    ]
