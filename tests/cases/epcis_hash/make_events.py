"""Writes ``events.jsonl``: EPCIS events as gxpgate's CustodyBuilder builds them, one per line.

Run from the repository root: ``.venv/bin/python -m tests.cases.epcis_hash.make_events``; then
``reference_hashes.py`` (in a virtualenv holding the reference implementation) adds the
expected hashes. See README.md here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from gxpgate.agent.custody.epcis import CustodyBuilder
from gxpgate.drivers.epc import decode_epc
from gxpgate.drivers.scanner import BarcodeRead, TagRead, decode_scan
from gxpgate.drivers.scanner_model import BarcodeScannerDevice, RfidReaderDevice

HERE = Path(__file__).parent
CET = timezone(timedelta(hours=1))


def device(kind: str = "barcode_scanner", **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "transport": "tcp",
        "host": "127.0.0.1",
        "port": 2001,
        "zone": "dock",
        "biz_step": "receiving",
        **fields,
    }


# (name, device settings, site GLN, scanned bytes or EPC hex, microsecond of the read)
CASES: list[tuple[str, dict[str, Any], str | None, str, int]] = [
    ("sgtin-lot-expiry", device(disposition="in_progress"), None,
     "]d201106141410000191727033110LOT-A1\x1d211001", 123456),
    ("sscc", device(), "0614141000012", "]C100106141412345678908", 500),
    ("lgtin-count", device(biz_step="storing"), "0614141000012",
     "]d2011061414100001910LOT-B2\x1d3012", 1500),
    ("gtin-class", device(biz_step="picking", disposition="in_progress"), None,
     "]d20110614141000019", 999499),
    ("digital-link-fallback", device(), None,
     "]d20100000095011011210A/B+C!", 0),
    ("add-with-ilmd", device(biz_step="commissioning", disposition="active"), "0614141000012",
     "]d201106141410000191727033110LOT-A1\x1d211002", 250000),
    ("delete", device(biz_step="destroying", disposition="destroyed"), None,
     "]d20110614141000019210042", 1),
    ("numeric-lot", device(), None, "]d20110614141000019100329", 2500),
    ("lot-equal-to-a-disposition", device(biz_step="shipping", disposition="in_transit"), None,
     "]d2011061414100001910in_transit", 7),
    ("configured-sgln", device(read_point="urn:epc:id:sgln:0614141.00001.door(1)",
                               biz_location="urn:epc:id:sgln:0614141.00001.0"), None,
     "]C100106141412345678908", 42),
    ("gln-without-known-prefix", device(), "0000095011011", "]C100106141412345678908", 3),
    ("serial-escapes", device(), "0614141000012",
     "]d2011061414100001921a\"%&/<>?", 4),
    ("rfid-sgtin", device("rfid_reader"), "0614141000012", "3074257BF7194E4000001A85", 600),
    ("rfid-sscc", device("rfid_reader", biz_step="shipping"), None,
     "3174257BF4499602D2000000", 700),
]  # fmt: skip


def build(case: tuple[str, dict[str, Any], str | None, str, int]) -> dict[str, Any]:
    name, settings, gln, data, micro = case
    at = datetime(2026, 11, 21, 10, 0, 0, micro, tzinfo=UTC)
    if settings["type"] == "rfid_reader":
        rfid = RfidReaderDevice.model_validate(settings)
        builder = CustodyBuilder("gw-test", "dock-portal", rfid, tz=CET, site_gln=gln)
        facts = builder.facts(TagRead(at, decode_epc(data)))
    else:
        scanner = BarcodeScannerDevice.model_validate(settings)
        builder = CustodyBuilder("gw-test", "dock-scanner", scanner, tz=CET, site_gln=gln)
        facts = builder.facts(BarcodeRead(at, decode_scan(data.encode(), at, "NOREAD")))
    event = facts[0].data["epcis"]
    assert event is not None, name
    return {"name": name, "event": event}


def main() -> None:
    with (HERE / "events.jsonl").open("w", encoding="utf-8") as out:
        for case in CASES:
            out.write(json.dumps(build(case), ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
