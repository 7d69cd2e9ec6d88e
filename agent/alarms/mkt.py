"""Mean kinetic temperature (USP <1079.2>): one temperature that stands for a varying history.

    MKT = (ΔH/R) / −ln( Σ wᵢ·exp(−(ΔH/R) / Tᵢ) / Σ wᵢ )        Tᵢ in kelvin

with ΔH/R = 10,000 K by default (ΔH = 83.144 kJ/mol). :func:`mean_kinetic_temperature` is the
formula; :class:`RollingMkt` keeps the sums for a rolling window in a fixed number of time
buckets, so a 30-day window costs 48 floats pairs per point, not every reading.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from typing import Any

import orjson

__all__ = ["KELVIN", "RollingMkt", "kinetic_term", "mean_kinetic_temperature", "mkt_of_sum"]

KELVIN = 273.15
DEFAULT_DH_R = 10_000.0
GROUP = 8
"""Buckets in a checkpoint entry."""
_EMPTY = -(2**63)  # no slot (a slot number is t // width: negative only before 1970)


def mean_kinetic_temperature(
    temps_c: Sequence[float],
    weights: Sequence[float] | None = None,
    activation_energy_k: float = DEFAULT_DH_R,
) -> float:
    """MKT in °C of ``temps_c`` (equal weights unless ``weights``, e.g. hours at each)."""
    if not temps_c:
        raise ValueError("no temperatures")
    if weights is not None and len(weights) != len(temps_c):
        raise ValueError("one weight per temperature")
    total_weight = 0.0
    total = 0.0
    for i, temp in enumerate(temps_c):
        weight = 1.0 if weights is None else weights[i]
        total += weight * _term(temp, activation_energy_k)
        total_weight += weight
    if total_weight <= 0:
        raise ValueError("weights must add up to more than zero")
    return _from_mean(total / total_weight, activation_energy_k)


def kinetic_term(temp_c: float, activation_energy_k: float = DEFAULT_DH_R) -> float:
    """One reading's term, for callers that keep their own sums (see :func:`mkt_of_sum`)."""
    return _term(temp_c, activation_energy_k)


def mkt_of_sum(total: float, count: int, activation_energy_k: float = DEFAULT_DH_R) -> float:
    """MKT in °C of ``count`` equally weighted readings whose terms add up to ``total``."""
    return _from_mean(total / count, activation_energy_k)


def _term(temp_c: float, dh_r: float) -> float:
    return math.exp(-dh_r / (temp_c + KELVIN))


def _from_mean(mean_term: float, dh_r: float) -> float:
    return dh_r / -math.log(mean_term) - KELVIN


