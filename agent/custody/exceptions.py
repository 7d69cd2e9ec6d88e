"""Custody exceptions: what a scan says that someone must act on, judged as it is sealed.

For each sealed ``custody`` record, against the product master and hold list in force:

``wrong_zone`` (alarm)
    A put-away (:data:`PUT_AWAY_STEPS`) of a product into a zone whose profile does not keep the
    product's required condition (config/conditions.py, flags included). It stays active while
    any of the lot (or, without a lot, the item scanned) is still in that zone, and clears once
    all of it has left.
``expired`` (alarm) / ``expiring`` (warning)
    At receiving or put-away, a lot whose expiry date (AI 17) is before the scan's day, or within
    ``exceptions.expiry_horizon_days`` of it.
``on_hold`` (alarm)
    At picking or shipping, a lot or SSCC on the hold list.
``not_received`` (alarm)
    An SSCC shipped that the register never saw on the site before.

All but ``wrong_zone`` are latched: the acknowledgement ends them. The judge runs in the lot
feed's worker thread right after the register has applied the records (so it sees every custody
record before them), and is re-run at start for the records the alarm checkpoint had not yet
covered; the engine raises each (record, rule) only once.

An exception needs the product: scans without a GTIN (an SSCC alone) are judged only for the
hold list and for receipt; a GTIN without a product master entry is not judged for zone or
time out of storage (``gxpgate lots exposure`` says so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

from gxpgate.agent.alarms.rules import Event, Judged
from gxpgate.agent.custody.lots import (
    BadIdentifier,
    LotRegister,
    item_id,
    lot_id,
    parse_identifier,
    sscc_id,
)
from gxpgate.agent.evidence import parse_time
from gxpgate.config.conditions import unmet
from gxpgate.config.model import GatewayConfig
from gxpgate.config.products import Policy, ProductRule
from gxpgate.config.profiles import resolve_profile
from gxpgate.drivers.gs1 import gs1_date

__all__ = [
    "OUTBOUND_STEPS",
    "PUT_AWAY_STEPS",
    "RECEIVING_STEPS",
    "ExceptionJudge",
    "rule_id",
]

log = logging.getLogger(__name__)

RECEIVING_STEPS: Final = frozenset({"receiving", "arriving", "accepting", "unloading"})
PUT_AWAY_STEPS: Final = frozenset({"storing"})
OUTBOUND_STEPS: Final = frozenset({"picking", "staging_outbound", "loading", "shipping"})
SHIPPING_STEPS: Final = frozenset({"shipping", "departing"})
_TOPIC_UNSAFE: Final = {"%": "%25", "/": "%2F", "+": "%2B", "#": "%23"}


def rule_id(kind: str, identifier: str, *, area: str = "custody") -> str:
    """``<area>.<kind>.<id>``, with the characters MQTT topics reserve percent-encoded."""
    safe = "".join(_TOPIC_UNSAFE.get(c, c) for c in identifier)
    return f"{area}.{kind}.{safe}"


@dataclass(frozen=True, slots=True)
class _Scanned:
    """What one custody record observed."""

    gtin: str | None
    lot: str | None
    serial: str | None
    sscc: str | None
    expiry: date | None

    @property
    def identifier(self) -> tuple[str, str] | None:
        """The register's id and kind of what was scanned."""
        if self.sscc is not None:
            return sscc_id(self.sscc), "sscc"
        if self.gtin is not None and self.serial is not None:
            return item_id(self.gtin, self.serial), "item"
        if self.gtin is not None and self.lot is not None:
            return lot_id(self.gtin, self.lot), "lot"
        return None


