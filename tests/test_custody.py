"""Custody records: the EPCIS 2.0 ObjectEvent for each kind of read, and what bad reads become.

Every event is checked against the rules of GS1's EPCIS 2.0 JSON schema for an ObjectEvent
(EPCIS-JSON-Schema.json: required fields, the action enum, the time-zone offset pattern, epcList
or a non-empty quantityList, ``ilmd`` only with ADD, CBV short names or URIs for bizStep and
disposition, ``{"id": uri}`` read point and business location, prefixed extension fields) and
its identifiers against the EPC Tag Data Standard's pure-identity URI syntax, written out here
independently of the code under test. Dates are parsed against a fixed reference date.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from typer.testing import CliRunner

from gxpgate.agent.cli.main import app
from gxpgate.agent.custody.epcis import EPCIS_CONTEXT, CustodyBuilder, action_for
from gxpgate.agent.custody.epcis_hash import event_hash
from gxpgate.agent.recording.sealing import Fact
from gxpgate.config import ConfigError, load_config
from gxpgate.drivers.epc import decode_epc
from gxpgate.drivers.gs1 import parse_scan
from gxpgate.drivers.scanner import BarcodeRead, CompanyPrefixes, TagRead, decode_scan, sgtin_uri
from gxpgate.drivers.scanner_model import (
    CBV_BIZ_STEPS,
    CBV_DISPOSITIONS,
    BarcodeScannerDevice,
    RfidReaderDevice,
)
from gxpgate.simulators.scanner_sim import (
    DOCK_PORTAL_TAGS,
    DOCK_RECEIVING,
    FAULTY_SCANS,
    FAULTY_TAGS,
    REFERENCE_TAGS,
    Scan,
)

AT = datetime(2026, 11, 21, 10, 0, 0, 123456, tzinfo=UTC)
CET = timezone(timedelta(hours=1))
REFERENCE = date(2026, 11, 21)

# --------------------------------------------------------------------------- the schema's rules

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_OFFSET = re.compile(r"^([+]|[-])((0[0-9]|1[0-3]):([0-5][0-9])|14:00)$")
_OBJECT_EVENT_FIELDS = {
    "@context", "type", "eventTime", "recordTime", "eventTimeZoneOffset", "eventID",
    "errorDeclaration", "epcList", "quantityList", "action", "bizStep", "disposition",
    "persistentDisposition", "readPoint", "bizLocation", "bizTransactionList", "sourceList",
    "destinationList", "sensorElementList", "ilmd", "certificationInfo",
}  # fmt: skip
# TDS 2.x §6.3: pure identity URIs. Serial / lot: GS1 character set 82 with the characters
# of Table A-1 that must be escaped written as %XX.
_CSET82_URI = r"(?:[!'()*+,\-.0-9:;=A-Z_a-z]|%(?:22|25|26|2F|3C|3E|3F))+"
_SGTIN = re.compile(rf"^urn:epc:id:sgtin:(\d+)\.(\d+)\.({_CSET82_URI})$")
_SSCC = re.compile(r"^urn:epc:id:sscc:(\d+)\.(\d+)$")
_LGTIN = re.compile(rf"^urn:epc:class:lgtin:(\d+)\.(\d+)\.({_CSET82_URI})$")
_GTIN_CLASS = re.compile(r"^urn:epc:idpat:sgtin:(\d+)\.(\d+)\.\*$")
_DIGITAL_LINK = re.compile(r"^https://id\.gs1\.org/(00/\d{18}|01/\d{14}(/(10|21)/[^/?#]+)?)$")


def check_identifier(uri: str, *, klass: bool) -> None:
    if _DIGITAL_LINK.match(uri):
        return
    patterns = (_LGTIN, _GTIN_CLASS) if klass else (_SGTIN, _SSCC)
    match = next((m for p in patterns if (m := p.match(uri))), None)
    assert match is not None, f"{uri} is not a pure identity URI of the expected kind"
    company, reference = match.group(1), match.group(2)
    assert 6 <= len(company) <= 12, uri
    total = 17 if uri.startswith("urn:epc:id:sscc:") else 13
    assert len(company) + len(reference) == total, uri


def check_object_event(event: dict[str, Any]) -> None:
    """The EPCIS 2.0 JSON schema's constraints on a standalone ObjectEvent."""
    context = event["@context"]
    contexts = context if isinstance(context, list) else [context]
    assert EPCIS_CONTEXT in contexts
    prefixes = {k for c in contexts if isinstance(c, dict) for k in c} | {"cbvmda", "gs1"}
    assert event["type"] == "ObjectEvent"
    assert _DATE_TIME.match(event["eventTime"])
    assert _OFFSET.match(event["eventTimeZoneOffset"])
    assert "recordTime" not in event  # the capturing repository sets it
    assert _URI.match(event["eventID"])
    assert event["action"] in ("OBSERVE", "ADD", "DELETE")
    assert "epcList" in event or event.get("quantityList"), "epcList or quantityList needed"
    epcs = event.get("epcList", [])
    assert len(epcs) == len(set(epcs))
    for epc in epcs:
        check_identifier(epc, klass=False)
    for element in event.get("quantityList", []):
        assert set(element) <= {"epcClass", "quantity", "uom"}
        assert isinstance(element["quantity"], int | float)
        check_identifier(element["epcClass"], klass=True)
    if "ilmd" in event:
        assert event["action"] == "ADD", "ilmd is allowed with action ADD only"
        assert all(":" in key for key in event["ilmd"])
    assert event["bizStep"] in CBV_BIZ_STEPS or _URI.match(event["bizStep"])
    if "disposition" in event:
        assert event["disposition"] in CBV_DISPOSITIONS or _URI.match(event["disposition"])
    for where in ("readPoint", "bizLocation"):
        assert set(event[where]) == {"id"}
        assert _URI.match(event[where]["id"])
    for key in set(event) - _OBJECT_EVENT_FIELDS:
        prefix, _, name = key.partition(":")
        assert name, f"extension field {key!r} is not prefixed"
        assert prefix in prefixes, f"extension field {key!r} has no declared prefix"


