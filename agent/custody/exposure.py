"""Time out of storage per lot: how long each lot has spent outside its required condition.

Part of the lot register's projection of the chain (agent/custody/lots.py): applied in ``seq`` order
in the same transactions as the presences, so it is durable, survives restarts and is rebuilt
with the register. For a lot whose product is in the product master:

- a *stay* (the lot present in a zone) in a zone whose profile does not keep the product's
  required profile (a receiving dock, config/conditions.py) counts whole, from arrival to
  departure, whatever the readings say and whether or not the agent was running;
- a stay in a zone that keeps it counts while the zone's temperature is outside the product's
  condition band: each good reading of a temperature point of the zone stands for the zone
  until the zone's next reading (for at most :data:`HOLD_INTERVALS` of its device's
  interval), and the zone is outside when any of its points is. Time the agent was down is
  not counted for these: no reading says what happened (a data logger's back-fill does not
  re-open the past either).

Times are the records' ``at``. Time counted is kept as intervals (``exposure`` table); a lot's
total is their union, so parts of one lot in two bad places at once count once. Every stay
also keeps the temperature readings' count, minimum, maximum and the sum of their kinetic
terms (``stay_stats``) for the mean kinetic temperature.

:meth:`ExposureBook.check` (the lot feed calls it every second) returns the events to raise:
``tos_warning`` at ``exceptions.tos_warn_share`` of the product's ``tos_allowance_hours``,
``tos_exhausted`` at ``tos_alarm_share``, each once per lot; ``freezing`` at once when a
``do_not_freeze`` lot's zone reads at or below 0 °C (such time counts in any zone).

The product rule of a stay is looked up when the stay starts; a product master reloaded later
applies to stays that start after it.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from gxpgate.agent.alarms.mkt import kinetic_term
from gxpgate.agent.alarms.points import point_rules
from gxpgate.agent.alarms.rules import Event
from gxpgate.agent.custody.exceptions import rule_id
from gxpgate.agent.evidence import format_time, parse_time
from gxpgate.config.conditions import FREEZING_C, Band, condition, unmet
from gxpgate.config.model import GatewayConfig
from gxpgate.config.products import Policy
from gxpgate.config.profiles import resolve_profile
from gxpgate.config.rules_model import QUANTITY_UNITS

__all__ = ["HOLD_INTERVALS", "ExposureBook", "union_secs"]

HOLD_INTERVALS: Final = 3
"""A reading stands for its point for at most this many of its device's intervals."""
_CONTIGUOUS_SECS: Final = 1e-3


def epoch(text: str) -> float:
    return parse_time(text).timestamp()


