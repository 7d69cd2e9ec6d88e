"""Custody: every barcode or RFID observation becomes one sealed ``custody`` record.

A record (CONTRACT §1) has ``kind = "custody"``, the device's ``zone`` and id, ``point``,
``value``, ``unit`` and ``quality`` null, and ``data = {"scan": …, "epcis": …}``: ``scan`` is what
was read (barcode: ``raw``, ``symbology``, ``ai``; RFID: ``epc_hex``, ``uri``), ``epcis`` one
EPCIS 2.0 JSON-LD ``ObjectEvent`` (below), or ``null`` when the read identifies no object.

Unusable reads are never dropped: a scan that is invalid or ambiguous GS1, the scanner's "no
read" message, line noise, an undecodable EPC (unknown header, truncated, toggle bit) becomes a
custody record with ``scan.error`` (the reason) and ``epcis: null``, followed by an ``audit``
record ``{"event": "scan_invalid", "reason", "scan"}``. A valid non-GS1 code (a tote label) and
a GS1 scan without SSCC or GTIN are kept as read, with ``epcis: null`` and no error.

The EPCIS event
    ``@context``: the versioned standard context
    ``https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld`` (the one GS1's examples
    and the reference event hash generator use; CBV short names such as ``receiving`` are valid
    in it) plus the prefix ``gxp`` for the two extension fields below. ``type``
    ``ObjectEvent``; ``eventID`` the CBV 2.0 event hash ``ni:///sha-256;…?ver=CBV2.0`` of the
    event (:mod:`gxpgate.agent.custody.epcis_hash`), so the same observation gets the same id
    wherever it is computed, and a re-sent event keeps it; ``eventTime`` the record's ``at``;
    ``eventTimeZoneOffset`` the gateway host's UTC offset at that moment (the warehouse's local
    time); no ``recordTime``, which the EPCIS repository sets on capture. ``readPoint`` /
    ``bizLocation`` from the device's config; by default, with the site's GLN
    (``gateway.gln``), the SGLNs ``urn:epc:id:sgln:<cp>.<loc>.<device id>`` and
    ``….<zone id>`` (a GS1 Digital Link ``https://id.gs1.org/414/<gln>/254/<id>`` when the
    GLN's company prefix is not known), else the private ``urn:gxpgate:<gw>:device:<id>`` and
    ``urn:gxpgate:<gw>:zone:<zone>``. ``bizStep`` and ``disposition`` as configured.

Action per business step (CBV 2.0 §7.1)
    ``ADD`` for the steps that bring identifiers into being (``commissioning``, ``encoding``,
    ``creating_class_instance``); ``DELETE`` for those that retire them (``decommissioning``,
    ``destroying``, ``killing``); ``OBSERVE`` for every other step. Receiving is ``OBSERVE``: the
    goods were commissioned by their manufacturer, and ADD would claim a new EPC (with master
    data) where a warehouse only saw an existing one arrive.

What was read → ``epcList`` / ``quantityList``
    * SSCC (AI 00), SSCC-96 tag: ``epcList: ["urn:epc:id:sscc:…"]`` (a label with an SSCC
      identifies the logistic unit; any other AIs on it are not turned into objects).
    * GTIN + serial (AI 01 + 21), SGTIN-96/198 tag: ``epcList: ["urn:epc:id:sgtin:…"]``.
    * GTIN + lot without serial (AI 01 + 10): ``quantityList`` with the LGTIN class
      ``urn:epc:class:lgtin:…`` and ``quantity`` 1 (or AI 30, the count on the label).
    * GTIN alone: ``quantityList`` with the GTIN class ``urn:epc:idpat:sgtin:<cp>.<ref>.*``.
    * Lot (AI 10) and expiry (AI 17) of a scan: with ``ADD`` as ILMD (``cbvmda:lotNumber``,
      ``cbvmda:itemExpirationDate``), otherwise as the extension fields ``gxp:lot`` and
      ``gxp:expiry`` — EPCIS 2.0 allows ``ilmd`` on ADD events only, and an SGTIN URI has no
      room for the lot.

Company prefixes
    EPC URIs split a GTIN or SSCC at the end of the GS1 Company Prefix, which a barcode does
    not show (an RFID tag does: its partition value). The prefix is taken from the device's
    ``company_prefixes`` (longest match), else from GS1's prefix-length table bundled with
    biip. A key covered by neither, or whose prefix is not 6-12 digits (EPC's range), is written
    as a canonical GS1 Digital Link URI (``https://id.gs1.org/01/<gtin>/21/<serial>``,
    ``…/10/<lot>``, ``https://id.gs1.org/00/<sscc>``), which EPCIS 2.0 accepts wherever an EPC
    URI goes. A class-level fallback (LGTIN in ``quantityList``) would not help: the LGTIN URN
    needs the same prefix length, and it would lose the serial.

The device side (the scanner's connection, its read budget, the custody device's health) is
:mod:`gxpgate.agent.devices.scanners`.
"""