# --------------------------------------------------------------------------- helpers


def scanner(**fields: Any) -> BarcodeScannerDevice:
    settings = {
        "type": "barcode_scanner",
        "transport": "tcp",
        "host": "127.0.0.1",
        "port": 2001,
        "zone": "dock",
        "biz_step": "receiving",
        "disposition": "in_progress",
        **fields,
    }
    return BarcodeScannerDevice.model_validate(settings)


def reader(**fields: Any) -> RfidReaderDevice:
    settings = {
        "type": "rfid_reader",
        "transport": "tcp",
        "host": "127.0.0.1",
        "port": 2002,
        "zone": "dock",
        "biz_step": "receiving",
        **fields,
    }
    return RfidReaderDevice.model_validate(settings)


def barcode_facts(
    data: bytes, config: BarcodeScannerDevice | None = None, device: str = "dock-scanner"
) -> list[Fact]:
    builder = CustodyBuilder("gw-test", device, config or scanner(), tz=CET)
    read = BarcodeRead(AT, decode_scan(data, AT, "NOREAD"))
    return builder.facts(read)


def tag_facts(hex_text: str, config: RfidReaderDevice | None = None) -> list[Fact]:
    cfg = config or reader()
    builder = CustodyBuilder("gw-test", "dock-portal", cfg, tz=UTC)
    return builder.facts(TagRead(AT, decode_epc(hex_text, strip_pc=cfg.strip_pc_word)))


def only_custody(facts: list[Fact]) -> dict[str, Any]:
    assert [f.kind for f in facts] == ["custody"]
    fact = facts[0]
    assert (fact.zone, fact.point, fact.value, fact.unit, fact.quality) == (
        "dock",
        None,
        None,
        None,
        None,
    )
    return fact.data


def line(scan: Scan) -> bytes:
    return (scan.symbology or "").encode() + scan.data


# --------------------------------------------------------------------------- barcodes


def test_case_label_is_an_sgtin_with_lot_and_expiry_as_extension_fields() -> None:
    case = next(s for s in DOCK_RECEIVING if s.name == "case-a1-1001")
    data = only_custody(barcode_facts(line(case)))
    assert data["scan"] == {
        "raw": "]d201106141410000191727033110LOT-A1\\x1d211001",
        "symbology": "]d2",
        "ai": {"01": "10614141000019", "17": "270331", "10": "LOT-A1", "21": "1001"},
    }
    event = data["epcis"]
    check_object_event(event)
    assert event["@context"] == [EPCIS_CONTEXT, {"gxp": "urn:gxpgate:epcis:"}]
    assert event["eventTime"] == "2026-11-21T10:00:00.123456Z"
    assert event["eventTimeZoneOffset"] == "+01:00"
    assert event["epcList"] == ["urn:epc:id:sgtin:0614141.100001.1001"]
    assert "quantityList" not in event
    assert event["action"] == "OBSERVE"
    assert (event["bizStep"], event["disposition"]) == ("receiving", "in_progress")
    assert event["readPoint"] == {"id": "urn:gxpgate:gw-test:device:dock-scanner"}
    assert event["bizLocation"] == {"id": "urn:gxpgate:gw-test:zone:dock"}
    assert (event["gxp:lot"], event["gxp:expiry"]) == ("LOT-A1", "2027-03-31")
    assert "ilmd" not in event


