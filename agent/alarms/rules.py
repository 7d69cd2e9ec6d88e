"""The excursion rules and the alarm state machine. Pure: no I/O, time comes in with the input.

Every point with rules gets one :class:`Machine` per rule (``low_low`` … ``high_high``,
``rate``, ``mkt``, ``sensor_fault``, ``comm_loss``). A machine runs

    normal ─(condition)→ pending ─(on-delay)→ active ─(ack)→ acknowledged
       ▲                    │                    │
       └──(condition gone)──┘   (back beyond the hysteresis for the off-delay) → cleared

and reports ``active``, ``acknowledged`` and ``cleared`` as :class:`Transition` s, which the
alarm service seals as ``alarm`` records. Pending is not sealed: an excursion shorter than its
on-delay is not an alarm (the readings themselves are on record).

Readings are evaluated in source-time order per point (``src_at``, else ``at``). A reading
older than what a point has already been judged on (a data logger's back-filled memory) only
feeds the point's mean kinetic temperature: it cannot re-run a delay that has already been
decided. Bad and uncertain readings never reach the limit, rate or MKT rules; they drive the
``sensor_fault`` rule. Communication loss and re-alarms run on the gateway's clock (``tick``).

The gateway's own conditions (buffer high water, buffer full) are machines too, declared as
:class:`GatewayCondition` s and stepped with :meth:`Engine.condition`: they share the alarm ids,
acknowledgement, views and checkpoints. Their device is ``GATEWAY`` (``""``, which no configured
device id can be) and their rule ids read ``gateway.<area>.<name>``.

*Events* are alarms about one thing at one moment rather than a point's condition: a custody
exception (a lot put away in the wrong zone, an expired lot received) or a lot's time out of
storage. The caller judges them and hands each to :meth:`Engine.raise_event`; the engine gives
it an alarm id and runs the same lifecycle: a *latched* event is ended by its acknowledgement
(active → acknowledged → cleared), another by :meth:`Engine.resolve_event` when what it is
about is put right (a wrong-zone lot moved out). An event whose rule is still active is not
raised twice, and a ``once`` rule (a lot's allowance used up) never fires again.

State is serialisable per machine and per point (:meth:`Engine.entries`), so the service can
checkpoint it into the buffer in the same transaction as each alarm record and periodically;
after a restart the engine is loaded from the checkpoint and the readings sealed after it are
replayed (each machine skips what it had already seen).
"""

from __future__ import annotations

import base64
import hashlib
import sys
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from gxpgate.agent.alarms.mkt import RollingMkt
from gxpgate.config.rules_model import LimitRule, QuantityRules

__all__ = [
    "GATEWAY",
    "AlarmView",
    "Engine",
    "Event",
    "GatewayCondition",
    "Judged",
    "Machine",
    "PointRules",
    "Reading",
    "RuleError",
    "Transition",
]

State = Literal["active", "acknowledged", "cleared"]
LotsBetween = Callable[[str, datetime, datetime], list[str]]

KEY_PREFIX = "rules:"
UNACKED_KEEP = 1000
FIRED_KEEP = 10_000
"""``once`` rules remembered as fired; the oldest are forgotten beyond this (lots long gone)."""


GATEWAY = ""
"""The device (and zone) of the gateway's own conditions."""


class RuleError(Exception):
    """An acknowledgement that cannot be done (unknown alarm, already acknowledged)."""


@dataclass(frozen=True, slots=True)
class Reading:
    seq: int
    device: str
    point: str
    value: float | None
    quality: str
    t: float
    """Source time (epoch seconds): ``src_at`` or else ``at``."""
    at: float
    """Gateway time of acquisition (epoch seconds)."""


@dataclass(frozen=True, slots=True)
class PointRules:
    zone: str
    device: str
    point: str
    unit: str | None
    rules: QuantityRules
    interval_secs: float
    """How often the device reports: its poll interval, or a subscription's publishing
    interval."""
    changes_only: bool = False
    """A subscription: silence is normal; comm loss counts from the device going offline."""
    record_interval_secs: float = 0.0
    """``record = "interval"``: the longest between the point's sealed readings while it
    answers (0: every sample is sealed)."""


@dataclass(frozen=True, slots=True)
class GatewayCondition:
    """A condition of the gateway itself, raised and cleared by the agent (not by readings)."""

    area: str
    """What it concerns, e.g. ``buffer``."""
    name: str
    """e.g. ``high_water``; the rule id is ``gateway.<area>.<name>``."""
    severity: str = "alarm"
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """An alarm about one thing (a lot, an SSCC) at one moment; see the module docstring."""

    rule: str
    """Unique per thing, e.g. ``custody.wrong_zone.(01)…(10)LOT``: also the MQTT topic's end."""
    kind: str
    severity: str
    zone: str
    device: str
    """What observed it (a scanner), ``""`` for none."""
    lots: tuple[str, ...]
    detail: dict[str, Any]
    """What the alarm names (lot, product, zone, required profile…): ``data.detail``."""
    value: float | None = None
    limit: float | None = None
    latched: bool = True
    """True: the acknowledgement ends it. False: :meth:`Engine.resolve_event` ends it."""
    once: bool = False
    """True: the rule never fires again, even after it is over."""


@dataclass(slots=True)
class Judged:
    """What the custody judge (agent/custody/exceptions.py) found in a batch of custody records: an
    input of the alarm engine, as a reading is."""

    events: list[tuple[Event, int]] = field(default_factory=list)
    """Each exception with the ``seq`` of the record it comes from."""
    resolved: list[str] = field(default_factory=list)
    """Rules of ``wrong_zone`` exceptions that are put right (the thing left the zone)."""