from __future__ import annotations

import logging
from datetime import datetime, tzinfo
from typing import Any, Final, Literal

from gxpgate.agent.custody.epcis_hash import event_hash
from gxpgate.agent.evidence import format_time
from gxpgate.agent.recording.audit import SCAN_INVALID
from gxpgate.agent.recording.sealing import Fact
from gxpgate.drivers.gs1 import ScanResult
from gxpgate.drivers.scanner import (
    BarcodeRead,
    CompanyPrefixes,
    Observation,
    TagRead,
    gtin_class_uri,
    lgtin_uri,
    sgln_uri,
    sgtin_uri,
    sscc_uri,
)
from gxpgate.drivers.scanner_model import BarcodeScannerDevice, RfidReaderDevice

__all__ = [
    "ADD_STEPS",
    "DELETE_STEPS",
    "EPCIS_CONTEXT",
    "EXTENSION_NAMESPACE",
    "CustodyBuilder",
    "action_for",
]

log = logging.getLogger(__name__)

EPCIS_CONTEXT: Final = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
EXTENSION_NAMESPACE: Final = "urn:gxpgate:epcis:"
"""Namespace of gxpgate's EPCIS extension fields (``gxp:lot``, ``gxp:expiry``)."""
ADD_STEPS: Final = frozenset({"commissioning", "encoding", "creating_class_instance"})
DELETE_STEPS: Final = frozenset({"decommissioning", "destroying", "killing"})

Action = Literal["ADD", "OBSERVE", "DELETE"]


def action_for(biz_step: str) -> Action:
    """The EPCIS action of an ObjectEvent for a CBV business step (module docstring)."""
    if biz_step in ADD_STEPS:
        return "ADD"
    if biz_step in DELETE_STEPS:
        return "DELETE"
    return "OBSERVE"


def _utc_offset(moment: datetime, zone: tzinfo | None) -> str:
    offset = moment.astimezone(zone).utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}"