def test_pallet_label_is_an_sscc_and_matches_its_rfid_tag() -> None:
    pallet = next(s for s in DOCK_RECEIVING if s.name == "pallet-1")
    event = only_custody(barcode_facts(line(pallet)))["epcis"]
    check_object_event(event)
    assert event["epcList"] == ["urn:epc:id:sscc:0614141.3000000101"]
    assert "gxp:lot" not in event
    tag = next(t for t in DOCK_PORTAL_TAGS if t.name == "pallet-1")
    assert only_custody(tag_facts(tag.epc_hex))["epcis"]["epcList"] == event["epcList"]


def test_every_dock_receiving_scan_names_the_same_object_as_its_tag() -> None:
    tags = {t.name: t for t in DOCK_PORTAL_TAGS}
    for scan in DOCK_RECEIVING:
        barcode_event = only_custody(barcode_facts(line(scan)))["epcis"]
        tag_event = only_custody(tag_facts(tags[scan.name].epc_hex))["epcis"]
        check_object_event(barcode_event)
        check_object_event(tag_event)
        assert barcode_event["epcList"] == tag_event["epcList"], scan.name


def test_lot_level_scan_is_an_lgtin_quantity_and_the_count_comes_from_ai_30() -> None:
    event = only_custody(barcode_facts(b"]C101106141410000191727093010LOT-B7"))["epcis"]
    check_object_event(event)
    assert "epcList" not in event
    assert event["quantityList"] == [
        {"epcClass": "urn:epc:class:lgtin:0614141.100001.LOT-B7", "quantity": 1}
    ]
    assert event["gxp:expiry"] == "2027-09-30"  # day 00: the last day of the month
    counted = only_custody(barcode_facts(b"]C10110614141000019\x1d3012\x1d10LOT-B7"))["epcis"]
    assert counted["quantityList"][0]["quantity"] == 12


def test_gtin_alone_is_the_gtin_class() -> None:
    event = only_custody(barcode_facts(b"]C10110614141000019"))["epcis"]
    check_object_event(event)
    assert event["quantityList"] == [
        {"epcClass": "urn:epc:idpat:sgtin:0614141.100001.*", "quantity": 1}
    ]


def test_unknown_company_prefix_falls_back_to_gs1_digital_link() -> None:
    # 02…: a restricted-circulation number, in no company-prefix table.
    rcn = only_custody(barcode_facts(b"]d20102000001234563\x1d21A/B&1"))["epcis"]
    check_object_event(rcn)
    assert rcn["epcList"] == ["https://id.gs1.org/01/02000001234563/21/A%2FB%261"]
    lot = only_custody(barcode_facts(b"]d2010200000123456310L%1"))["epcis"]
    assert lot["quantityList"][0]["epcClass"] == "https://id.gs1.org/01/02000001234563/10/L%251"


def test_configured_company_prefix_wins_over_the_gs1_table() -> None:
    config = scanner(company_prefixes=["061414", "061414100"])
    case = next(s for s in DOCK_RECEIVING if s.name == "case-a1-1001")
    event = only_custody(barcode_facts(line(case), config))["epcis"]
    check_object_event(event)
    assert event["epcList"] == ["urn:epc:id:sgtin:061414100.1001.1001"]  # longest match
    prefixes = CompanyPrefixes()
    assert prefixes.find("0614141000019") == "0614141"  # GS1's table
    assert prefixes.find("0000095011011") is None  # a GTIN-8: no EPC-shaped prefix
    assert sgtin_uri("10614141000019", 'a"%&/<>?', prefixes) == (
        "urn:epc:id:sgtin:0614141.100001.a%22%25%26%2F%3C%3E%3F"
    )