@dataclass(slots=True)
class Transition:
    alarm_id: str
    rule: str
    kind: str
    severity: str
    state: State
    zone: str
    device: str
    point: str
    unit: str | None
    started_at: float
    at: float
    value: float | None
    limit: float | None
    extreme: float | None
    lots: list[str]
    condition: Literal["active", "normal"]
    realarm: int = 0
    by: str | None = None
    comment: str | None = None
    os_user: str | None = None
    detail: dict[str, Any] | None = None
    """An event's particulars (``data.detail``)."""
    entries: dict[str, str] = field(default_factory=dict)
    """Checkpoint entries to commit with the alarm record."""

    def data(self) -> dict[str, Any]:
        """The ``alarm`` record's ``data`` (CONTRACT §1, plus kind, extreme, condition)."""
        data: dict[str, Any] = {
            "alarm_id": self.alarm_id,
            "rule": self.rule,
            "kind": self.kind,
            "severity": self.severity,
            "state": self.state,
            "condition": self.condition,
            "started_at": _iso(self.started_at),
            "value": self.value,
            "limit": self.limit,
            "extreme": self.extreme,
            "lots": self.lots,
            "by": self.by,
            "comment": self.comment,
        }
        if self.realarm:
            data["realarm"] = self.realarm
        if self.os_user is not None:
            data["os_user"] = self.os_user
        if self.detail is not None:
            data["detail"] = self.detail
        return data


@dataclass(frozen=True, slots=True)
class AlarmView:
    alarm_id: str
    rule: str
    zone: str
    severity: str
    state: str
    """pending, active, acknowledged, or cleared (cleared, not yet acknowledged)."""
    started_at: float
    value: float | None
    limit: float | None


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds")[:-6] + "Z"


_STATE_FIELDS = (
    "phase", "since", "count", "clear_since", "alarm_id", "acked", "started_at", "extreme",
    "value", "notified_at", "realarms",
)  # fmt: skip


@dataclass(slots=True)
class Machine:
    """One rule of one point: its settings and its place in the lifecycle."""

    rule: str
    kind: str
    severity: str
    limit: float | None
    direction: int
    """+1: the condition is a high value (extreme = max); -1: low (extreme = min); 0: none."""
    on_delay_secs: float
    on_delay_samples: int | None
    off_delay_secs: float
    realarm_secs: float | None
    phase: Literal["normal", "pending", "active"] = "normal"
    since: float | None = None
    count: int = 0
    clear_since: float | None = None
    alarm_id: str | None = None
    acked: bool = False
    started_at: float | None = None
    extreme: float | None = None
    value: float | None = None
    notified_at: float | None = None
    realarms: int = 0
    through: int = 0
    saved: bytes | None = field(default=None, compare=False, repr=False)
    """Digest of this machine's entry as last checkpointed (see ``Engine._if_changed``)."""

    def step(self, cond: bool, clear_ok: bool, t: float, value: float | None) -> str | None:
        """Advance with one judged observation; returns ``"active"``, ``"cleared"`` or None."""
        self.value = value
        if self.phase == "normal":
            if not cond:
                return None
            self.phase, self.since, self.count, self.extreme = "pending", t, 0, None
        if self.phase == "pending":
            if not cond:
                self.phase, self.since, self.count, self.extreme = "normal", None, 0, None
                return None
            self.count += 1
            self._track(value)
            assert self.since is not None
            if self.on_delay_samples is not None:
                due = self.count >= self.on_delay_samples
            else:
                due = t - self.since >= self.on_delay_secs
            if not due:
                return None
            self.phase, self.started_at, self.acked, self.clear_since = (
                "active",
                self.since,
                False,
                None,
            )
            return "active"
        if cond:
            self._track(value)
        if not clear_ok:
            self.clear_since = None
            return None
        if self.clear_since is None:
            self.clear_since = t
        if t - self.clear_since < self.off_delay_secs:
            return None
        self.phase, self.since, self.count, self.clear_since = "normal", None, 0, None
        return "cleared"

    def _track(self, value: float | None) -> None:
        if value is None or self.direction == 0:
            return
        if self.extreme is None:
            self.extreme = value
        else:
            self.extreme = (
                max(self.extreme, value) if self.direction > 0 else min(self.extreme, value)
            )

    def reset_alarm(self) -> None:
        self.alarm_id, self.acked, self.started_at, self.extreme = None, False, None, None
        self.notified_at, self.realarms = None, 0

    def dump(self) -> dict[str, Any]:
        state = {name: getattr(self, name) for name in _STATE_FIELDS}
        if self.phase == "normal":
            # At rest, the last value is not read before the next step sets it again (a view
            # or a transition needs a machine that has left normal). Left out, a machine at
            # rest dumps the same each time: a checkpoint no longer rewrites every machine of
            # every point (0.7 MB a minute at 1,000 points).
            state["value"] = None
        return state

    def load(self, state: dict[str, Any]) -> None:
        for name in _STATE_FIELDS:
            if name in state:
                setattr(self, name, state[name])
        self.through = int(state.get("through", 0))


