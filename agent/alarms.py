"""The alarm service: the rules engine wired to the recorder, the lot register and the outputs.

Data flow (seal before output, alarm before upload):

    recorder commit ─► on_commit: readings and device status into the engine
                         └─► transitions ─► queue ─► recorder (sealed ``alarm`` records)
    recorder commit of an ``alarm`` record ─► outputs (log, MQTT retained, coils)
    lot feed (worker) ─► exceptions: custody exceptions and time out of storage as events

The engine's state is checkpointed into the buffer's ``state`` table: each transition's
machine in the same transaction as its ``alarm`` record, everything every
``alarms.snapshot_secs``. On start the checkpoint is loaded and the readings sealed after it
are replayed, so pending delays, active alarms and acknowledgements survive a restart and no
transition is sealed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from buffer import Outbox, Row
from config.model import GatewayConfig
from drivers.base import utc_now

from .alarm_outputs import AlarmOutputs
from .control import Peer
from .exceptions import ExceptionJudge, Judged
from .recorder import CHECKPOINT, Recorder
from .rules import (
    GATEWAY,
    KEY_PREFIX,
    Engine,
    Event,
    GatewayCondition,
    LotsBetween,
    PointRules,
    Reading,
    RuleError,
    Transition,
)
from .sealing import Fact, format_time, parse_time

__all__ = ["AlarmService", "control_socket_path", "point_rules"]

log = logging.getLogger(__name__)

TICK_SECS = 1.0
REPLAY_CHUNK = 5000
ACK_WAIT_SECS = 10.0


STOP_HANDOVER_SECS = 5.0

GATEWAY_CONDITIONS = (
    GatewayCondition("buffer", "high_water", "alarm", "%"),
    GatewayCondition("buffer", "full", "alarm", "%"),
    GatewayCondition("buffer", "disk_full", "alarm", None),
)
"""Conditions of the gateway itself that raise local alarms (see agent/capacity.py)."""


def control_socket_path(config: GatewayConfig) -> Path:
    return config.alarms.control_socket or config.buffer.path.parent / "gxpgate.sock"


def point_rules(config: GatewayConfig) -> list[PointRules]:
    """Every point's rules: its zone's profile for its quantity, then the zone's override for
    that quantity, then the point's own override."""
    found: list[PointRules] = []
    for dev_id, dev in config.devices.items():
        # How often the device reports, and whether silence is normal (a subscription, a file
        # drop): its model says (``report_interval_secs``, ``changes_only``).
        interval, changes_only = dev.report_interval_secs, dev.changes_only
        for name, point in dev.points.items():
            zone_id = point.zone or dev.zone
            rules = config.rules_of(dev_id, name)
            found.append(
                PointRules(zone_id, dev_id, name, point.unit, rules, interval, changes_only)
            )
    return found


def _epoch(text: str) -> float:
    return parse_time(text).timestamp()