def test_digital_link_scan_is_decoded_like_an_element_string() -> None:
    data = b"]Q1https://id.gs1.org/01/10614141000019/21/1001?10=LOT-A1&17=270331"
    event = only_custody(barcode_facts(data))["epcis"]
    check_object_event(event)
    assert event["epcList"] == ["urn:epc:id:sgtin:0614141.100001.1001"]
    assert event["gxp:lot"] == "LOT-A1"


@pytest.mark.parametrize(
    ("step", "action"),
    [
        ("receiving", "OBSERVE"),
        ("storing", "OBSERVE"),
        ("picking", "OBSERVE"),
        ("shipping", "OBSERVE"),
        ("commissioning", "ADD"),
        ("encoding", "ADD"),
        ("destroying", "DELETE"),
        ("decommissioning", "DELETE"),
    ],
)
def test_action_follows_the_business_step(step: str, action: str) -> None:
    assert action_for(step) == action
    case = next(s for s in DOCK_RECEIVING if s.name == "case-a1-1001")
    event = only_custody(barcode_facts(line(case), scanner(biz_step=step)))["epcis"]
    check_object_event(event)
    assert (event["bizStep"], event["action"]) == (step, action)
    if action == "ADD":
        assert event["ilmd"] == {
            "cbvmda:lotNumber": "LOT-A1",
            "cbvmda:itemExpirationDate": "2027-03-31",
        }
        assert "gxp:lot" not in event
    else:
        assert "ilmd" not in event
        assert event["gxp:lot"] == "LOT-A1"


def test_configured_read_point_and_location_and_no_disposition() -> None:
    config = scanner(
        read_point="urn:epc:id:sgln:0614141.00001.dock-door-1",
        biz_location="urn:epc:id:sgln:0614141.00001.dock-1",
        disposition=None,
    )
    event = only_custody(barcode_facts(b"]C100306141410000001010", config))["epcis"]
    check_object_event(event)
    assert event["readPoint"] == {"id": "urn:epc:id:sgln:0614141.00001.dock-door-1"}
    assert event["bizLocation"] == {"id": "urn:epc:id:sgln:0614141.00001.dock-1"}
    assert "disposition" not in event


def test_event_id_is_stable_for_the_same_read_and_differs_for_another() -> None:
    first = only_custody(barcode_facts(b"]C100306141410000001010"))["epcis"]
    again = only_custody(barcode_facts(b"]C100306141410000001010"))["epcis"]
    other = only_custody(barcode_facts(b"]C100306141410000001027"))["epcis"]
    elsewhere = only_custody(barcode_facts(b"]C100306141410000001010", device="door-2"))["epcis"]
    assert first["eventID"] == again["eventID"]
    assert len({first["eventID"], other["eventID"], elsewhere["eventID"]}) == 3


def test_valid_non_gs1_code_and_gs1_without_key_are_kept_without_event_or_audit() -> None:
    tote = only_custody(barcode_facts(b"]C0PICK-TOTE-0042"))
    assert tote == {
        "scan": {"raw": "]C0PICK-TOTE-0042", "symbology": "]C0", "ai": {}},
        "epcis": None,
    }
    no_key = only_custody(barcode_facts(b"15210526\x1d100329"))
    assert no_key["scan"]["ai"] == {"15": "210526", "10": "0329"}
    assert no_key["epcis"] is None


@pytest.mark.parametrize("scan", FAULTY_SCANS, ids=lambda s: s.name)
def test_faulty_scans_become_custody_with_error_and_an_audit(scan: Scan) -> None:
    facts = barcode_facts(line(scan))
    if scan.name == "code128-not-gs1":
        assert only_custody(facts)["epcis"] is None
        return
    assert [f.kind for f in facts] == ["custody", "audit"]
    custody, audit = facts
    error = custody.data["scan"]["error"]
    assert error
    assert custody.data["epcis"] is None
    assert "\x1b" not in custody.data["scan"]["raw"]  # control characters are escaped
    assert audit.data == {"event": "scan_invalid", "reason": error, "scan": custody.data["scan"]}
    assert (audit.zone, audit.device) == ("dock", "dock-scanner")
    expected = {
        "garbage": "control character",
        "truncated-in-gtin": "too short",
        "truncated-in-expiry": "too short",
        "truncated-in-ai": "no GS1 Application Identifier",
        "gs-missing": "ambiguous",
        "bad-check-digit": "check digit",
        "noread": "no read",
    }
    assert expected[scan.name] in error


