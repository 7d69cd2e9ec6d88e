"""Sample fast, record what matters: which readings a ``record = "interval"`` point seals.

Every reading of such a point reaches the rules (the alarm engine sees it in arrival order, as a
sample listener of the recorder); a reading is *sealed* when it matters:

* the point's first reading, a reading that is not ``good`` or whose quality differs from the
  last sealed one, a reading that carries data (a back-fill, a resume point) or comes late;
* a reading further than ``record_deadband`` from the last sealed one;
* a temperature on the other side of any storage band than the last sealed one (a limit of any
  profile's temperature band, or freezing): exposure is judged on sealed records, and between
  two of them every reading was on the same side of every band;
* a reading that could move a rule: any rule of the point not normal, a limit crossed, a rate
  or MKT over its limit (the engine's :meth:`~gxpgate.agent.alarms.rules.Engine.quiet`), so
  every alarm transition's triggering reading is sealed. The engine is asked as of the last
  commit (at most a group commit behind the reading); should a reading it absorbs later move
  a rule after all (a rate or MKT crossing only the readings in flight reveal), the transition
  is still raised and sealed, cited at the last sealed record;
* ``record_interval_secs`` after the last sealed reading.

A reading that is not sealed is *held back*: it is the one sealed if the point's group must be
closed before the next sealed reading (the reading that changes, a custody scan, its device
going offline, the agent stopping), so a sealed record is always a real reading. A sealed
reading that stands for more readings than itself carries them in ``data.samples``: ``count``,
``min``, ``max``, ``mean``, ``first_at``, ``last_at`` and, for a temperature, their ``mkt``
(ΔH/R 10,000 K) — every reading is counted in exactly one sealed record, so no excursion can
hide between records, and the readings' count, extremes and MKT follow from the chain alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from gxpgate.agent.alarms.mkt import kinetic_term, mkt_of_sum
from gxpgate.agent.alarms.rules import Engine
from gxpgate.agent.evidence import format_time
from gxpgate.agent.recording.audit import AGENT_STOPPED, DEVICE_OFFLINE
from gxpgate.agent.recording.intake import SAMPLE
from gxpgate.agent.recording.sealing import Fact
from gxpgate.config import GatewayConfig
from gxpgate.config.conditions import FREEZING_C, Band, condition
from gxpgate.config.profiles import BUILTIN_PROFILES, resolve_profile
from gxpgate.config.rules_model import QUANTITY_UNITS
from gxpgate.drivers.record_model import point_recording

__all__ = ["RecordingPolicy", "temperature_bands"]

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Spec:
    zone: str
    interval: float
    deadband: float
    temperature: bool


@dataclass(slots=True)
class _Sealed:
    """The point's last sealed reading, as the next one is judged against."""

    value: float | None
    quality: str | None
    t: float
    side: tuple[bool, ...]


@dataclass(slots=True)
class _Group:
    """The good readings since the point's last sealed one (absorbed, not sealed)."""

    count: int
    low: float
    high: float
    total: float
    kinetic: float
    first: datetime
    held: Fact
    """The latest of them: sealed if the group must be closed before the next reading."""

    def add(self, fact: Fact, value: float, temperature: bool) -> None:
        self.count += 1
        self.low, self.high = min(self.low, value), max(self.high, value)
        self.total += value
        if temperature:
            self.kinetic += kinetic_term(value)
        self.held = fact


def temperature_bands(config: GatewayConfig) -> tuple[Band, ...]:
    """The temperature band of every storage profile the site can name (built-in and its own)."""
    bands: set[Band] = set()
    for name in {*BUILTIN_PROFILES, *config.profiles}:
        band = condition(resolve_profile(name, config.profiles))
        if band is not None:
            bands.add(band)
    return tuple(sorted(bands, key=lambda b: (b.low or -math.inf, b.high or math.inf)))