class RollingMkt:
    """MKT over the last ``window_secs``, readings equally weighted, in ``buckets`` time slots.

    A reading older than the window is ignored; out-of-order readings within the window count
    (a data logger's back-filled memory). The window slides one bucket at a time.

    The buckets are a ring of flat arrays, 24 bytes a bucket (a slot number and two sums):
    a dict of two-float lists took ~9 KB a point once its 48 buckets had filled, 60 MB over
    a day's run at 7,000 temperature points.
    """

    BUCKETS = 48

    def __init__(self, window_secs: float, activation_energy_k: float = DEFAULT_DH_R) -> None:
        self.window_secs = window_secs
        self.dh_r = activation_energy_k
        self.width = window_secs / self.BUCKETS
        # Slot s is kept at s % BUCKETS while it is one of the last BUCKETS slots.
        self._slot = array("q", [_EMPTY]) * self.BUCKETS
        self._sum = array("d", [0.0]) * self.BUCKETS  # of the readings' kinetic terms
        self._n = array("d", [0.0]) * self.BUCKETS  # readings
        # Running totals: a reading costs O(1), not a walk over every bucket (the rule runs
        # on each reading). They are recomputed from the buckets when one expires (no drift).
        self._total = 0.0
        self._count = 0.0
        self._newest: int | None = None
        self._dirty: set[int] = set()  # groups changed since the last :meth:`changed_groups`
        self._last: int | None = None  # the slot of the last reading since then
        self._stored: set[int] = set()  # groups a checkpoint holds

    def add(self, t: float, temp_c: float) -> None:
        slot = int(t // self.width)
        newest = slot if self._newest is None else max(self._newest, slot)
        if slot <= newest - self.BUCKETS:
            return
        term = _term(temp_c, self.dh_r)
        i = slot % self.BUCKETS
        if self._slot[i] != slot:  # empty, or a slot this one's arrival expires
            self._slot[i], self._sum[i], self._n[i] = slot, 0.0, 0.0
            self._dirty.add(slot // GROUP)
        elif slot != self._last:
            self._dirty.add(slot // GROUP)
        self._last = slot  # the groups of its slot are dirty already (until changed_groups)
        self._sum[i] += term
        self._n[i] += 1
        if newest != self._newest:
            self._newest = newest
            self._expire(newest)
        else:
            self._total += term
            self._count += 1

    def _slots(self) -> list[tuple[int, int]]:
        """(slot, index) of the slots in the window, oldest first."""
        if self._newest is None:
            return []
        found = []
        for slot in range(self._newest - self.BUCKETS + 1, self._newest + 1):
            i = slot % self.BUCKETS
            if self._slot[i] == slot:
                found.append((slot, i))
        return found

    def _expire(self, newest: int) -> None:
        for i, slot in enumerate(self._slot):
            if slot != _EMPTY and slot <= newest - self.BUCKETS:
                self._slot[i], self._sum[i], self._n[i] = _EMPTY, 0.0, 0.0
        kept = self._slots()
        self._total = math.fsum(self._sum[i] for _slot, i in kept)
        self._count = sum(self._n[i] for _slot, i in kept)

    def peek(self, t: float, temp_c: float) -> float | None:
        """What :meth:`value` would be after ``add(t, temp_c)``, or None when that add would
        open a new slot (which can expire old ones, so it cannot be told without adding)."""
        slot = int(t // self.width)
        if self._newest is None or slot > self._newest:
            return None
        if slot <= self._newest - self.BUCKETS:
            return self.value()
        term = _term(temp_c, self.dh_r)
        return _from_mean((self._total + term) / (self._count + 1), self.dh_r)

    def value(self) -> float | None:
        """MKT of the readings in the window (None before the first)."""
        return _from_mean(self._total / self._count, self.dh_r) if self._count else None

    def dump(self) -> dict[str, Any]:
        return {"slots": {str(s): [self._sum[i], self._n[i]] for s, i in self._slots()}}

    # A checkpoint keeps the buckets in groups of GROUP and rewrites only the groups that
    # changed (the newest, mostly): all 48 buckets of every point each time was ~2 KB a point
    # every ``alarms.snapshot_secs``, once a window had filled.

    def changed_groups(self) -> dict[int, str | None]:
        """The groups of buckets that changed since the last call, by group number: JSON of
        :meth:`dump`'s ``slots`` for their buckets in the window, or None for a group a
        checkpoint holds that has left the window."""
        out: dict[int, str | None] = {}
        kept = self._slots()
        for group in self._dirty:
            slots = {s: [self._sum[i], self._n[i]] for s, i in kept if s // GROUP == group}
            text = orjson.dumps(slots, option=orjson.OPT_NON_STR_KEYS).decode()
            out[group] = text if slots else None
        oldest = kept[0][0] if kept else None
        for group in self._stored:
            if oldest is None or (group + 1) * GROUP <= oldest:
                out[group] = None
        for group, buckets in out.items():
            if buckets is None:
                self._stored.discard(group)
            else:
                self._stored.add(group)
        self._dirty, self._last = set(), None
        return out

    def load_groups(self, groups: dict[int, str]) -> None:
        """Restore from the groups a checkpoint holds (buckets that have left the window are
        dropped, as :meth:`add` had dropped them)."""
        slots: dict[str, Any] = {}
        for text in groups.values():
            slots.update(orjson.loads(text))
        self.load({"slots": slots})
        self._dirty, self._last = set(), None
        self._stored = set(groups)

    def load(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`dump` (in a checkpoint from before buckets were grouped)."""
        slots = {int(k): (float(v[0]), float(v[1])) for k, v in state["slots"].items()}
        self._slot = array("q", [_EMPTY]) * self.BUCKETS
        self._sum = array("d", [0.0]) * self.BUCKETS
        self._n = array("d", [0.0]) * self.BUCKETS
        self._newest = max(slots, default=None)
        self._stored, self._last = set(), None
        if self._newest is None:
            self._total = self._count = 0.0
            self._dirty = set()
            return
        for slot, (total, count) in slots.items():
            if slot > self._newest - self.BUCKETS:
                i = slot % self.BUCKETS
                self._slot[i], self._sum[i], self._n[i] = slot, total, count
        self._expire(self._newest)
        self._dirty = {slot // GROUP for slot, _i in self._slots()}