def test_scan_decoding_uses_the_acquisition_date_for_two_digit_years() -> None:
    # Expiry 99-12-31 read in 2026 is 1999 (GS1 §7.12: 73 years ahead means the last century);
    # read in 2060 it is 2099.
    scan = decode_scan(b"]d2011061414100001917991231", AT, None)
    assert scan.elements[1].date == date(1999, 12, 31)
    assert scan == parse_scan("]d2011061414100001917991231", reference_date=REFERENCE)
    later = decode_scan(b"]d2011061414100001917991231", AT.replace(year=2060), None)
    assert later.elements[1].date == date(2099, 12, 31)


# --------------------------------------------------------------------------- RFID


def test_rfid_reads_are_sgtin_and_sscc_events_with_the_tag_in_scan() -> None:
    sgtin, sscc, sgtin198 = REFERENCE_TAGS
    data = only_custody(tag_facts(sgtin.epc_hex))
    assert data["scan"] == {
        "epc_hex": "3074257BF7194E4000001A85",
        "uri": "urn:epc:id:sgtin:0614141.812345.6789",
    }
    event = data["epcis"]
    check_object_event(event)
    assert event["epcList"] == ["urn:epc:id:sgtin:0614141.812345.6789"]
    assert event["eventTimeZoneOffset"] == "+00:00"
    assert "gxp:lot" not in event
    assert "disposition" not in event
    sscc_event = only_custody(tag_facts(sscc.epc_hex))["epcis"]
    check_object_event(sscc_event)
    assert sscc_event["epcList"] == ["urn:epc:id:sscc:0614141.1234567890"]
    long_event = only_custody(tag_facts(sgtin198.epc_hex))["epcis"]
    check_object_event(long_event)
    assert long_event["epcList"] == ["urn:epc:id:sgtin:0614141.812345.32a%2Fb"]


def test_rfid_pc_word_is_stripped_when_configured() -> None:
    data = only_custody(tag_facts("3000" + REFERENCE_TAGS[0].epc_hex, reader(strip_pc_word=True)))
    assert data["scan"]["epc_hex"] == REFERENCE_TAGS[0].epc_hex
    check_object_event(data["epcis"])