class RecordingPolicy:
    """The intake stage of ``record = "interval"`` points (module docstring); other facts
    pass as they are."""

    def __init__(self, config: GatewayConfig, engine: Engine) -> None:
        self.engine = engine
        self.bands = temperature_bands(config)
        self._specs: dict[Key, _Spec] = {}
        for dev_id, dev in config.devices.items():
            for name, point in dev.points.items():
                mode, interval, deadband = point_recording(dev, point)
                if mode == "interval":
                    temperature = QUANTITY_UNITS.get(point.unit or "") == "temperature"
                    zone = point.zone or dev.zone  # type: ignore[union-attr]
                    self._specs[(dev_id, name)] = _Spec(zone, interval, deadband, temperature)
        self._sealed: dict[Key, _Sealed] = {}
        self._groups: dict[Key, _Group] = {}
        self.absorbed = 0
        """Readings that did not change the picture (held back, then passed on unsealed or
        sealed for their group)."""

    @property
    def active(self) -> bool:
        """Some point records by interval."""
        return bool(self._specs)

    def __call__(self, fact: Fact) -> Sequence[Fact]:
        kind = fact.kind
        if kind == "reading":
            return self._reading(fact)
        if not self._groups:
            return (fact,)
        if kind == "custody":
            # Exposure statistics go to the stays present at a reading's time: a scan closes
            # the groups first. All of them: a scan at the dock may end a stay in a cold room.
            return (*self._close(list(self._groups)), fact)
        if kind == "audit":
            event = fact.data.get("event")
            if event == DEVICE_OFFLINE and fact.device is not None:
                device = fact.device
                return (*self._close(k for k in self._groups if k[0] == device), fact)
            if event == AGENT_STOPPED:
                return (*self._close(list(self._groups)), fact)
        return (fact,)

    def _reading(self, fact: Fact) -> Sequence[Fact]:
        if fact.device is None or fact.point is None:
            return (fact,)
        key = (fact.device, fact.point)
        spec = self._specs.get(key)
        if spec is None:
            return (fact,)
        value = fact.value
        if (
            fact.quality != "good"
            or value is None
            or not math.isfinite(value)
            or fact.data
            or fact.state
        ):
            closed = self._close((key,))
            self._sealed[key] = _Sealed(None, fact.quality, _t(fact), ())
            return (*closed, fact)
        t = _t(fact)
        side = self._side(value) if spec.temperature else ()
        last = self._sealed.get(key)
        group = self._groups.get(key)
        changed = (
            last is None
            or last.quality != "good"
            or last.value is None
            or abs(value - last.value) > spec.deadband
            or side != last.side
            or not self.engine.quiet(fact.device, fact.point, value, t)
        )
        if changed:
            closed = self._close((key,))
            self._sealed[key] = _Sealed(value, fact.quality, t, side)
            return (*closed, fact)
        if t - last.t >= spec.interval:  # type: ignore[union-attr]
            # The interval is up: this reading is sealed for its whole group.
            self._groups.pop(key, None)
            self._sealed[key] = _Sealed(value, fact.quality, t, side)
            if group is None:
                return (fact,)
            released = _unsealed(group.held)
            group.add(fact, value, spec.temperature)
            return (released, self._summarised(fact, group, spec))
        self.absorbed += 1
        if group is None:
            kinetic = kinetic_term(value) if spec.temperature else 0.0
            self._groups[key] = _Group(1, value, value, value, kinetic, fact.at, fact)
            return ()
        # The reading held back so far will not be sealed: it goes on unsealed (the rules see
        # it, in order, through the recorder's sample listeners) and this one is held back. So
        # each reading reaches the rules once, sealed or not.
        released = _unsealed(group.held)
        group.add(fact, value, spec.temperature)
        return (released,)

    def _close(self, keys: Iterable[Key]) -> list[Fact]:
        """Seal the held-back reading of each group in ``keys``, for its group."""
        closed = []
        for key in list(keys):
            group = self._groups.pop(key, None)
            if group is None:
                continue
            held = group.held
            assert held.value is not None
            spec = self._specs[key]
            side = self._side(held.value) if spec.temperature else ()
            self._sealed[key] = _Sealed(held.value, held.quality, _t(held), side)
            closed.append(self._summarised(held, group, spec))
        return closed

    def _summarised(self, fact: Fact, group: _Group, spec: _Spec) -> Fact:
        if group.count == 1:
            return fact  # stands for itself alone
        samples: dict[str, object] = {
            "count": group.count,
            "min": group.low,
            "max": group.high,
            "mean": group.total / group.count,
            "first_at": format_time(group.first),
            "last_at": format_time(fact.at),
        }
        if spec.temperature:
            samples["mkt"] = mkt_of_sum(group.kinetic, group.count)
        return replace(fact, data={**fact.data, "samples": samples})

    def _side(self, value: float) -> tuple[bool, ...]:
        return (value <= FREEZING_C, *(band.holds(value) for band in self.bands))


def _unsealed(fact: Fact) -> Fact:
    return replace(fact, kind=SAMPLE)


def _t(fact: Fact) -> float:
    return (fact.src_at or fact.at).timestamp()
