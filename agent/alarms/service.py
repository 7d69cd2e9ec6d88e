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
from pathlib import Path
from typing import Any

from gxpgate.agent.alarms.outputs import AlarmOutputs
from gxpgate.agent.alarms.points import GATEWAY_CONDITIONS, point_rules
from gxpgate.agent.alarms.rules import (
    GATEWAY,
    KEY_PREFIX,
    AlarmView,
    Engine,
    Event,
    Judged,
    LotsBetween,
    Reading,
    Transition,
)
from gxpgate.agent.evidence import format_time
from gxpgate.agent.recording.audit import (
    ALARM_ACKNOWLEDGED,
    BUFFER_REPAIRED,
    DEVICE_OFFLINE,
    DEVICE_ONLINE,
)
from gxpgate.agent.recording.intake import CHECKPOINT, Intake
from gxpgate.agent.recording.sealing import Committed, Fact
from gxpgate.buffer import Outbox
from gxpgate.config.model import GatewayConfig
from gxpgate.drivers.base import utc_now

__all__ = ["AlarmService", "build_engine", "control_socket_path"]

log = logging.getLogger(__name__)

TICK_SECS = 1.0
REPLAY_CHUNK = 5000
ACK_WAIT_SECS = 10.0


STOP_HANDOVER_SECS = 5.0


def control_socket_path(config: GatewayConfig) -> Path:
    return config.alarms.control_socket or config.buffer.path.parent / "gxpgate.sock"


def build_engine(
    config: GatewayConfig, lots: LotsBetween | None = None, clock: Callable[[], float] = time.time
) -> Engine:
    """The rules engine of the site's points and the gateway's own conditions."""
    return Engine(point_rules(config), now=clock(), lots=lots, gateway=GATEWAY_CONDITIONS)