@pytest.mark.parametrize("tag", FAULTY_TAGS, ids=lambda t: t.name)
def test_undecodable_tags_are_kept_as_hex_with_the_reason(tag: Any) -> None:
    hex_text = f"{tag.pc_word:04X}{tag.epc_hex}" if tag.pc_word else tag.epc_hex
    config = reader(strip_pc_word=tag.pc_word is not None)
    custody, audit = tag_facts(hex_text, config)
    assert custody.kind == "custody"
    assert audit.kind == "audit"
    assert custody.data["epcis"] is None
    assert custody.data["scan"]["epc_hex"] == tag.epc_hex
    assert custody.data["scan"]["uri"] is None
    assert custody.data["scan"]["error"] == audit.data["reason"]
    assert ("header 0xE2" if tag.name == "unknown-header" else "96 EPC bits") in audit.data[
        "reason"
    ]


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("device", "where", "why"),
    [
        ('transport = "tcp"\nhost = "h"', "devices.scanner", "needs host and port"),
        (
            'transport = "tcp"\nhost = "h"\nport = 1\nserial = { port = "/dev/ttyS0" }',
            "devices.scanner",
            "serial table applies to transport 'serial' only",
        ),
        ('transport = "serial"', "devices.scanner", "needs a serial table"),
        (
            'transport = "tcp"\nhost = "h"\nport = 1\nbiz_step = "recieving"',
            "devices.scanner.biz_step",
            "'receiving'",
        ),
        (
            'transport = "tcp"\nhost = "h"\nport = 1\nread_point = "dock door 1"',
            "devices.scanner.read_point",
            "'dock door 1' must be a URI (scheme:rest, no spaces)",
        ),
        (
            'transport = "tcp"\nhost = "h"\nport = 1\ncompany_prefixes = ["0614"]',
            "devices.scanner.company_prefixes.0",
            "'0614' must be 6 to 12 digits",
        ),
        (
            'transport = "tcp"\nhost = "h"\nport = 1\nterminator = "etx"',
            "devices.scanner.terminator",
            "'crlf'",
        ),
        (
            'transport = "serial"\nserial = { port = "/dev/ttyUSB0" }',
            "devices.scanner.serial.port",
            "already used by devices.other.serial",
        ),
    ],
)
def test_config_errors_name_the_field(device: str, where: str, why: str, write_config: Any) -> None:
    step = "" if "biz_step" in device else 'biz_step = "receiving"\n'
    extra = (
        '[devices.other]\ntype = "rfid_reader"\ntransport = "serial"\n'
        'serial = { port = "/dev/ttyUSB0" }\nzone = "cold-1"\nbiz_step = "storing"\n\n'
        f'[devices.scanner]\ntype = "barcode_scanner"\nzone = "cold-1"\n{step}{device}\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(modbus=False, extra_devices=extra))
    problems = dict(caught.value.problems)
    assert where in problems, problems
    assert why in problems[where]


def test_scanner_config_defaults() -> None:
    barcode, rfid = scanner(), reader()
    assert (barcode.terminator, barcode.dedupe_window_secs, barcode.no_read_text) == (
        "crlf",
        0.0,
        "NOREAD",
    )
    assert (rfid.dedupe_window_secs, rfid.strip_pc_word) == (5.0, False)
    assert barcode.points == {}


# --------------------------------------------------------------------------- EPCIS identity


def test_event_has_the_versioned_context_and_the_cbv_event_hash_as_id() -> None:
    event = only_custody(barcode_facts(b"]C100106141412345678908"))["epcis"]
    assert event["@context"][0] == (
        "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
    )
    assert re.fullmatch(r"ni:///sha-256;[0-9a-f]{64}\?ver=CBV2\.0", event["eventID"])
    assert event["eventID"] == event_hash(event)


def test_site_gln_makes_the_default_locations_sglns() -> None:
    builder = CustodyBuilder("gw-test", "dock-door-1", scanner(), tz=CET, site_gln="0614141000012")
    read = BarcodeRead(AT, decode_scan(b"]C100106141412345678908", AT, "NOREAD"))
    event = only_custody(builder.facts(read))["epcis"]
    check_object_event(event)
    assert event["readPoint"] == {"id": "urn:epc:id:sgln:0614141.00001.dock-door-1"}
    assert event["bizLocation"] == {"id": "urn:epc:id:sgln:0614141.00001.dock"}
    configured = scanner(read_point="urn:epc:id:sgln:0614141.00001.0")
    builder = CustodyBuilder("gw-test", "dock-door-1", configured, site_gln="0614141000012")
    event = only_custody(builder.facts(read))["epcis"]
    assert event["readPoint"] == {"id": "urn:epc:id:sgln:0614141.00001.0"}


_SCANNER = (
    '[devices.{id}]\ntype = "barcode_scanner"\ntransport = "tcp"\nhost = "h"\nport = 1\n'
    'zone = "cold-1"\nbiz_step = "receiving"\n{more}\n'
)


def _with_gln(path: Any, gln: str) -> Any:
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("[gateway]\n", f'[gateway]\ngln = "{gln}"\n', 1), "utf-8")
    return path


@pytest.mark.parametrize(
    ("gln", "device", "where", "why"),
    [
        ("0614141000013", "dock", "gateway", "GLN 0614141000013: check digit is 3, expected 2"),
        ("061414100001", "dock", "gateway.gln", "should match pattern"),
        (
            "0614141000012",
            "a-scanner-id-over-20-chars",
            "devices.a-scanner-id-over-20-chars.read_point",
            "cannot be the SGLN extension of gateway.gln (at most 20 characters)",
        ),
    ],
)
def test_site_gln_config_errors(
    gln: str, device: str, where: str, why: str, write_config: Any
) -> None:
    path = write_config(modbus=False, extra_devices=_SCANNER.format(id=device, more=""))
    with pytest.raises(ConfigError) as caught:
        load_config(_with_gln(path, gln))
    problems = dict(caught.value.problems)
    assert where in problems, problems
    assert why in problems[where]


def test_config_validate_warns_when_events_would_name_private_locations(
    write_config: Any,
) -> None:
    located = 'read_point = "urn:epc:id:sgln:0614141.00001.0"\nbiz_location = "urn:x:y"'
    devices = _SCANNER.format(id="dock", more="") + _SCANNER.format(id="door", more=located)
    path = write_config(modbus=False, extra_devices=devices)
    result = CliRunner().invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"{path}: warning: devices.dock: no gateway.gln and no read_point or biz_location: its "
        "EPCIS events name private urn:gxpgate: locations that trading partners cannot resolve\n"
    )
    result = CliRunner().invoke(app, ["config", "validate", str(_with_gln(path, "0614141000012"))])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