class RateWindow:
    """The (time, value) samples of a point's rate rule over the last ``secs``, oldest first.

    Kept in two flat arrays, 16 bytes a sample: at a 1 s poll a 10-minute window holds 600
    samples per point, and a deque of tuples (about 120 bytes a sample) made that the largest
    share of the agent's memory at a few thousand points. Dropping the oldest moves a head
    index; the arrays are compacted once the dropped part is an eighth of them. An array
    keeps the largest size it ever had, so compacting only at half let every window grow to
    twice its samples; moving the 7/8 kept costs a few ns per sample added.

    A checkpoint holds the window in chunks of :data:`CHUNK_SAMPLES` consecutive samples (by
    the number of each sample since the window began) and rewrites only those that gained
    samples since the one before: about a tenth of a 10-minute window at a 1 s poll, where
    rewriting every window whole made 11 MB every ``alarms.snapshot_secs`` at 1,000 points.
    """

    __slots__ = ("_base", "_head", "_saved", "_stored", "_t", "_v", "secs")

    def __init__(self, secs: float) -> None:
        self.secs = secs
        self._t = array("d")
        self._v = array("d")
        self._head = 0
        self._base = 0  # the number of the sample at index 0
        self._saved = 0  # the number of the first sample not yet in a checkpoint
        self._stored: set[int] = set()  # the chunks a checkpoint holds

    def add(self, t: float, value: float) -> tuple[float, float]:
        """Add a sample; the oldest one still in the window (the sample itself if alone)."""
        times = self._t
        times.append(t)
        self._v.append(value)
        head, n = self._head, len(times)
        while n - head > 1 and t - times[head] > self.secs:
            head += 1
        if head >= 64 and head * 8 >= n:
            del times[:head]
            del self._v[:head]
            self._base += head
            head = 0
        self._head = head
        return times[head], self._v[head]

    def peek(self, t: float, value: float) -> tuple[float, float]:
        """What :meth:`add` would return, without adding."""
        times, head, n = self._t, self._head, len(self._t)
        while head < n and t - times[head] > self.secs:
            head += 1
        return (times[head], self._v[head]) if head < n else (t, value)

    def __len__(self) -> int:
        return len(self._t) - self._head

    def pairs(self) -> list[tuple[float, float]]:
        h = self._head
        return list(zip(self._t[h:], self._v[h:], strict=True))

    def load(self, pairs: list[Any]) -> None:
        """Restore from :meth:`pairs` (a checkpoint written before windows were chunked)."""
        self._t = array("d", (float(t) for t, _v in pairs))
        self._v = array("d", (float(v) for _t, v in pairs))
        self._head = self._base = self._saved = 0
        self._stored = set()

    @property
    def first(self) -> int:
        """The number of the oldest sample in the window (a checkpoint keeps it)."""
        return self._base + self._head

    def changed_chunks(self) -> dict[int, str | None]:
        """The chunks that changed since the last call, by chunk number: ``"<number of its
        first sample>,<samples>"`` (:func:`_encode`) for a chunk that gained samples, None for
        one a checkpoint holds that has left the window. The samples of a chunk that had
        left the window before it was rewritten are not in it."""
        base, n, first = self._base, len(self._t), self.first
        out: dict[int, str | None] = {}
        number = max(first, self._saved)
        end = base + n
        if number < end:
            chunk = number // CHUNK_SAMPLES
            while (start := max(first, chunk * CHUNK_SAMPLES)) < end:
                stop = min(end, (chunk + 1) * CHUNK_SAMPLES)
                samples = _encode(
                    self._t[start - base : stop - base], self._v[start - base : stop - base]
                )
                out[chunk] = f"{start},{samples}"
                chunk += 1
        oldest = first // CHUNK_SAMPLES
        for gone in [c for c in self._stored if c < oldest]:
            out[gone] = None
            self._stored.discard(gone)
        self._stored.update(c for c, text in out.items() if text is not None)
        self._saved = end
        return out

    @property
    def end(self) -> int:
        """The number the next sample will have (a checkpoint keeps it too)."""
        return self._base + len(self._t)

    def load_chunks(self, first: int, chunks: dict[int, str], end: int | None = None) -> None:
        """Restore the window whose oldest sample was number ``first`` (and whose next would
        be ``end``, when known) from the chunks a checkpoint holds (they may hold older
        samples: only chunks wholly out of the window are deleted). Raises ValueError when
        they do not hold every sample from ``first`` to ``end``."""
        times, values = array("d"), array("d")
        expected = first
        for chunk in sorted(chunks):
            start_text, _, samples = chunks[chunk].partition(",")
            start = int(start_text)
            t, v = _decode(samples)
            if start + len(t) <= first:
                continue  # wholly before the window: left for the next checkpoint to delete
            skip = max(0, first - start)
            if start + skip != expected:
                found = start + skip
                raise ValueError(
                    f"rate window chunk {chunk} starts at sample {found}, not {expected}"
                )
            times.extend(t[skip:])
            values.extend(v[skip:])
            expected = start + len(t)
        if end is not None and expected != end:
            raise ValueError(f"rate window chunks end at sample {expected}, not {end}")
        self._t, self._v, self._head = times, values, 0
        self._base = first
        self._saved = expected
        self._stored = set(chunks)


CHUNK_SAMPLES = 64
"""Samples in a rate window's checkpoint chunk."""


def _encode(times: array[float], values: array[float]) -> str:
    """Samples as base64 of IEEE 754 doubles, little-endian, the times then the values: exact,
    and half the size of the same floats in JSON text."""
    if sys.byteorder == "big":
        times, values = array("d", times), array("d", values)
        times.byteswap()
        values.byteswap()
    return base64.b64encode(times.tobytes() + values.tobytes()).decode("ascii")


