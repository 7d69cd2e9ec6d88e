"""Writes the golden sealed-record vectors in this folder from gxpgate's own sealer.

Run from the repository root, and only when the record format or the facts below are meant to
change (the tests compare against the committed files and never regenerate them)::

    .venv/bin/python -m tests.cases.records.make

Everything is fixed: two Ed25519 test keys from published seeds (TEST ONLY), the gateway id, the
chain id and every time. The payloads come from the agent's own builders where it has one
(``CustodyBuilder`` for the custody record, ``Transition.data()`` for the alarms), so the
vectors carry what the gateway really emits. See README.md here for the files and their format.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gxpgate.agent.alarms.rules import State, Transition
from gxpgate.agent.custody.epcis import CustodyBuilder
from gxpgate.agent.evidence import canonical_bytes, format_time, key_id, public_key_pem
from gxpgate.agent.recording.sealing import Fact, Sealer
from gxpgate.buffer import Row
from gxpgate.drivers.scanner import BarcodeRead, decode_scan
from gxpgate.drivers.scanner_model import BarcodeScannerDevice

__all__ = ["CHAIN", "GW", "SEEDS", "build", "private_key"]

HERE = Path(__file__).resolve().parent
GW = "gw-golden-1"
CHAIN = "3f2b8c1e-7a4d-4e59-b6c2-9d0e1f2a3b4c"  # a UUID4, as the buffer mints one
# TEST ONLY: SHA-256 of "gxpgate golden-record vectors: TEST ONLY key A" (resp. B). Public by
# construction, so nothing signed with them is evidence of anything.
SEEDS = {
    "A": "512750807321b0b74a7adccb932161a7017c7eda0136f5d487f928d27cbe031c",
    "B": "7e233f9dc22358743154b75db28768b8e7b053052c63f54dd63cbbf717a5b7ce",
}
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)

FACT_FIELDS = (
    "kind",
    "at",
    "src_at",
    "zone",
    "device",
    "point",
    "value",
    "unit",
    "quality",
    "data",
)


def private_key(name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(SEEDS[name]))


def _at(secs: float) -> datetime:
    return T0 + timedelta(seconds=secs)


def _custody() -> Fact:
    # A GS1 DataMatrix with GTIN, expiry, lot and serial, FNC1 as ASCII 29 (escaped in scan.raw).
    scanner = BarcodeScannerDevice.model_validate(
        {
            "type": "barcode_scanner",
            "transport": "tcp",
            "host": "127.0.0.1",
            "port": 2001,
            "zone": "dock",
            "biz_step": "receiving",
            "disposition": "in_progress",
        }
    )
    builder = CustodyBuilder(GW, "dock-scanner", scanner, tz=UTC, site_gln="0614141000012")
    at = _at(20.25)
    raw = b"]d201106141410000191727033110LOT-A1\x1d211001"
    (fact,) = builder.facts(BarcodeRead(at, decode_scan(raw, at, "NOREAD")))
    return fact


def _alarm(state: State, at_secs: float, by: str | None = None, comment: str | None = None) -> Fact:
    transition = Transition(
        alarm_id="A1", rule="cold-1-high", kind="limit", severity="alarm",
        state=state,
        zone="cold-1", device="probe-1", point="temperature", unit="Cel",
        started_at=_at(30).timestamp(), at=_at(at_secs).timestamp(), value=8.4, limit=8.0,
        extreme=8.4, lots=["LOT-A1", "00106141412345678908"],
        condition="active" if state == "active" else "normal", by=by, comment=comment,
        os_user="qa" if by else None,
    )  # fmt: skip
    data = transition.data()
    data["route"] = "quality"  # config.alarms.routes.limit, its default
    return Fact(
        "alarm", _at(at_secs), data, zone="cold-1", device="probe-1", point="temperature",
        unit="Cel",
    )  # fmt: skip


def facts() -> list[tuple[str, str, Fact]]:
    """(signing key, what the record covers, fact) in chain order."""
    pub_b = private_key("B").public_key()
    comment = "Tür geschlossen, Ware geprüft – OK"  # non-ASCII: UTF-8 in the canonical bytes
    return [
        ("A", "audit agent_started: the first record, prev is GENESIS", Fact(
            "audit", _at(0.000001), {
                "event": "agent_started", "version": "0.0.0+golden",
                "config_sha256": hashlib.sha256(b"golden config").hexdigest(),
                "config_path": "/etc/gxpgate/gxpgate.toml", "key_id": key_id(
                    private_key("A").public_key()),
                "devices": ["dock-scanner", "logger-1", "probe-1"],
            })),
        ("A", "good reading with a device timestamp; integral float value 5.0 (JCS: 5)", Fact(
            "reading", _at(1.5), zone="cold-1", device="probe-1", point="temperature",
            value=5.0, unit="Cel", quality="good", src_at=_at(1.499987))),
        ("A", "bad-quality reading: value null, data.error (OPC UA bad status)", Fact(
            "reading", _at(2.5), {"error": "BadCommunicationError"}, zone="cold-1",
            device="probe-1", point="temperature", unit="Cel", quality="bad",
            src_at=_at(2.499))),
        ("A", "back-filled logger reading: negative value, data.backfill", Fact(
            "reading", _at(10.75), {"backfill": True, "record": 4711, "logger": "GXL-0042"},
            zone="freezer-1", device="logger-1", point="temperature", value=-18.25,
            unit="Cel", quality="good", src_at=_at(-3600))),
        ("A", "custody: GS1 barcode with its EPCIS 2.0 ObjectEvent (CustodyBuilder)",
         _custody()),
        ("A", "alarm active (limit excursion), lots in the zone", _alarm("active", 30)),
        ("A", "alarm acknowledged: by, non-ASCII comment", _alarm(
            "acknowledged", 95.5, by="m.keller", comment=comment)),
        ("A", "audit alarm_acknowledged", Fact(
            "audit", _at(95.5), {
                "event": "alarm_acknowledged", "alarm_id": "A1", "rule": "cold-1-high",
                "by": "m.keller", "comment": comment, "os_user": "qa", "os_uid": 1001,
            }, zone="cold-1")),
        ("A", "audit clock_step: numbers below 1e-3 (the serialiser's reference path)", Fact(
            "audit", _at(120), {
                "event": "clock_step", "before": format_time(_at(119.999488)),
                "after": format_time(_at(120)), "step_secs": 0.000512,
                "threshold_secs": 0.0005,
            })),
        ("A", "audit key_rotated, signed by the old key A, announcing key B", Fact(
            "audit", _at(180), {
                "event": "key_rotated", "new_key": key_id(pub_b),
                "public_key": public_key_pem(pub_b),
            })),
        ("B", "first record signed by the new key B", Fact(
            "reading", _at(181.5), zone="cold-1", device="probe-1", point="temperature",
            value=4.85, unit="Cel", quality="good", src_at=_at(181.499))),
    ]  # fmt: skip


def fact_json(fact: Fact) -> dict[str, Any]:
    """The fact as the vectors store it: record field names, times in the record's format."""
    out: dict[str, Any] = {name: getattr(fact, name) for name in FACT_FIELDS}
    out["at"] = format_time(fact.at)
    out["src_at"] = format_time(fact.src_at) if fact.src_at else None
    return out


