"""A lot's history for ``gxpgate lots exposure``: stays, time out of storage, readings, exceptions.

Reads the lot register (agent/custody/lots.py, agent/custody/exposure.py) only; the product rule
comes from the product master in force in the config. Stays are the lot's presences in zones, in
record order; ``out_secs`` of a stay is the union of its exposure intervals (an open stay in a zone
of another profile counts up to ``now``); the lot's total is the union over all stays.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from gxpgate.agent.alarms.mkt import mkt_of_sum
from gxpgate.agent.custody.exposure import epoch, union_secs
from gxpgate.agent.custody.lots import LotRegister
from gxpgate.config.conditions import condition, unmet
from gxpgate.config.model import GatewayConfig
from gxpgate.config.products import ProductRule
from gxpgate.config.profiles import resolve_profile

__all__ = ["LotHistory", "Stay", "lot_history"]


@dataclass(frozen=True, slots=True)
class Stay:
    zone: str
    zone_profile: str | None
    keeps: bool | None
    """Whether the zone's profile keeps the product's; None without a product rule."""
    since: str
    until: str | None
    stay_secs: float
    out_secs: float
    readings: int
    min: float | None
    max: float | None
    mkt: float | None


@dataclass(frozen=True, slots=True)
class LotHistory:
    lot: str
    gtin: str
    product: str | None
    required_profile: str | None
    required_band: str | None
    flags: list[str]
    allowance_hours: float | None
    used_secs: float
    share: float | None
    stays: list[Stay]
    exceptions: list[dict[str, Any]]
    tracked: bool
    """Time out of storage is kept for this lot (its product is in the product master)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lot_history(
    register: LotRegister,
    lot: str,
    config: GatewayConfig,
    product: ProductRule | None,
    now: float,
) -> LotHistory:
    rows = register.query(
        "SELECT p.id, p.zone, p.since, p.until, s.n, s.min, s.max, s.sum_exp FROM presence p "
        "LEFT JOIN stay_stats s ON s.presence = p.id WHERE p.identifier = ? AND p.kind = 'lot' "
        "ORDER BY p.seq, p.id",
        (lot,),
    )
    intervals = register.query(
        "SELECT presence, start_at, end_at FROM exposure WHERE lot = ?", (lot,)
    )
    by_stay: dict[int, list[tuple[float, float]]] = {}
    everything: list[tuple[float, float]] = []
    for presence, start, end in intervals:
        s, e = epoch(start), epoch(end) if end else now
        by_stay.setdefault(presence, []).append((s, max(s, e)))
        everything.append((s, max(s, e)))
    required = resolve_profile(product.profile, config.profiles) if product else None
    stays = []
    for pid, zone, since, until, n, lo, hi, total in rows:
        zone_cfg = config.zones.get(zone)
        keeps: bool | None = None
        if required is not None and zone_cfg is not None and product is not None:
            zone_profile = resolve_profile(zone_cfg.profile, config.profiles)
            keeps = unmet(zone_profile, required, product.flags) is None
        end = epoch(until) if until else now
        stays.append(
            Stay(
                zone=zone,
                zone_profile=zone_cfg.profile if zone_cfg else None,
                keeps=keeps,
                since=since,
                until=until,
                stay_secs=max(0.0, end - epoch(since)),
                out_secs=union_secs(by_stay.get(pid, [])),
                readings=n or 0,
                min=lo,
                max=hi,
                mkt=round(mkt_of_sum(total, n), 2) if n else None,
            )
        )
    exceptions = [
        {"seq": seq, "at": at, "alarm_id": alarm_id, "kind": kind, "severity": severity,
         "state": state, "zone": zone, "rule": rule}
        for seq, at, alarm_id, rule, kind, severity, state, zone in register.query(
            "SELECT seq, at, alarm_id, rule, kind, severity, state, zone FROM lot_alarm "
            "WHERE lot = ? ORDER BY seq",
            (lot,),
        )
    ]  # fmt: skip
    used = union_secs(everything)
    allowance = product.tos_allowance_hours if product else None
    band = condition(required) if required is not None else None
    return LotHistory(
        lot=lot,
        gtin=lot[4:18],
        product=product.name if product else None,
        required_profile=product.profile if product else None,
        required_band=band.text("temperature") if band else None,
        flags=sorted(product.flags) if product else [],
        allowance_hours=allowance,
        used_secs=used,
        share=used / (allowance * 3600) if allowance else None,
        stays=stays,
        exceptions=exceptions,
        tracked=product is not None,
    )