class AlarmService:
    """Runs the engine for the agent; see the module docstring."""

    def __init__(
        self,
        config: GatewayConfig,
        intake: Intake,
        *,
        lots: LotsBetween | None = None,
        clock: Callable[[], float] = time.time,
        engine: Engine | None = None,
    ) -> None:
        self.config = config
        self.intake = intake
        self.clock = clock
        self.engine = engine if engine is not None else build_engine(config, lots, clock)
        self.outputs = AlarmOutputs(config, self._audit, self._active_alarms)
        self._queue: asyncio.Queue[Fact] = asyncio.Queue()
        self._sealed_waiters: dict[tuple[str, str], asyncio.Future[int]] = {}
        self.sealed_alarms = 0
        self.sealed_event = asyncio.Event()
        """Set whenever an alarm record is sealed (clear it before waiting again)."""
        self.replayed = 0
        self.moved_by_unsealed = 0
        """Transitions moved by a reading a recording policy did not seal (should stay 0)."""

    # -- start-up ----------------------------------------------------------------------------

    def restore(self, outbox: Outbox, rejudge: Callable[[], None] | None = None) -> None:
        """Load the checkpoint and replay what was sealed after it (call before the recorder
        runs, off the event loop). Transitions found on the way are queued for sealing.
        ``rejudge`` runs right after the checkpoint is loaded: the lot feed judging again the
        custody records not yet judged for exceptions
        (:meth:`gxpgate.agent.custody.feed.LotFeed.rejudge`; the engine skips what it has already
        raised)."""
        saved = outbox.states(KEY_PREFIX)
        if not saved:
            # First start with rules (a new buffer, or one from a version without them): judge
            # from now on; re-judging weeks of history would seal alarms for long-past events.
            self.engine.through = self.engine.judged_through = outbox.last_seq
            return
        after = self.engine.load({k[len(KEY_PREFIX) :]: v for k, v in saved.items()})
        for damage in self.engine.damaged:
            log.error("alarms.checkpoint_damaged %s", damage)
            what = f"rules checkpoint: {damage}"
            self._queue.put_nowait(
                Fact("audit", utc_now(), {"event": BUFFER_REPAIRED, "what": what})
            )
        if rejudge is not None:
            rejudge()
        while True:
            rows = outbox.pending(after, REPLAY_CHUNK)
            if not rows:
                break
            for seq, body in rows:
                self._observe(Committed.stored(seq, body))
                self.replayed += 1
            after = rows[-1][0]
        if self.replayed:
            log.info("alarms.replayed records=%d through=%d", self.replayed, after)

    def watched_events(self, kind: str) -> list[tuple[str, dict[str, Any], str]]:
        """The active custody exceptions of ``kind`` (rule, detail, zone): what a judge must
        keep watching after a restart."""
        return self.engine.watched_events(kind)

    @property
    def judged_through(self) -> int:
        """The seq through which custody records have been judged for exceptions."""
        return self.engine.judged_through

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

    # -- the recorder's side -----------------------------------------------------------------

    def on_commit(self, committed: Sequence[Committed]) -> None:
        """A commit listener (where no recording policy is in force: tests, replays)."""
        self.on_samples(committed)

    def on_samples(self, items: Sequence[Committed | Fact]) -> None:
        """The recorder's sample listener: what it committed and, in arrival order between
        the records, the readings a recording policy did not seal (agent/alarms/sampling.py),
        which the engine absorbs: the rules see every sample."""
        for item in items:
            if isinstance(item, Fact):
                if item.device is not None and item.point is not None and item.value is not None:
                    t = (item.src_at or item.at).timestamp()
                    reading = Reading(
                        0, item.device, item.point, item.value, "good", t, item.at.timestamp()
                    )
                    moved = self.engine.absorb(reading)
                    if moved:
                        # quiet() said it would not; raised all the same, and counted.
                        self.moved_by_unsealed += len(moved)
                        log.warning(
                            "alarm.unsealed_trigger device=%s point=%s rules=%s",
                            item.device, item.point, ",".join(t.rule for t in moved),
                        )  # fmt: skip
                        self._queue_all(moved)
            elif item.kind == "alarm":
                self._sealed(item)
            else:
                self._observe(item)

    def _observe(self, record: Committed) -> None:
        """Readings and device status into the engine (live and on replay alike); what the
        engine finds is queued for sealing."""
        if record.kind == "reading":
            if record.device is None or record.point is None:
                return
            reading = Reading(
                record.seq, record.device, record.point, record.value, record.quality or "bad",
                record.src_secs if record.src_secs is not None else record.at_secs,
                record.at_secs,
            )  # fmt: skip
            self._queue_all(self.engine.observe(reading))
        elif record.kind == "audit":
            event = record.data.get("event")
            if event in (DEVICE_OFFLINE, DEVICE_ONLINE) and record.device:
                online = event == DEVICE_ONLINE
                self.engine.device_status(record.device, online, record.at_secs, record.seq)

    def _sealed(self, record: Committed) -> None:
        self.sealed_alarms += 1
        self.sealed_event.set()
        self.outputs.sealed(record.record())
        waiter = self._sealed_waiters.pop((record.data["alarm_id"], record.data["state"]), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(record.seq)

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
                        await self.intake.put(self._queue.get_nowait())
                    await self.intake.put_state(self._checkpoint_entries())
            except TimeoutError:
                log.critical("alarms.unsaved transitions=%d", self._queue.qsize() + 1)
            await self.outputs.stop()

    async def _forward(self) -> None:
        while True:
            fact = await self._queue.get()
            await self.intake.put(fact)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECS)
            self._queue_all(self.engine.tick(self.clock(), self.intake.evidence_until()))

    async def _checkpoint(self) -> None:
        while True:
            await asyncio.sleep(self.config.alarms.snapshot_secs)
            # Through the same queue, so it is committed after the transitions before it.
            self._queue.put_nowait(Fact(CHECKPOINT, utc_now(), state=self._checkpoint_entries()))

    def _checkpoint_entries(self) -> dict[str, str | None]:
        return self.engine.checkpoint()

    # -- operators' requests (the control channel's ops call these: agent/service/control_ops.py)
    # ------

    def views(self) -> list[AlarmView]:
        """Every alarm the engine holds, as operators list them."""
        return self.engine.alarms()

    async def acknowledge(
        self, alarm_id: str, by: str, comment: str, os_user: str, os_uid: int
    ) -> int:
        """Acknowledge ``alarm_id`` for ``by`` (as the OS user ``os_user`` asked) and return the
        seq of the sealed ``acknowledged`` transition; the ``alarm_acknowledged`` audit record is
        committed with or right after it. Raises :class:`RuleError` when the engine refuses and
        :class:`TimeoutError` when the transition is not sealed within ``ACK_WAIT_SECS``."""
        transition = self.engine.acknowledge(alarm_id, by, comment, self.clock(), os_user)
        sealed = asyncio.get_running_loop().create_future()
        self._sealed_waiters[(alarm_id, "acknowledged")] = sealed
        self._queue.put_nowait(self._fact(transition))
        audit = {
            "event": ALARM_ACKNOWLEDGED, "alarm_id": alarm_id, "rule": transition.rule,
            "by": by, "comment": comment, "os_user": os_user, "os_uid": os_uid,
        }  # fmt: skip
        self._queue.put_nowait(Fact("audit", utc_now(), audit, zone=transition.zone or None))
        self._queue_all(self.engine.settle(alarm_id, self.clock()))
        log.info("alarm.ack_requested id=%s by=%s os_user=%s", alarm_id, by, os_user)
        async with asyncio.timeout(ACK_WAIT_SECS):
            seq: int = await sealed
        return seq


async def stop_quietly(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