def _decode(text: str) -> tuple[array[float], array[float]]:
    raw = base64.b64decode(text, validate=True)
    if len(raw) % 16:
        raise ValueError(f"a rate window chunk of {len(raw)} bytes does not hold whole samples")
    times, values = array("d"), array("d")
    times.frombytes(raw[: len(raw) // 2])
    values.frombytes(raw[len(raw) // 2 :])
    if sys.byteorder == "big":
        times.byteswap()
        values.byteswap()
    return times, values


class _Point:
    """A point's rules and what its rules need to remember besides their machines."""

    def __init__(self, spec: PointRules, now: float) -> None:
        self.spec = spec
        self.machines: dict[str, Machine] = {}
        self.limits: list[tuple[Machine, LimitRule, float]] = []
        self.rate: Machine | None = None
        self.mkt: Machine | None = None
        self.fault: Machine | None = None
        self.comm: Machine | None = None
        self.comm_intervals = 0
        self.saved: bytes | None = None
        """Digest of this point's entry as last checkpointed (see ``Engine._if_changed``)."""
        self.last_t: float | None = None
        self.last_good_at = now
        self.offline_at: float | None = None
        self.through = 0
        self.window = RateWindow(0.0)
        self.rate_window_secs = 0.0
        self.rate_max = 0.0
        self.rolling: RollingMkt | None = None
        self._build(spec.rules)

    def _machine(
        self, name: str, kind: str, severity: str, limit: float | None, direction: int,
        *, on: float, samples: int | None, off: float,
    ) -> Machine:  # fmt: skip
        rules = self.spec.rules
        realarm = rules.realarm_mins
        machine = Machine(
            rule=f"{self.spec.device}.{self.spec.point}.{name}",
            kind=kind,
            severity=severity,
            limit=limit,
            direction=direction,
            on_delay_secs=on,
            on_delay_samples=samples,
            off_delay_secs=off,
            realarm_secs=realarm * 60 if realarm else None,
        )
        self.machines[name] = machine
        return machine

    def _build(self, rules: QuantityRules) -> None:
        on = rules.on_delay_secs or 0.0
        off = rules.off_delay_secs or 0.0
        for level in ("low_low", "low", "high", "high_high"):
            rule = getattr(rules, level)
            if not isinstance(rule, LimitRule):
                continue
            hyst = rule.hysteresis if rule.hysteresis is not None else (rules.hysteresis or 0.0)
            direction = 1 if level.startswith("high") else -1
            samples = rule.on_delay_samples
            if samples is None and rule.on_delay_secs is None:
                samples = rules.on_delay_samples
            machine = self._machine(
                level, "limit", rule.severity, rule.limit, direction,
                on=_pick(rule.on_delay_secs, on), samples=samples,
                off=_pick(rule.off_delay_secs, off),
            )  # fmt: skip
            self.limits.append((machine, rule, hyst))
        if rules.rate:
            r = rules.rate
            self.rate = self._machine(
                "rate", "rate", r.severity, r.max_per_min, 1,
                on=_pick(r.on_delay_secs, 0.0), samples=r.on_delay_samples,
                off=_pick(r.off_delay_secs, off),
            )  # fmt: skip
            self.rate_window_secs, self.rate_max = r.window_mins * 60, r.max_per_min
            self.window = RateWindow(self.rate_window_secs)
        if rules.mkt:
            m = rules.mkt
            self.mkt = self._machine(
                "mkt", "mkt", m.severity, m.limit, 1, on=0, samples=None, off=0
            )
            self.rolling = RollingMkt(m.window_hours * 3600, m.activation_energy_k)
        if rules.sensor_fault:
            f = rules.sensor_fault
            self.fault = self._machine(
                "sensor_fault", "sensor_fault", f.severity, None, 0,
                on=_pick(f.on_delay_secs, 0.0), samples=f.on_delay_samples,
                off=_pick(f.off_delay_secs, 0.0),
            )  # fmt: skip
        if rules.comm_loss:
            c = rules.comm_loss
            self.comm = self._machine(
                "comm_loss", "comm_loss", c.severity, None, 0, on=0, samples=None, off=0
            )
            self.comm_intervals = c.intervals

    def dump(self) -> dict[str, Any]:
        """What a checkpoint keeps of the point besides its machines, its rate window's chunks
        and its MKT buckets (``window_from``, ``window_end``: the numbers of the window's oldest
        sample and of its next)."""
        return {
            "last_t": self.last_t,
            "last_good_at": self.last_good_at,
            "offline_at": self.offline_at,
            "window_from": self.window.first,
            "window_end": self.window.end,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.last_t = state.get("last_t")
        self.last_good_at = state.get("last_good_at", self.last_good_at)
        self.offline_at = state.get("offline_at")
        if "window" in state:  # a checkpoint from before the windows were chunked
            self.window.load(state["window"])
        if self.rolling is not None and "mkt" in state:  # from before buckets were grouped
            self.rolling.load(state["mkt"])
        self.through = int(state.get("through", 0))


def _pick(value: float | None, default: float) -> float:
    return default if value is None else value


class Engine:
    """All points' rules; feed it readings, device status, ticks and acknowledgements."""

    def __init__(
        self,
        points: Iterable[PointRules],
        *,
        now: float,
        lots: LotsBetween | None = None,
        gateway: Iterable[GatewayCondition] = (),
    ) -> None:
        self._points = {(p.device, p.point): _Point(p, now) for p in points if _has_rules(p)}
        for condition in gateway:
            self._declare(condition, now)
        self._by_device: dict[str, list[_Point]] = {}
        for point in self._points.values():
            self._by_device.setdefault(point.spec.device, []).append(point)
        self._lots = lots
        self._started = now
        self.through = 0
        self.next_id = 1
        self._unacked: dict[str, dict[str, Any]] = {}
        """Alarms that cleared before anyone acknowledged them, by id."""
        self._events: dict[str, dict[str, Any]] = {}
        """Events not over yet (active, or cleared awaiting an acknowledgement), by id."""
        self._fired: dict[str, None] = {}
        """``once`` rules that have fired (an ordered set)."""
        self.events_through = 0
        """The highest source ``seq`` an event was raised for: a replay skips up to here."""
        self._through_rules: list[str] = []
        self.judged_through = 0
        """Custody records up to here have been judged for exceptions (periodic checkpoint
        only: a record's events may still be queued when a later one's are sealed)."""
        """The rules raised from the record ``events_through`` (one scan, several events)."""
        self.damaged: list[str] = []
        """What :meth:`load` could not read and started afresh: a point's rate window or MKT
        buckets (derived memory: the window refills, the rule judges again once it holds half
        of it). The service seals each as ``buffer_repaired``."""
        self._orphans: list[str] = []
        """Checkpoint entries to delete: the rate windows and MKT buckets of points no longer
        configured, and those that could not be read."""

    @property
    def machines(self) -> Iterable[tuple[_Point, Machine]]:
        for point in self._points.values():
            for machine in point.machines.values():
                yield point, machine

    def has_point(self, device: str, point: str) -> bool:
        return (device, point) in self._points

    def _declare(self, condition: GatewayCondition, now: float) -> None:
        key = (GATEWAY, condition.area)
        point = self._points.get(key)
        if point is None:
            spec = PointRules(GATEWAY, GATEWAY, condition.area, condition.unit, QuantityRules(), 0)
            point = self._points[key] = _Point(spec, now)
        machine = point._machine(
            condition.name, condition.name, condition.severity, None, 1, on=0, samples=None, off=0
        )
        machine.rule = f"gateway.{condition.area}.{condition.name}"

    def condition(
        self, area: str, name: str, *, active: bool, clear: bool, value: float | None,
        limit: float | None, now: float,
    ) -> list[Transition]:  # fmt: skip
        """Step a declared gateway condition: ``active`` raises it (at once), ``clear`` (its
        own hysteresis, decided by the caller) clears it."""
        point = self._points[(GATEWAY, area)]
        machine = point.machines[name]
        machine.limit = limit
        out: list[Transition] = []
        self._step(out, point, machine, None, active, clear, now, value, now)
        return out

    def quiet(self, device: str, point: str, value: float, t: float | None = None) -> bool:
        """Would a good ``value`` of this point leave every rule of the point where it is (all
        normal, no limit crossed)? Such a reading decides nothing (buffer thinning). Given the
        reading's time ``t``, the rate and MKT rules are asked too (a recording policy: the
        reading is then absorbed, not sealed, so it must not move any rule)."""
        found = self._points.get((device, point))
        if found is None:
            return True
        if any(m.phase != "normal" for m in found.machines.values()):
            return False
        for machine, rule, _hyst in found.limits:
            if (value > rule.limit) if machine.direction > 0 else (value < rule.limit):
                return False
        if t is None:
            return True
        if found.last_t is not None and t < found.last_t:
            return False  # late: observe() treats it apart; seal it
        if found.rate is not None:
            t0, v0 = found.window.peek(t, value)
            long_enough = t - t0 >= found.rate_window_secs / 2
            if long_enough and abs((value - v0) / ((t - t0) / 60)) > found.rate_max:
                return False
        if found.mkt is not None and found.rolling is not None and found.mkt.limit is not None:
            mkt = found.rolling.peek(t, value)
            if mkt is None or mkt > found.mkt.limit:
                return False
        return True

    def alive(self, device: str, point: str, at: float) -> None:
        """A good reading of the point arrived but was not sealed (buffer thinning): the device
        is reachable, so its communication-loss clock restarts."""
        found = self._points.get((device, point))
        if found is not None:
            found.last_good_at = max(found.last_good_at, at)
            found.offline_at = None

    # -- input -------------------------------------------------------------------------------

    def observe(self, reading: Reading) -> list[Transition]:
        point = self._points.get((reading.device, reading.point))
        seq = reading.seq
        self.through = max(self.through, seq)
        if point is None or seq <= point.through:
            return []
        point.through = seq
        return self._judge(point, reading, seq)

    def absorb(self, reading: Reading) -> list[Transition]:
        """A good reading a recording policy did not seal (:meth:`quiet` said it moves no
        rule): it feeds the rules' memory (rate window, MKT, the point's clock and
        communication) as :meth:`observe` would. Should it move a rule after all, the
        transition is returned, cited at the last sealed record, rather than lost."""
        point = self._points.get((reading.device, reading.point))
        if point is None:
            return []
        return self._judge(point, reading, None)

    def _judge(self, point: _Point, reading: Reading, seq: int | None) -> list[Transition]:
        good = reading.quality == "good" and reading.value is not None
        out: list[Transition] = []
        if good:
            # Any good value, even a late one, says the device is reachable.
            point.last_good_at = max(point.last_good_at, reading.at)
            point.offline_at = None
            if point.comm is not None:
                self._step(out, point, point.comm, seq, False, True, reading.at, None, reading.at)
            if point.rolling is not None:
                point.rolling.add(reading.t, reading.value)  # type: ignore[arg-type]
            if point.last_t is not None and reading.t < point.last_t:
                return out  # late (back-filled): judged already; MKT has it
            # Only good values set the point's clock: a bad reading made while a logger was
            # unreachable carries the gateway's time, not the logger's.
            point.last_t = reading.t
        if point.fault is not None and (good or point.offline_at is None):
            # A device that does not answer is a communication loss, not a sensor fault: its
            # bad readings (sealed after its device_offline record) leave the fault rule be.
            self._step(
                out, point, point.fault, seq, not good, good, reading.t, reading.value, reading.at
            )
        if not good:
            return out
        value = reading.value
        assert value is not None
        for machine, rule, hyst in point.limits:
            if machine.direction > 0:
                cond, clear_ok = value > rule.limit, value <= rule.limit - hyst
            else:
                cond, clear_ok = value < rule.limit, value >= rule.limit + hyst
            self._step(out, point, machine, seq, cond, clear_ok, reading.t, value, reading.at)
        if point.rate is not None:
            rate = self._rate(point, reading.t, value)
            if rate is not None:
                over = abs(rate) > point.rate_max
                self._step(out, point, point.rate, seq, over, not over, reading.t, rate, reading.at)
        if point.mkt is not None and point.rolling is not None:
            mkt = point.rolling.value()
            if mkt is not None and point.mkt.limit is not None:
                over = mkt > point.mkt.limit
                self._step(
                    out, point, point.mkt, seq, over, not over, reading.t, round(mkt, 4), reading.at
                )
        return out

    def _rate(self, point: _Point, t: float, value: float) -> float | None:
        t0, v0 = point.window.add(t, value)
        if t - t0 < point.rate_window_secs / 2:
            return None
        return (value - v0) / ((t - t0) / 60)

    def device_status(self, device: str, online: bool, at: float, seq: int) -> None:
        """The device went offline / came back (its audit records): subscriptions' comm loss."""
        self.through = max(self.through, seq)
        for point in self._by_device.get(device, []):
            if seq <= point.through:
                continue
            point.through = seq
            if online:
                point.offline_at = None
                point.last_good_at = max(point.last_good_at, at)
            elif point.offline_at is None:
                point.offline_at = at

    def tick(self, now: float, evidence_until: float | None = None) -> list[Transition]:
        """Communication loss and re-alarms, on the gateway's clock. ``evidence_until``: up to
        when every reading taken has been observed (the recorder may hold readings it has not
        committed yet: a full disk, a flood); silence is judged only up to then, so a device is
        never called lost because the gateway lags behind its data."""
        out: list[Transition] = []
        judged = now if evidence_until is None else min(now, evidence_until)
        for point in self._points.values():
            comm = point.comm
            if comm is not None and comm.phase == "normal":
                if not point.spec.changes_only:
                    threshold = point.comm_intervals * point.spec.interval_secs
                    lost = judged - point.last_good_at > threshold
                    since = point.last_good_at
                elif point.offline_at is not None:
                    # A subscription reports changes only: silence is normal, offline is not.
                    window = point.comm_intervals * point.spec.interval_secs
                    lost = judged - point.offline_at > window
                    since = point.offline_at
                else:
                    lost = False
                if lost:
                    # Started when the last good reading came (or the device went offline).
                    self._step(out, point, comm, None, True, False, since, None, now)
            for machine in point.machines.values():
                if (
                    machine.phase == "active"
                    and not machine.acked
                    and machine.realarm_secs is not None
                    and machine.notified_at is not None
                    and now - machine.notified_at >= machine.realarm_secs
                ):
                    machine.realarms += 1
                    machine.notified_at = now
                    out.append(self._transition(point, machine, "active", now, self.through))
        return out

    def acknowledge(
        self, alarm_id: str, by: str, comment: str, now: float, os_user: str | None = None
    ) -> Transition:
        if alarm_id in self._events:
            return self._ack_event(alarm_id, by, comment, now, os_user)
        for point, machine in self.machines:
            if machine.alarm_id == alarm_id and machine.phase == "active":
                if machine.acked:
                    raise RuleError(f"alarm {alarm_id} is already acknowledged")
                machine.acked = True
                return self._transition(
                    point, machine, "acknowledged", now, self.through,
                    by=by, comment=comment, os_user=os_user,
                )  # fmt: skip
        cleared = self._unacked.pop(alarm_id, None)
        if cleared is None:
            raise RuleError(f"no alarm {alarm_id} awaiting acknowledgement")
        point = self._points[(cleared["device"], cleared["point"])]
        machine = next(m for m in point.machines.values() if m.rule == cleared["rule"])
        return Transition(
            alarm_id=alarm_id, rule=machine.rule, kind=machine.kind, severity=machine.severity,
            state="acknowledged", zone=point.spec.zone, device=point.spec.device,
            point=point.spec.point, unit=point.spec.unit, started_at=cleared["started_at"],
            at=now, value=cleared["value"], limit=machine.limit, extreme=cleared["extreme"],
            lots=cleared["lots"], condition="normal", by=by, comment=comment, os_user=os_user,
            entries={_key("unacked"): _dumps(self._unacked)},
        )  # fmt: skip

    # -- events ------------------------------------------------------------------------------

    def raise_event(self, event: Event, at: float, seq: int | None = None) -> list[Transition]:
        """Raise ``event`` (judged from the record ``seq``, if any) unless it is a replay, its
        rule is still active, or it is a ``once`` rule that has fired."""
        if seq is not None and (
            seq < self.events_through
            or (seq == self.events_through and event.rule in self._through_rules)
        ):
            return []
        if event.once and event.rule in self._fired:
            return []
        if any(e["rule"] == event.rule and e["phase"] == "active" for e in self._events.values()):
            return []
        alarm_id = f"A{self.next_id}"
        self.next_id += 1
        if seq is not None:
            if seq > self.events_through:
                self.events_through, self._through_rules = seq, []
            self._through_rules.append(event.rule)
        if event.once:
            self._fired[event.rule] = None
            while len(self._fired) > FIRED_KEEP:
                self._fired.pop(next(iter(self._fired)))
        self._events[alarm_id] = {
            "rule": event.rule, "kind": event.kind, "severity": event.severity,
            "zone": event.zone, "device": event.device, "lots": list(event.lots),
            "detail": event.detail, "value": event.value, "limit": event.limit,
            "latched": event.latched, "started_at": at, "acked": False, "phase": "active",
        }  # fmt: skip
        return [self._event_transition(alarm_id, "active", at)]

    def resolve_event(self, rule: str, at: float) -> list[Transition]:
        """What the active, unlatched event of ``rule`` is about has been put right: clear it."""
        for alarm_id, event in list(self._events.items()):
            if event["rule"] == rule and event["phase"] == "active" and not event["latched"]:
                event["phase"] = "cleared"
                return [self._event_transition(alarm_id, "cleared", at)]
        return []

    def settle(self, alarm_id: str, at: float) -> list[Transition]:
        """After an acknowledgement: a latched event is over (its ``cleared``)."""
        event = self._events.get(alarm_id)
        if event is None or not event["latched"] or not event["acked"]:
            return []
        event["phase"] = "cleared"
        return [self._event_transition(alarm_id, "cleared", at)]

    def _ack_event(
        self, alarm_id: str, by: str, comment: str, now: float, os_user: str | None
    ) -> Transition:
        event = self._events[alarm_id]
        if event["acked"]:
            raise RuleError(f"alarm {alarm_id} is already acknowledged")
        event["acked"] = True
        return self._event_transition(
            alarm_id, "acknowledged", now, by=by, comment=comment, os_user=os_user
        )

    def _event_transition(
        self, alarm_id: str, state: State, at: float,
        *, by: str | None = None, comment: str | None = None, os_user: str | None = None,
    ) -> Transition:  # fmt: skip
        event = self._events[alarm_id]
        condition: Literal["active", "normal"] = (
            "normal" if event["phase"] == "cleared" else "active"
        )
        transition = Transition(
            alarm_id=alarm_id, rule=event["rule"], kind=event["kind"],
            severity=event["severity"], state=state, zone=event["zone"],
            device=event["device"], point="", unit=None, started_at=event["started_at"],
            at=at, value=event["value"], limit=event["limit"], extreme=None,
            lots=list(event["lots"]), condition=condition, by=by, comment=comment,
            os_user=os_user, detail=event["detail"],
        )  # fmt: skip
        if event["phase"] == "cleared" and event["acked"]:
            del self._events[alarm_id]  # over
        transition.entries = self._event_entries()
        return transition

    def _event_entries(self) -> dict[str, str]:
        return {
            _key("events"): _dumps(self._events),
            _key("fired"): _dumps(list(self._fired)),
            _key("events_through"): _dumps([self.events_through, self._through_rules]),
            _key("next"): str(self.next_id),
        }

    # -- transitions -------------------------------------------------------------------------

    def _step(
        self, out: list[Transition], point: _Point, machine: Machine, seq: int | None,
        cond: bool, clear_ok: bool, t: float, value: float | None, at: float,
    ) -> None:  # fmt: skip
        """One observation for ``machine``; ``seq`` None for the gateway's clock (ticks)."""
        if seq is not None and seq <= machine.through:
            return  # seen before the checkpoint it was restored from
        seq = self.through if seq is None else seq
        event = machine.step(cond, clear_ok, t, value)
        if event == "active":
            machine.alarm_id = f"A{self.next_id}"
            self.next_id += 1
            machine.notified_at = at
            out.append(self._transition(point, machine, "active", at, seq))
        elif event == "cleared":
            out.append(self._transition(point, machine, "cleared", at, seq))

    def _transition(
        self, point: _Point, machine: Machine, state: State, at: float, seq: int,
        *, by: str | None = None, comment: str | None = None, os_user: str | None = None,
    ) -> Transition:  # fmt: skip
        assert machine.alarm_id is not None
        assert machine.started_at is not None
        spec = point.spec
        end = at if state != "cleared" else max(at, machine.started_at)
        lots = (
            self._lots(spec.zone, _dt(machine.started_at), _dt(end))
            if self._lots and spec.zone != GATEWAY
            else []
        )
        transition = Transition(
            alarm_id=machine.alarm_id, rule=machine.rule, kind=machine.kind,
            severity=machine.severity, state=state, zone=spec.zone, device=spec.device,
            point=spec.point, unit=spec.unit, started_at=machine.started_at, at=at,
            value=machine.value, limit=machine.limit, extreme=machine.extreme, lots=lots,
            condition="normal" if state == "cleared" else "active", realarm=machine.realarms,
            by=by, comment=comment, os_user=os_user,
        )  # fmt: skip
        if state == "cleared":
            if not machine.acked:
                self._unacked[machine.alarm_id] = {
                    "rule": machine.rule, "device": spec.device, "point": spec.point,
                    "started_at": machine.started_at, "value": machine.value,
                    "extreme": machine.extreme, "lots": lots, "cleared_at": at,
                }  # fmt: skip
                while len(self._unacked) > UNACKED_KEEP:
                    self._unacked.pop(next(iter(self._unacked)))
            machine.reset_alarm()
        machine.through = max(machine.through, seq)
        transition.entries = {
            _key("m", machine.rule): _dumps({**machine.dump(), "through": machine.through}),
            _key("next"): str(self.next_id),
            _key("unacked"): _dumps(self._unacked),
        }
        return transition

    # -- views and checkpoints ---------------------------------------------------------------

    def alarms(self) -> list[AlarmView]:
        """Alarms not yet over: pending, active, acknowledged, and cleared awaiting an ack."""
        views = []
        for point, machine in self.machines:
            if machine.phase == "normal":
                continue
            state = "pending" if machine.phase == "pending" else (
                "acknowledged" if machine.acked else "active"
            )  # fmt: skip
            views.append(
                AlarmView(
                    machine.alarm_id or "-",
                    machine.rule,
                    point.spec.zone,
                    machine.severity,
                    state,
                    machine.started_at or machine.since or 0.0,
                    machine.value,
                    machine.limit,
                )
            )
        for alarm_id, event in self._events.items():
            state = "cleared" if event["phase"] == "cleared" else (
                "acknowledged" if event["acked"] else "active"
            )  # fmt: skip
            view = AlarmView(
                alarm_id, event["rule"], event["zone"], event["severity"], state,
                event["started_at"], event["value"], event["limit"],
            )  # fmt: skip
            views.append(view)
        for alarm_id, cleared in self._unacked.items():
            found = self._points.get((cleared["device"], cleared["point"]))
            zone = found.spec.zone if found else "?"
            views.append(
                AlarmView(
                    alarm_id,
                    cleared["rule"],
                    zone,
                    "",
                    "cleared",
                    cleared["started_at"],
                    cleared["value"],
                    None,
                )
            )
        return views

    def active(self) -> list[tuple[PointRules, Machine]]:
        return [(p.spec, m) for p, m in self.machines if m.phase == "active"]

    def watched_events(self, kind: str) -> list[tuple[str, dict[str, Any], str]]:
        """Active unlatched events of ``kind``: (rule, detail, zone)."""
        return [
            (e["rule"], e["detail"], e["zone"])
            for e in self._events.values()
            if e["kind"] == kind and e["phase"] == "active" and not e["latched"]
        ]

    def active_events(self) -> list[dict[str, Any]]:
        """Active events: ``rule``, ``zone``, ``severity``, ``acked``…"""
        return [e for e in self._events.values() if e["phase"] == "active"]

    def checkpoint(self) -> dict[str, str | None]:
        """Entries that bring a stored checkpoint up to now (only what changed, plus the
        through-``seq`` that every entry not rewritten is valid at); None deletes an entry (a
        rate window's chunk or MKT group that has left its window, or one no point uses)."""
        # First: a window that started afresh writes its chunks under the same keys.
        entries: dict[str, str | None] = dict.fromkeys(self._orphans)
        self._orphans = []
        for _point, machine in self.machines:
            self._if_changed(entries, machine, "m", machine.rule, machine.dump())
        for (device, name), point in self._points.items():
            self._if_changed(entries, point, "p", f"{device}.{name}", point.dump())
            for chunk, samples in point.window.changed_chunks().items():
                entries[_key("w", f"{device}.{name}", str(chunk))] = samples
            if point.rolling is not None:
                for group, buckets in point.rolling.changed_groups().items():
                    entries[_key("mkt", f"{device}.{name}", str(group))] = buckets
        entries[_key("next")] = str(self.next_id)
        entries[_key("unacked")] = _dumps(self._unacked)
        entries[_key("through")] = str(self.through)
        entries.update(self._event_entries())
        entries[_key("judged_through")] = str(self.judged_through)
        return entries

    def _if_changed(
        self,
        entries: dict[str, str | None],
        holder: Machine | _Point,
        kind: str,
        name: str,
        state: dict[str, Any],
    ) -> None:
        """Put ``state`` (with the through-``seq``) in ``entries`` under ``kind:name`` unless
        it is what the last checkpoint wrote for ``holder``. The digest lives on the machine or
        point, not in a map keyed by entry name: at 10,000 points such a map held ~55,000 key
        strings, 7 MB, and rebuilt each of them every checkpoint."""
        if holder.saved != (digest := _digest(_dumps(state))):
            entries[_key(kind, name)] = _dumps({**state, "through": self.through})
            holder.saved = digest

    def load(self, entries: dict[str, str]) -> int:
        """Restore from checkpoint entries (keys with the ``rules:`` prefix removed); returns
        the ``seq`` after which readings must be replayed."""
        through = int(entries.get("through", "0"))
        self.next_id = int(entries.get("next", "1"))
        self._unacked = orjson.loads(entries.get("unacked", "{}"))
        self._events = orjson.loads(entries.get("events", "{}"))
        self._fired = dict.fromkeys(orjson.loads(entries.get("fired", "[]")))
        self.events_through, self._through_rules = orjson.loads(
            entries.get("events_through", "[0, []]")
        )
        self.judged_through = int(entries.get("judged_through", str(through)))
        for _point, machine in self.machines:
            text = entries.get(f"m:{machine.rule}")
            if text is not None:
                state = orjson.loads(text)
                machine.load(state)
                machine.saved = _digest(_dumps(machine.dump()))
            machine.through = max(machine.through, through)
        parts: dict[str, dict[str, dict[int, str]]] = {"w": {}, "mkt": {}}
        for key, text in entries.items():
            kind, _, rest = key.partition(":")
            if kind in parts:
                name, _, number = rest.rpartition(":")
                parts[kind].setdefault(name, {})[int(number)] = text
        windows, buckets = parts["w"], parts["mkt"]
        dropped: list[str] = []  # the entries of what could not be read
        for (device, name), point in self._points.items():
            text = entries.get(f"p:{device}.{name}")
            state = orjson.loads(text) if text is not None else {}
            if text is not None:
                point.load(state)
                # The gateway's own downtime is on record (agent_stopped / agent_started); it
                # is not the device's communication loss.
                point.last_good_at = max(point.last_good_at, self._started)
            # A window or MKT whose rule was removed is left in ``parts``: deleted below with
            # those of points no longer configured.
            if point.rate is not None and (chunks := windows.pop(f"{device}.{name}", None)):
                try:
                    end = state.get("window_end")
                    first = int(state.get("window_from", 0))
                    point.window.load_chunks(first, chunks, None if end is None else int(end))
                except ValueError as exc:
                    point.window = RateWindow(point.window.secs)
                    self.damaged.append(f"{device}.{name}: rate window ({exc}): starts empty")
                    dropped += [_key("w", f"{device}.{name}", str(c)) for c in chunks]
            if point.rolling is not None and (groups := buckets.pop(f"{device}.{name}", None)):
                try:
                    point.rolling.load_groups(groups)
                except (ValueError, TypeError, IndexError) as exc:
                    r = point.rolling
                    point.rolling = RollingMkt(r.window_secs, r.dh_r)
                    self.damaged.append(f"{device}.{name}: MKT buckets ({exc}): start empty")
                    dropped += [_key("mkt", f"{device}.{name}", str(g)) for g in groups]
            point.through = max(point.through, through)
        # Those of points no longer configured, or of rules removed: deleted at the next
        # checkpoint.
        self._orphans = dropped + [
            _key(kind, name, str(number))
            for kind, found in parts.items()
            for name, numbers in found.items()
            for number in numbers
        ]
        self.through = through
        return through


def _has_rules(point: PointRules) -> bool:
    rules = point.rules
    return any(
        getattr(rules, name)
        for name in (
            "low_low",
            "low",
            "high",
            "high_high",
            "rate",
            "mkt",
            "sensor_fault",
            "comm_loss",
        )
    )


def _key(*parts: str) -> str:
    return KEY_PREFIX + ":".join(parts)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)