class AlarmService:
    """Runs the engine for the agent; see the module docstring."""

    def __init__(
        self,
        config: GatewayConfig,
        recorder: Recorder,
        *,
        lots: LotsBetween | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.recorder = recorder
        self.clock = clock
        self.engine = Engine(
            point_rules(config), now=clock(), lots=lots, gateway=GATEWAY_CONDITIONS
        )
        self.outputs = AlarmOutputs(config, self._audit, self._active_alarms)
        self._queue: asyncio.Queue[Fact] = asyncio.Queue()
        self._sealed_waiters: dict[tuple[str, str], asyncio.Future[int]] = {}
        self.sealed_alarms = 0
        self.sealed_event = asyncio.Event()
        """Set whenever an alarm record is sealed (clear it before waiting again)."""
        self.replayed = 0

    # -- start-up ----------------------------------------------------------------------------

    def restore(self, outbox: Outbox, judge: ExceptionJudge | None = None) -> None:
        """Load the checkpoint and replay what was sealed after it (call before the recorder
        runs, off the event loop). Transitions found on the way are queued for sealing. With a
        ``judge``, custody records not yet judged for exceptions are judged again (the engine
        skips what it has already raised)."""
        saved = outbox.states(KEY_PREFIX)
        if not saved:
            # First start with rules (a new buffer, or one from a version without them): judge
            # from now on; re-judging weeks of history would seal alarms for long-past events.
            self.engine.through = self.engine.judged_through = outbox.last_seq
            return
        after = self.engine.load({k[len(KEY_PREFIX) :]: v for k, v in saved.items()})
        if judge is not None:
            self._rejudge(outbox, judge)
        while True:
            rows = outbox.pending(after, REPLAY_CHUNK)
            if not rows:
                break
            for seq, body in rows:
                record = orjson.loads(body)
                self._queue_all(self._feed_record(seq, record))
                self.replayed += 1
            after = rows[-1][0]
        if self.replayed:
            log.info("alarms.replayed records=%d through=%d", self.replayed, after)

    def _rejudge(self, outbox: Outbox, judge: ExceptionJudge) -> None:
        for rule, detail, zone in self.engine.watched_events("wrong_zone"):
            judge.watch(rule, detail, zone)
        after = self.engine.judged_through
        while True:
            rows = outbox.pending(after, REPLAY_CHUNK)
            if not rows:
                break
            custody = [orjson.loads(body) for _seq, body in rows if b'"kind":"custody"' in body]
            after = rows[-1][0]
            self.exceptions(judge.judge(custody), [], after)

    def exceptions(self, judged: Judged | None, events: list[Event], through: int) -> None:
        """What the lot feed found: custody exceptions judged through ``through``, and time out
        of storage."""
        now = self.clock()
        engine = self.engine
        if judged is not None:
            for event, seq in judged.events:
                self._queue_all(engine.raise_event(event, now, seq))
            for rule in judged.resolved:
                self._queue_all(engine.resolve_event(rule, now))
            engine.judged_through = max(engine.judged_through, through)
        for event in events:
            self._queue_all(engine.raise_event(event, now))

    def _feed_record(self, seq: int, record: dict[str, Any]) -> list[Transition]:
        kind = record["kind"]
        if kind == "reading":
            if record["device"] is None or record["point"] is None:
                return []
            at = _epoch(record["at"])
            src = record["src_at"]
            reading = Reading(
                seq, record["device"], record["point"], record["value"], record["quality"],
                _epoch(src) if src else at, at,
            )  # fmt: skip
            return self.engine.observe(reading)
        if kind == "audit":
            event = record["data"].get("event")
            if event in ("device_offline", "device_online") and record["device"]:
                at = _epoch(record["at"])
                self.engine.device_status(record["device"], event == "device_online", at, seq)
        return []

    # -- the recorder's side -----------------------------------------------------------------

    def on_commit(self, facts: Sequence[Fact], rows: Sequence[Row]) -> None:
        for fact, row in zip(facts, rows, strict=True):
            if fact.kind == "reading":
                if fact.device is None or fact.point is None:
                    continue
                at = fact.at.timestamp()
                reading = Reading(
                    row.seq, fact.device, fact.point, fact.value, fact.quality or "bad",
                    fact.src_at.timestamp() if fact.src_at else at, at,
                )  # fmt: skip
                self._queue_all(self.engine.observe(reading))
            elif fact.kind == "audit":
                event = fact.data.get("event")
                if event in ("device_offline", "device_online") and fact.device:
                    online = event == "device_online"
                    self.engine.device_status(fact.device, online, fact.at.timestamp(), row.seq)
            elif fact.kind == "alarm":
                self._sealed(fact, row)

    def _sealed(self, fact: Fact, row: Row) -> None:
        self.sealed_alarms += 1
        self.sealed_event.set()
        record = orjson.loads(row.body)
        self.outputs.sealed(record)
        waiter = self._sealed_waiters.pop((fact.data["alarm_id"], fact.data["state"]), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(row.seq)

    def _queue_all(self, transitions: Iterable[Transition]) -> None:
        for transition in transitions:
            self._queue.put_nowait(self._fact(transition))

    def condition(
        self, area: str, name: str, *, active: bool, clear: bool, value: float | None,
        limit: float | None, announce: bool = False,
    ) -> None:  # fmt: skip
        """Raise or clear one of :data:`GATEWAY_CONDITIONS`; a transition is sealed like any
        alarm's (and drives the same outputs). ``announce``: drive the outputs now, before it
        is sealed, because sealing cannot happen yet (the disk is full); they are driven again
        with the sealed record once the disk takes it."""
        transitions = self.engine.condition(
            area, name, active=active, clear=clear, value=value, limit=limit, now=self.clock()
        )
        for transition in transitions:
            fact = self._fact(transition)
            if announce:
                unsealed = {"data": fact.data, "zone": fact.zone, "seq": None}
                self.outputs.sealed(unsealed | {"at": format_time(fact.at)})
            self._queue.put_nowait(fact)

    def _fact(self, transition: Transition) -> Fact:
        data = transition.data()
        data["route"] = getattr(self.config.alarms.routes, transition.kind)
        # The gateway's own conditions have none of the three (their point is an area), events
        # no point and maybe no device.
        gateway = transition.device == GATEWAY
        return Fact(
            "alarm",
            utc_now(),
            data,
            zone=transition.zone or None,
            device=transition.device or None,
            point=None if gateway else transition.point or None,
            unit=transition.unit,
            state=transition.entries,
        )

    async def _audit(self, data: dict[str, Any]) -> None:
        self._queue.put_nowait(Fact("audit", utc_now(), data))

    def _active_alarms(self) -> list[dict[str, Any]]:
        found = [
            {"zone": spec.zone, "severity": m.severity, "acked": m.acked, "rule": m.rule}
            for spec, m in self.engine.active()
        ]
        found += [
            {"zone": e["zone"], "severity": e["severity"], "acked": e["acked"], "rule": e["rule"]}
            for e in self.engine.active_events()
        ]
        return found

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Forward transitions to the recorder in order, tick, checkpoint. Runs until
        cancelled; what is queued then is still handed to the recorder."""
        await self.outputs.start()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._tick(), name="alarms:tick")
                group.create_task(self._checkpoint(), name="alarms:checkpoint")
                group.create_task(self._forward(), name="alarms:forward")
        finally:
            try:
                # A recorder that cannot commit (full disk) may not take more: a stop must not
                # wait for the disk. The recorder counts and logs what it gives up.
                async with asyncio.timeout(STOP_HANDOVER_SECS):
                    while not self._queue.empty():
                        await self.recorder.put(self._queue.get_nowait())
                    await self.recorder.put_state(self._checkpoint_entries())
            except TimeoutError:
                log.critical("alarms.unsaved transitions=%d", self._queue.qsize() + 1)
            await self.outputs.stop()

    async def _forward(self) -> None:
        while True:
            fact = await self._queue.get()
            await self.recorder.put(fact)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECS)
            self._queue_all(self.engine.tick(self.clock(), self.recorder.evidence_until()))

    async def _checkpoint(self) -> None:
        while True:
            await asyncio.sleep(self.config.alarms.snapshot_secs)
            # Through the same queue, so it is committed after the transitions before it.
            self._queue.put_nowait(Fact(CHECKPOINT, utc_now(), state=self._checkpoint_entries()))

    def _checkpoint_entries(self) -> dict[str, str]:
        return self.engine.checkpoint()

    # -- the control channel -----------------------------------------------------------------

    async def handle(self, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        op = request.get("op")
        if op == "list":
            return {"ok": True, "alarms": [_view(v) for v in self.engine.alarms()]}
        if op == "ack":
            return await self._ack(request, peer)
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def _ack(self, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        alarm_id = str(request.get("alarm_id") or "").strip()
        by = str(request.get("by") or "").strip()
        comment = str(request.get("comment") or "").strip()
        if not alarm_id or not by or not comment:
            return {"ok": False, "error": "alarm_id, by and comment are all required"}
        os_user = peer.user or f"uid {peer.uid}"
        try:
            transition = self.engine.acknowledge(alarm_id, by, comment, self.clock(), os_user)
        except RuleError as exc:
            return {"ok": False, "error": str(exc)}
        sealed = asyncio.get_running_loop().create_future()
        self._sealed_waiters[(alarm_id, "acknowledged")] = sealed
        self._queue.put_nowait(self._fact(transition))
        audit = {
            "event": "alarm_acknowledged", "alarm_id": alarm_id, "rule": transition.rule,
            "by": by, "comment": comment, "os_user": os_user, "os_uid": peer.uid,
        }  # fmt: skip
        self._queue.put_nowait(Fact("audit", utc_now(), audit, zone=transition.zone or None))
        self._queue_all(self.engine.settle(alarm_id, self.clock()))
        log.info("alarm.ack_requested id=%s by=%s os_user=%s", alarm_id, by, os_user)
        try:
            async with asyncio.timeout(ACK_WAIT_SECS):
                seq = await sealed
        except TimeoutError:
            return {"ok": False, "error": "acknowledgement queued but not sealed within 10 s"}
        return {"ok": True, "alarm_id": alarm_id, "seq": seq}


def _view(view: Any) -> dict[str, Any]:
    return {
        "alarm_id": view.alarm_id,
        "rule": view.rule,
        "zone": view.zone,
        "severity": view.severity,
        "state": view.state,
        "started_at": datetime.fromtimestamp(view.started_at, UTC).isoformat(),
        "value": view.value,
        "limit": view.limit,
    }


async def stop_quietly(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
