"""The condition a storage profile keeps, and whether a zone's profile keeps a product's.

A profile's *condition* per quantity is the band between its tightest limits of severity
``alarm``: refrigerated 2–8 °C (``low`` 2 and ``high`` 8 are alarms), controlled room
15–30 °C (20 and 25 are warnings, 15 and 30 alarms: USP <659>'s permitted excursions). A
missing bound is open. Time out of storage and wrong-zone put-away are judged against it.

A zone *keeps* a product's required profile when, for every quantity the required profile
bounds, the zone's condition lies within the required one; and the label flags hold: a
``do_not_freeze`` product needs a zone whose condition stays above 0 °C, a
``do_not_refrigerate`` one a zone whose condition is not entirely at or below 8 °C.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gxpgate.config.rules_model import LimitRule, QuantityRules, StorageProfile

__all__ = ["FREEZING_C", "Band", "condition", "unmet"]

FREEZING_C = 0.0
REFRIGERATED_MAX_C = 8.0
_UNITS = {"temperature": "°C", "humidity": "% RH"}


@dataclass(frozen=True, slots=True)
class Band:
    low: float | None
    high: float | None

    def holds(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def within(self, other: Band) -> bool:
        low_ok = other.low is None or (self.low is not None and self.low >= other.low)
        high_ok = other.high is None or (self.high is not None and self.high <= other.high)
        return low_ok and high_ok

    def text(self, quantity: str) -> str:
        unit = _UNITS.get(quantity, "")
        if self.low is None:
            return f"≤ {_n(self.high)} {unit}"
        if self.high is None:
            return f"≥ {_n(self.low)} {unit}"
        return f"{_n(self.low)} to {_n(self.high)} {unit}"


def _n(value: float | None) -> str:
    return f"{value:g}"


def _band(rules: QuantityRules | None) -> Band | None:
    if rules is None:
        return None
    lows = [r.limit for r in (rules.low_low, rules.low) if _alarm(r)]  # type: ignore[union-attr]
    highs = [r.limit for r in (rules.high, rules.high_high) if _alarm(r)]  # type: ignore[union-attr]
    if not lows and not highs:
        return None
    return Band(max(lows) if lows else None, min(highs) if highs else None)


def _alarm(rule: object) -> bool:
    return isinstance(rule, LimitRule) and rule.severity == "alarm"


def condition(profile: StorageProfile, quantity: str = "temperature") -> Band | None:
    """The band ``profile`` keeps for ``quantity``; None when it sets no alarm limit."""
    return _band(getattr(profile, quantity, None))


def unmet(zone: StorageProfile, required: StorageProfile, flags: Iterable[str] = ()) -> str | None:
    """Why a zone of profile ``zone`` does not keep ``required`` (and the flags); None if it
    does."""
    for quantity in ("temperature", "humidity"):
        need = condition(required, quantity)
        if need is None:
            continue
        have = condition(zone, quantity)
        if have is None:
            return f"the zone sets no {quantity} limits; the product needs {need.text(quantity)}"
        if not have.within(need):
            return f"the zone keeps {have.text(quantity)}; the product needs {need.text(quantity)}"
    temperature = condition(zone)
    flags = set(flags)
    if "do_not_freeze" in flags and (temperature is None or temperature.low is None
                                     or temperature.low <= FREEZING_C):  # fmt: skip
        return "the product must not freeze; the zone's condition allows freezing"
    if (
        "do_not_refrigerate" in flags
        and temperature is not None
        and temperature.high is not None
        and temperature.high <= REFRIGERATED_MAX_C
    ):
        return "the product must not be refrigerated; the zone is refrigerated"
    return None
