"""Write the golden sealed-record vectors beside this file (run deliberately, from the
repository root: ``python tests/cases/records/make.py``; tests never regenerate them).

The chain is sealed by the agent's own :class:`agent.sealing.Sealer` from fixed facts, times,
gateway, chain id and a fixed TEST-ONLY key; ``tests/test_golden_records.py`` checks that the
sealer still produces these bytes and that a verifier which imports nothing of the agent accepts
them (and refuses them altered).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from agent.evidence import canonical_bytes  # noqa: E402
from agent.sealing import Fact, Sealer  # noqa: E402

SEED_HEX = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
"""RFC 8032's first Ed25519 test key: TEST ONLY, published, never for a gateway."""
GW = "gw-golden"
CHAIN = "3f0c8f4e-5d8a-4f3b-9a52-6c1d2e7b8a90"
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def facts() -> list[Fact]:
    """One of each kind the contract names, and the corners: a bad reading with its error, a
    back-filled logger value with its source time, a non-ASCII text, a large integer value."""
    at = [T0 + timedelta(seconds=s, microseconds=123456) for s in range(8)]
    return [
        Fact("audit", at[0], {"event": "agent_started", "version": "golden",
                              "config_sha256": "0" * 64, "key_id": "-", "devices": ["probe-1"]}),
        Fact("reading", at[1], zone="cold-1", device="probe-1", point="temperature",
             value=5.25, unit="Cel", quality="good"),
        Fact("reading", at[2], {"error": "Modbus exception 4 (device failure)"}, zone="cold-1",
             device="probe-1", point="humidity", unit="%", quality="bad"),
        Fact("reading", at[3], {"backfill": True}, zone="cold-1", device="logger-1",
             point="temperature", value=-18.5, unit="Cel", quality="good",
             src_at=T0 - timedelta(minutes=5)),
        Fact("custody", at[4], {
            "scan": {"raw": "]d2010950600013435210LOT-42\\x1d21SN0001", "symbology": "]d2",
                     "ai": {"01": "09506000134352", "10": "LOT-42", "21": "SN0001"}},
            "epcis": {"type": "ObjectEvent", "action": "OBSERVE", "bizStep": "receiving",
                      "epcList": ["urn:epc:id:sgtin:9506000.013435.SN0001"]}}, zone="dock-1",
             device="dock-scanner"),
        Fact("alarm", at[5], {"alarm_id": "a-1", "rule": "cold-1.temperature.high",
                              "severity": "alarm", "state": "active",
                              "started_at": "2026-11-21T09:55:00.000000Z", "value": 8.75,
                              "limit": 8, "lots": ["(01)09506000134352(10)LOT-42"], "by": None,
                              "comment": None}, zone="cold-1"),
        Fact("audit", at[6], {"event": "alarm_acknowledged", "alarm_id": "a-1",
                              "by": "Zoë Müller", "comment": "door closed — checked"}),
        Fact("reading", at[7], zone="cold-1", device="counter-1", point="count",
             value=9007199254740991, unit="1", quality="good"),
    ]  # fmt: skip


def main() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(SEED_HEX))
    rows = Sealer(key, GW, CHAIN).seal(facts(), 0, None)
    (HERE / "chain.jsonl").write_bytes(b"".join(row.body + b"\n" for row in rows))
    expected = []
    for row in rows:
        record = json.loads(row.body)
        expected.append({
            "seq": row.seq,
            "canonical": canonical_bytes(record).decode("utf-8"),
            "hash": record["hash"],
            "sig": record["sig"],
        })  # fmt: skip
    (HERE / "expected.json").write_text(
        json.dumps({"gw": GW, "chain": CHAIN, "seed_hex": SEED_HEX, "records": expected},
                   indent=1, ensure_ascii=False) + "\n", encoding="utf-8",
    )  # fmt: skip
    print(f"wrote {len(rows)} records to {HERE}")


if __name__ == "__main__":
    main()