class CustodyBuilder:
    """Observations of one device → facts: the custody record, plus an audit for bad reads.

    ``tz`` is the zone for ``eventTimeZoneOffset`` (default: the host's local zone);
    ``site_gln`` the site's GLN (``gateway.gln``), which makes the default locations SGLNs.
    """

    def __init__(
        self,
        gw: str,
        device_id: str,
        config: BarcodeScannerDevice | RfidReaderDevice,
        *,
        tz: tzinfo | None = None,
        site_gln: str | None = None,
    ) -> None:
        self.gw = gw
        self.device_id = device_id
        self.config = config
        self.zone = config.zone
        self.action: Action = action_for(config.biz_step)
        configured = config.company_prefixes if isinstance(config, BarcodeScannerDevice) else []
        self.prefixes = CompanyPrefixes(configured)
        self.read_point = config.read_point or self._default_location("device", device_id, site_gln)
        self.biz_location = config.biz_location or self._default_location(
            "zone", config.zone, site_gln
        )
        self._tz = tz

    def _default_location(self, what: str, name: str, site_gln: str | None) -> str:
        if site_gln is None:
            return f"urn:gxpgate:{self.gw}:{what}:{name}"
        return sgln_uri(site_gln, name, self.prefixes)

    def facts(self, observation: Observation) -> list[Fact]:
        if isinstance(observation, BarcodeRead):
            return self._barcode(observation)
        return self._tag(observation)

    def _barcode(self, read: BarcodeRead) -> list[Fact]:
        scan = read.scan
        data_scan = scan.custody_scan()
        problem = scan.problem
        if problem is not None:
            data_scan["error"] = problem
            return self._rejected(read.at, data_scan, problem)
        event = self._barcode_event(read.at, scan)
        return [self._custody(read.at, data_scan, event)]

    def _barcode_event(self, at: datetime, scan: ScanResult) -> dict[str, Any] | None:
        ai = scan.ai
        epc_list: list[str] = []
        quantity_list: list[dict[str, Any]] = []
        if "00" in ai:
            epc_list.append(sscc_uri(ai["00"], self.prefixes))
        elif "01" in ai:
            gtin = ai["01"]
            counted = next((e.quantity for e in scan.elements if e.ai == "30"), None)
            count = 1 if counted is None else counted
            if "21" in ai:
                epc_list.append(sgtin_uri(gtin, ai["21"], self.prefixes))
            elif "10" in ai:
                epc_class = lgtin_uri(gtin, ai["10"], self.prefixes)
                quantity_list.append({"epcClass": epc_class, "quantity": count})
            else:
                epc_class = gtin_class_uri(gtin, self.prefixes)
                quantity_list.append({"epcClass": epc_class, "quantity": count})
        else:
            return None
        expiry = next((e.date for e in scan.elements if e.ai == "17" and e.date), None)
        lot_data: dict[str, str] = {}
        if self.action == "ADD":
            if "10" in ai:
                lot_data["cbvmda:lotNumber"] = ai["10"]
            if expiry is not None:
                lot_data["cbvmda:itemExpirationDate"] = expiry.isoformat()
        else:
            if "10" in ai:
                lot_data["gxp:lot"] = ai["10"]
            if expiry is not None:
                lot_data["gxp:expiry"] = expiry.isoformat()
        return self.event(at, epc_list, quantity_list, lot_data)

    def _tag(self, read: TagRead) -> list[Fact]:
        tag = read.tag
        data_scan = tag.custody_scan()
        if tag.error is not None or tag.pure_uri is None:
            reason = tag.error or "the EPC has no pure identity URI"
            data_scan["error"] = reason
            return self._rejected(read.at, data_scan, reason)
        event = self.event(read.at, [tag.pure_uri], [], {})
        return [self._custody(read.at, data_scan, event)]

    def event(
        self,
        at: datetime,
        epc_list: list[str],
        quantity_list: list[dict[str, Any]],
        lot_data: dict[str, str],
    ) -> dict[str, Any]:
        """The EPCIS 2.0 ObjectEvent for one observation at ``at``. ``lot_data`` goes to
        ``ilmd`` for ADD, else to the top level."""
        when = format_time(at)
        event: dict[str, Any] = {
            "@context": [EPCIS_CONTEXT, {"gxp": EXTENSION_NAMESPACE}],
            "type": "ObjectEvent",
            "eventID": "",  # keeps its place; the hash leaves it out
            "eventTime": when,
            "eventTimeZoneOffset": _utc_offset(at, self._tz),
        }
        if epc_list:
            event["epcList"] = epc_list
        if quantity_list:
            event["quantityList"] = quantity_list
        event["action"] = self.action
        event["bizStep"] = self.config.biz_step
        if self.config.disposition is not None:
            event["disposition"] = self.config.disposition
        event["readPoint"] = {"id": self.read_point}
        event["bizLocation"] = {"id": self.biz_location}
        if lot_data and self.action == "ADD":
            event["ilmd"] = lot_data
        else:
            event.update(lot_data)
        event["eventID"] = event_hash(event)
        return event

    def _custody(self, at: datetime, scan: dict[str, Any], event: dict[str, Any] | None) -> Fact:
        return Fact(
            "custody", at, {"scan": scan, "epcis": event}, zone=self.zone, device=self.device_id
        )

    def _rejected(self, at: datetime, scan: dict[str, Any], reason: str) -> list[Fact]:
        audit = {"event": SCAN_INVALID, "reason": reason, "scan": dict(scan)}
        return [
            self._custody(at, scan, None),
            Fact("audit", at, audit, zone=self.zone, device=self.device_id),
        ]