def seal(signed: Sequence[tuple[str, Fact]]) -> list[Row]:
    """Seal in order, one Sealer per run of the same key, each continuing from the tail."""
    rows: list[Row] = []
    start = 0
    while start < len(signed):
        signer = signed[start][0]
        end = start
        while end < len(signed) and signed[end][0] == signer:
            end += 1
        sealer = Sealer(private_key(signer), GW, CHAIN)
        last_seq, last_hash = (rows[-1].seq, rows[-1].hash) if rows else (0, None)
        rows += sealer.seal([fact for _, fact in signed[start:end]], last_seq, last_hash)
        start = end
    return rows


def _dump(doc: Any) -> bytes:
    return (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def build() -> dict[str, bytes]:
    """File name → content, everything this folder's vectors consist of."""
    listed = facts()
    rows = seal([(signer, fact) for signer, _, fact in listed])
    keys = {}
    for name in SEEDS:
        public = private_key(name).public_key()
        keys[name] = {
            "seed_hex": SEEDS[name],
            "key_id": key_id(public),
            "public_key_pem": public_key_pem(public),
        }
    entries = []
    for (signer, covers, fact), row in zip(listed, rows, strict=True):
        record = json.loads(row.body)
        entries.append(
            {
                "seq": row.seq,
                "covers": covers,
                "signer": signer,
                "fact": fact_json(fact),
                "canonical": canonical_bytes(record).decode("utf-8"),
                "hash": row.hash,
                "sig": record["sig"],
            }
        )
    return {
        "keys.json": _dump(
            {
                "WARNING": "TEST ONLY. These seeds are public: never sign real evidence with them.",
                "trusted_at_start": "A",
                "keys": keys,
            }
        ),
        "key-a.pub.pem": keys["A"]["public_key_pem"].encode("ascii"),
        "chain.json": _dump({"gw": GW, "chain": CHAIN, "records": entries}),
        "chain.jsonl": b"".join(row.body + b"\n" for row in rows),
    }


def main() -> None:
    for name, content in build().items():
        (HERE / name).write_bytes(content)
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