def union_secs(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals."""
    total = 0.0
    current_start: float | None = None
    current_end = 0.0
    for start, end in sorted(intervals):
        if current_start is None or start > current_end:
            if current_start is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_start is not None:
        total += current_end - current_start
    return total


@dataclass(slots=True)
class _Stay:
    presence: int
    lot: str
    zone: str
    since: float
    band: Band | None
    """The product's temperature condition; None: no product rule or no band (not judged)."""
    wrong: bool
    """The zone does not keep the product's profile: the whole stay counts."""
    freeze: bool
    allowance: float | None
    """Seconds; None: the product has no allowance on record."""
    product: str | None
    required: str | None
    stats: list[float] = field(default_factory=lambda: [0, 0.0, 0.0, 0.0])
    """count, min, max, sum of kinetic terms."""
    excursion: _Interval | None = None
    """The excursion interval this stay extends while contiguous."""

    @property
    def group(self) -> tuple[Band | None, bool] | None:
        """What decides whether a reading is outside for this stay; None: readings do not
        count for it (a zone of another profile counts whole, no product counts nothing)."""
        if self.wrong or (self.band is None and not self.freeze):
            return None
        return (self.band, self.freeze)


@dataclass(slots=True)
class _Group:
    """The excursions of one zone for the stays that share a band (and freeze flag), kept once
    per reading and handed to those stays only when a stay starts or ends or at a flush."""

    current: list[float] | None = None
    closed: list[tuple[float, float]] = field(default_factory=list)

    def extend(self, start: float, end: float) -> None:
        if self.current is not None and start <= self.current[1] + _CONTIGUOUS_SECS:
            self.current[1] = end
            return
        self.close()
        self.current = [start, end]

    def close(self) -> None:
        if self.current is not None:
            self.closed.append((self.current[0], self.current[1]))
            self.current = None

    def intervals(self) -> list[tuple[float, float]]:
        found = list(self.closed)
        if self.current is not None:
            found.append((self.current[0], self.current[1]))
        return found


@dataclass(slots=True, eq=False)
class _Interval:
    """An excursion interval, written at the next :meth:`ExposureBook.flush`."""

    lot: str
    zone: str
    presence: int
    start: float
    end: float
    row: int | None = None


class ExposureBook:
    """The exposure projection; called by :class:`~gxpgate.agent.custody.lots.LotRegister` under its
    lock."""

    def __init__(
        self,
        config: GatewayConfig,
        policy: Callable[[], Policy],
        *,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.policy = policy
        self.clock = clock
        self._db: sqlite3.Connection | None = None
        self._lock: threading.Lock | None = None
        self._points: dict[tuple[str, str], tuple[str, float]] = {
            # A subscription reports changes only: its last value stands until the next.
            # A point recorded by interval has a sealed reading at least once per its record
            # interval while it answers, and the readings between were on its side of every
            # band (agent/alarms/sampling.py): the sealed one stands until the next.
            (p.device, p.point): (
                p.zone,
                math.inf
                if p.changes_only
                else HOLD_INTERVALS * p.interval_secs + p.record_interval_secs,
            )
            for p in point_rules(config)
            if QUANTITY_UNITS.get(p.unit or "") == "temperature"
        }
        """Temperature points → (zone, longest a reading stands for it)."""
        self._stays: dict[str, dict[int, _Stay]] = {}
        """Open stays by zone, then presence id."""
        self._held: dict[str, dict[tuple[str, str], tuple[float, float, float]]] = {}
        """Per zone, per point: the last good reading (at, value, stands until)."""
        self._zone_t: dict[str, float] = {}
        self._dirty_stats: set[int] = set()
        self._dirty: set[_Interval] = set()
        """Excursion intervals changed since the last flush."""
        self._groups: dict[str, dict[tuple[Band | None, bool], _Group]] = {}
        self._segment: dict[str, list[float]] = {}
        """Per zone, the readings' statistics not yet handed to its stays."""
        self._pending: set[str] = set()
        """Zones whose groups hold excursion time not yet handed to their stays."""
        self._touched: set[str] = set()
        """Lots whose exposure changed since the last :meth:`check`."""
        self._reported: dict[str, int] = {}
        """Lot → highest level reported (1 warning, 2 exhausted) since the agent started."""
        self._events: list[Event] = []

    @property
    def points(self) -> frozenset[tuple[str, str]]:
        """The temperature points (device, point) whose good readings it needs."""
        return frozenset(self._points)

    # -- called by the register, under its lock -------------------------------------------------

    def attach(self, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        """Load the open stays from the register's tables (its lock held by the caller)."""
        self._db, self._lock = conn, lock
        self._stays.clear()
        rows = conn.execute(
            "SELECT p.id, p.identifier, p.zone, p.since, s.n, s.min, s.max, s.sum_exp "
            "FROM presence p LEFT JOIN stay_stats s ON s.presence = p.id "
            "WHERE p.kind = 'lot' AND p.until IS NULL"
        ).fetchall()
        for pid, lot, zone, since, n, lo, hi, total in rows:
            stay = self._stay(pid, lot, zone, since)
            if n:
                stay.stats = [n, lo, hi, total]
        for stays in self._stays.values():
            for stay in stays.values():
                if stay.allowance is not None or stay.wrong:
                    self._touched.add(stay.lot)

    def stay_started(self, presence: int, lot: str, zone: str, at: str) -> None:
        self._hand_over(zone)  # what came before belongs to the stays already there
        stay = self._stay(presence, lot, zone, at)
        if stay.group is not None:
            self._groups.setdefault(zone, {}).setdefault(stay.group, _Group())
        self._touched.add(lot)

    def stay_ended(self, presence: int, zone: str, at: str) -> None:
        self._hand_over(zone)
        stay = self._stays.get(zone, {}).pop(presence, None)
        if stay is None:
            return
        groups = self._groups.get(zone, {})
        if stay.group is not None and not any(
            s.group == stay.group for s in self._stays.get(zone, {}).values()
        ):
            groups.pop(stay.group, None)
        assert self._db is not None
        self._db.execute(
            "UPDATE exposure SET end_at = max(?, start_at) WHERE presence = ? AND end_at IS NULL",
            (at, presence),
        )
        self._write_stats(stay)
        self._dirty_stats.discard(presence)
        self._touched.add(stay.lot)

    def reading(self, device: str, point: str, value: Any, at: str, samples: Any = None) -> None:
        """A good temperature reading (others are ignored by the caller); ``samples`` is its
        ``data.samples``, the readings it stands for under a recording policy."""
        found = self._points.get((device, point))
        if found is None or not isinstance(value, int | float):
            return
        zone, hold = found
        value = float(value)
        t = epoch(at)
        previous = self._zone_t.get(zone)
        groups = self._groups.get(zone)
        if groups and previous is not None and t > previous:
            # The interval since the zone's last reading, judged on what stood for it then.
            held = [(v, until) for _t, v, until in self._held.get(zone, {}).values()]
            for (band, freeze), group in groups.items():
                if any(until >= t and _outside(band, freeze, v) for v, until in held):
                    group.extend(previous, t)
                    self._pending.add(zone)
                else:
                    group.close()
        self._held.setdefault(zone, {})[(device, point)] = (t, value, t + hold)
        self._zone_t[zone] = max(t, previous or t)
        stays = self._stays.get(zone)
        if not stays:
            return
        count, low, high, kinetic = _stats(value, samples)
        segment = self._segment.get(zone)
        if segment is None:
            self._segment[zone] = [count, low, high, kinetic]
        else:
            segment[0] += count
            segment[1], segment[2] = min(segment[1], low), max(segment[2], high)
            segment[3] += kinetic
        if value <= FREEZING_C:
            self._events += [self._freezing(s, value) for s in stays.values() if s.freeze]

    def _hand_over(self, zone: str) -> None:
        """Give the zone's stays the statistics and excursion time gathered since the last
        hand-over."""
        stays = self._stays.get(zone, {})
        segment = self._segment.pop(zone, None)
        groups = self._groups.get(zone, {})
        self._pending.discard(zone)
        for stay in stays.values():
            if segment is not None:
                stats = stay.stats
                if stats[0]:
                    stats[1], stats[2] = min(stats[1], segment[1]), max(stats[2], segment[2])
                else:
                    stats[1], stats[2] = segment[1], segment[2]
                stats[0] += segment[0]
                stats[3] += segment[3]
                self._dirty_stats.add(stay.presence)
            group = groups.get(stay.group) if stay.group is not None else None
            if group is not None:
                for start, end in group.intervals():
                    if max(start, stay.since) < end:
                        self._extend(stay, max(start, stay.since), end)
        for group in groups.values():
            group.closed.clear()

    def _hand_over_all(self) -> None:
        for zone in list(self._stays):
            self._hand_over(zone)

    @property
    def wants_write(self) -> bool:
        """Excursion time is waiting to be written (statistics alone can wait)."""
        return bool(self._dirty or self._pending)

    def flush(self) -> None:
        """Write the excursion intervals and the stays' statistics (inside the register's
        transaction)."""
        assert self._db is not None
        self._hand_over_all()
        for interval in self._dirty:
            start, end = format_time(_utc(interval.start)), format_time(_utc(interval.end))
            if interval.row is None:
                cursor = self._db.execute(
                    "INSERT INTO exposure(lot, zone, cause, start_at, end_at, presence) "
                    "VALUES (?, ?, 'excursion', ?, ?, ?)",
                    (interval.lot, interval.zone, start, end, interval.presence),
                )
                interval.row = cursor.lastrowid
            else:
                self._db.execute("UPDATE exposure SET end_at = ? WHERE id = ?", (end, interval.row))
        self._dirty.clear()
        for stays in self._stays.values():
            for stay in stays.values():
                if stay.presence in self._dirty_stats:
                    self._write_stats(stay)
        self._dirty_stats.clear()

    def reset(self) -> None:
        assert self._db is not None
        self._db.execute("DELETE FROM exposure")
        self._db.execute("DELETE FROM stay_stats")
        self._stays.clear()
        self._held.clear()
        self._zone_t.clear()
        self._dirty_stats.clear()
        self._dirty.clear()
        self._groups.clear()
        self._segment.clear()
        self._pending.clear()
        self._touched.clear()

    # -- called by the lot feed's worker ------------------------------------------------------

    def check(self, now: float | None = None) -> list[Event]:
        """Events to raise: freezing seen since the last call, and allowance shares crossed."""
        assert self._lock is not None
        now = self.clock() if now is None else now
        with self._lock:
            for zone in list(self._pending):
                self._hand_over(zone)
            events, self._events = self._events, []
            lots = set(self._touched)
            self._touched.clear()
            latest: dict[str, _Stay] = {}
            for stays in self._stays.values():
                for open_stay in stays.values():
                    if open_stay.wrong:
                        lots.add(open_stay.lot)
                    known = latest.get(open_stay.lot)
                    if known is None or open_stay.since > known.since:
                        latest[open_stay.lot] = open_stay
            for lot in sorted(lots):
                stay = latest.get(lot)
                if stay is None or not stay.allowance or self._reported.get(lot, 0) >= 2:
                    continue  # no allowance, or every level reported already
                share = self._used(lot, now) / stay.allowance
                events += self._crossings(stay, share)
        return events

    def used_secs(self, lot: str, now: float) -> float:
        assert self._lock is not None
        with self._lock:
            for zone in list(self._pending):
                self._hand_over(zone)
            return self._used(lot, now)

    # -- internals ----------------------------------------------------------------------------

    def _stay(self, presence: int, lot: str, zone: str, since: str) -> _Stay:
        policy = self.policy()
        product = policy.product(lot[4:18])
        band: Band | None = None
        wrong = freeze = False
        allowance: float | None = None
        if product is not None:
            profiles = self.config.profiles
            required = resolve_profile(product.profile, profiles)
            band = condition(required)
            zone_profile = resolve_profile(self.config.zones[zone].profile, profiles)
            wrong = unmet(zone_profile, required, product.flags) is not None
            freeze = "do_not_freeze" in product.flags
            if product.tos_allowance_hours is not None:
                allowance = product.tos_allowance_hours * 3600
        stay = _Stay(
            presence, lot, zone, epoch(since), band, wrong, freeze, allowance,
            product.name if product else None, product.profile if product else None,
        )  # fmt: skip
        self._stays.setdefault(zone, {})[presence] = stay
        if wrong:
            assert self._db is not None
            exists = self._db.execute(
                "SELECT 1 FROM exposure WHERE presence = ? AND cause = 'zone'", (presence,)
            ).fetchone()
            if exists is None:
                self._db.execute(
                    "INSERT INTO exposure(lot, zone, cause, start_at, end_at, presence) "
                    "VALUES (?, ?, 'zone', ?, NULL, ?)",
                    (lot, zone, since, presence),
                )
        return stay

    def _extend(self, stay: _Stay, start: float, end: float) -> None:
        interval = stay.excursion
        if interval is not None and start <= interval.end + _CONTIGUOUS_SECS:
            if end <= interval.end:
                return  # handed over before
            interval.end = end
        else:
            interval = stay.excursion = _Interval(stay.lot, stay.zone, stay.presence, start, end)
        self._dirty.add(interval)
        self._touched.add(stay.lot)

    def _write_stats(self, stay: _Stay) -> None:
        assert self._db is not None
        n, lo, hi, total = stay.stats
        if not n:
            return
        self._db.execute(
            "INSERT OR REPLACE INTO stay_stats(presence, n, min, max, sum_exp) "
            "VALUES (?, ?, ?, ?, ?)",
            (stay.presence, int(n), lo, hi, total),
        )

    def _used(self, lot: str, now: float) -> float:
        assert self._db is not None
        rows = self._db.execute(
            "SELECT id, start_at, end_at FROM exposure WHERE lot = ?", (lot,)
        ).fetchall()
        found: dict[object, tuple[float, float]] = {
            row: (epoch(s), epoch(e) if e else now) for row, s, e in rows
        }
        for interval in self._dirty:  # written or not, the interval in memory is the latest
            if interval.lot == lot:
                found[interval.row if interval.row is not None else interval] = (
                    interval.start,
                    interval.end,
                )
        return union_secs([(s, max(s, e)) for s, e in found.values()])

    def _crossings(self, stay: _Stay, share: float) -> list[Event]:
        cfg = self.config.exceptions
        level = 2 if share >= cfg.tos_alarm_share else 1 if share >= cfg.tos_warn_share else 0
        reported = self._reported.get(stay.lot, 0)
        if level <= reported:
            return []
        self._reported[stay.lot] = level
        out = []
        assert stay.allowance is not None
        for lvl, kind, severity, limit in (
            (1, "tos_warning", "warning", cfg.tos_warn_share),
            (2, "tos_exhausted", "alarm", cfg.tos_alarm_share),
        ):
            if reported < lvl <= level:
                detail = self._detail(stay)
                detail.update(
                    allowance_hours=round(stay.allowance / 3600, 6),
                    used_hours=round(share * stay.allowance / 3600, 6),
                    share=round(share, 4),
                )
                event = Event(
                    rule=rule_id(kind, stay.lot, area="exposure"), kind=kind,
                    severity=severity, zone=stay.zone, device="", lots=(stay.lot,),
                    detail=detail, value=round(share, 4), limit=limit, once=True,
                )  # fmt: skip
                out.append(event)
        return out

    def _freezing(self, stay: _Stay, value: float) -> Event:
        return Event(
            rule=rule_id("freezing", stay.lot, area="exposure"), kind="freezing",
            severity="alarm", zone=stay.zone, device="", lots=(stay.lot,),
            detail=self._detail(stay), value=value, limit=FREEZING_C,
        )  # fmt: skip

    def _detail(self, stay: _Stay) -> dict[str, Any]:
        return {
            "lot": stay.lot,
            "gtin": stay.lot[4:18],
            "product": stay.product,
            "required_profile": stay.required,
            "zone": stay.zone,
        }


def _stats(value: float, samples: Any) -> tuple[int, float, float, float]:
    """Count, minimum, maximum and sum of kinetic terms of the readings a record stands for:
    itself, or the ``data.samples`` of a recording policy (their MKT gives the terms' sum)."""
    if isinstance(samples, dict):
        count, low, high, mkt = (samples.get(k) for k in ("count", "min", "max", "mkt"))
        if (
            isinstance(count, int)
            and count > 0
            and isinstance(low, int | float)
            and isinstance(high, int | float)
            and isinstance(mkt, int | float)
        ):
            return count, float(low), float(high), count * kinetic_term(float(mkt))
    return 1, value, value, kinetic_term(value)


def _outside(band: Band | None, freeze: bool, value: float) -> bool:
    if freeze and value <= FREEZING_C:
        return True  # wherever it is, even where its profile would allow it
    return band is not None and not band.holds(value)


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)