class ExceptionJudge:
    """Judges custody records; see the module docstring. Not thread-safe: one worker uses it."""

    def __init__(
        self, config: GatewayConfig, policy: Callable[[], Policy], register: LotRegister
    ) -> None:
        self.config = config
        self.policy = policy
        self.register = register
        self.watched: dict[str, tuple[str, str, str]] = {}
        """Active ``wrong_zone`` rules → (identifier, kind, zone) to watch for leaving."""

    def watch(self, rule: str, detail: Mapping[str, Any], zone: str) -> None:
        """Follow an active ``wrong_zone`` exception (at start: those the checkpoint holds):
        the lot while any of it is in the zone, else what was scanned."""
        if detail.get("lot"):
            self.watched[rule] = (str(detail["lot"]), "lot", zone)
        else:
            self.watched[rule] = (str(detail["identifier"]), str(detail["identifier_kind"]), zone)

    def judge(self, records: Sequence[Mapping[str, Any]]) -> Judged:
        """Judge ``records`` (custody records the register has applied, ascending ``seq``)."""
        judged = Judged()
        for record in records:
            if record.get("kind") != "custody":
                continue
            try:
                for event in self._judge_one(record):
                    judged.events.append((event, int(record["seq"])))
            except (KeyError, TypeError, ValueError) as exc:  # a record this code cannot read
                log.error("exceptions.unjudged seq=%s error=%s", record.get("seq"), exc)
        for rule, (identifier, kind, zone) in list(self.watched.items()):
            if not self.register.present_in(identifier, kind, zone):  # type: ignore[arg-type]
                del self.watched[rule]
                judged.resolved.append(rule)
        return judged

    def _judge_one(self, record: Mapping[str, Any]) -> list[Event]:
        data = record.get("data") or {}
        epcis = data.get("epcis")
        scan = data.get("scan") or {}
        zone = record.get("zone")
        if not isinstance(epcis, dict) or scan.get("error") or not isinstance(zone, str):
            return []
        step = str(epcis.get("bizStep") or "")
        seen = self._scanned(scan, _day(record["at"]))
        if seen is None:
            return []
        ctx = _Context(record, zone, step, seen, self.policy())
        events: list[Event] = []
        if step in PUT_AWAY_STEPS:
            events += self._wrong_zone(ctx)
        if step in RECEIVING_STEPS | PUT_AWAY_STEPS:
            events += self._expiry(ctx)
        if step in OUTBOUND_STEPS:
            events += self._hold(ctx)
        if step in SHIPPING_STEPS and seen.sscc is not None:
            ident = sscc_id(seen.sscc)
            if not self.register.seen_before(ident, "sscc", int(record["seq"])):
                events.append(ctx.event("not_received", ident, "alarm", {}))
        return events

    def _scanned(self, scan: Mapping[str, Any], day: date) -> _Scanned | None:
        ai = scan.get("ai")
        if isinstance(ai, dict):
            expiry = gs1_date("17", ai["17"], day) if "17" in ai else None
            return _Scanned(ai.get("01"), ai.get("10"), ai.get("21"), ai.get("00"), expiry)
        uri = scan.get("uri")
        if not isinstance(uri, str):
            return None
        try:
            identity = parse_identifier(uri)
        except BadIdentifier:
            return None
        if identity.kind == "sscc":
            return _Scanned(None, None, None, identity.id[4:], None)
        if identity.kind != "item":
            return None
        gtin, serial = identity.id[4:18], identity.id[22:]
        lot = self.register.lot_of_item(identity.id)  # learnt from a barcode of the item
        return _Scanned(gtin, lot[22:] if lot else None, serial, None, None)

    def _wrong_zone(self, ctx: _Context) -> list[Event]:
        product = ctx.product
        if product is None:
            return []
        config = self.config
        zone_profile_name = config.zones[ctx.zone].profile
        required = resolve_profile(product.profile, config.profiles)
        reason = unmet(resolve_profile(zone_profile_name, config.profiles), required, product.flags)
        if reason is None:
            return []
        identifier, kind = ctx.seen.identifier or ("", "")
        detail = {
            "required_profile": product.profile,
            "zone_profile": zone_profile_name,
            "reason": reason,
            "identifier": identifier,
            "identifier_kind": kind,
        }
        event = ctx.event("wrong_zone", ctx.lot or identifier, "alarm", detail, latched=False)
        self.watch(event.rule, event.detail, ctx.zone)
        return [event]

    def _expiry(self, ctx: _Context) -> list[Event]:
        expiry = ctx.seen.expiry
        if expiry is None:
            return []
        days = (expiry - ctx.day).days
        horizon = self.config.exceptions.expiry_horizon_days
        detail = {"expiry": expiry.isoformat(), "days_left": days}
        key = ctx.lot or (ctx.seen.identifier or ("",))[0]
        if days < 0:
            return [ctx.event("expired", key, "alarm", detail, value=days, limit=0)]
        if days < horizon:
            return [ctx.event("expiring", key, "warning", detail, value=days, limit=horizon)]
        return []

    def _hold(self, ctx: _Context) -> list[Event]:
        seen = ctx.seen
        hold = ctx.policy.on_hold(seen.gtin, seen.lot, seen.sscc)
        if hold is None:
            return []
        key = ctx.lot or (sscc_id(seen.sscc) if seen.sscc else "")
        detail = {"reason": hold.reason, "hold_source": hold.source}
        return [ctx.event("on_hold", key, "alarm", detail)]


class _Context:
    """One record being judged, and what every exception of it names."""

    def __init__(
        self, record: Mapping[str, Any], zone: str, step: str, seen: _Scanned, policy: Policy
    ) -> None:
        self.record, self.zone, self.step, self.seen, self.policy = record, zone, step, seen, policy
        self.day = _day(record["at"])
        self.lot = lot_id(seen.gtin, seen.lot) if seen.gtin and seen.lot else None
        self.product: ProductRule | None = policy.product(seen.gtin) if seen.gtin else None

    def event(
        self, kind: str, key: str, severity: str, extra: dict[str, Any], *,
        latched: bool = True, value: float | None = None, limit: float | None = None,
    ) -> Event:  # fmt: skip
        seen, product = self.seen, self.product
        detail: dict[str, Any] = {
            "lot": self.lot,
            "sscc": sscc_id(seen.sscc) if seen.sscc else None,
            "gtin": seen.gtin,
            "product": product.name if product else None,
            "zone": self.zone,
            "step": self.step,
            "scan_seq": int(self.record["seq"]),
            **extra,
        }
        return Event(
            rule=rule_id(kind, key), kind=kind, severity=severity, zone=self.zone,
            device=str(self.record.get("device") or ""), lots=(key,), detail=detail,
            value=value, limit=limit, latched=latched,
        )  # fmt: skip


def _day(at: str) -> date:
    return parse_time(at).date()
