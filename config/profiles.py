"""Built-in storage profile names.

A zone names the regulated storage condition it keeps. The limits, delays and MKT windows of
each profile belong to the rules engine; at this layer the name must simply be one gxpgate
knows, so that a typo in a zone fails at load instead of leaving a zone unguarded.
"""

from __future__ import annotations

__all__ = ["BUILTIN_PROFILES"]

BUILTIN_PROFILES: dict[str, str] = {
    "refrigerated": "2–8 °C, do not freeze",
    "controlled-room": "20–25 °C (excursions 15–30 °C, MKT ≤ 25 °C)",
    "cool": "8–15 °C",
    "frozen": "−25 to −10 °C",
    "humidity-controlled": "≤ 60 % RH",
    "unclassified": "no storage condition (docks, corridors): monitored, no limits",
}
