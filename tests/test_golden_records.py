"""Golden sealed records (tests/cases/records/): the agent's sealer still produces these exact
bytes, and a verifier written here from CONTRACT §1-2 alone — standard library, ``rfc8785`` and
``cryptography``, nothing of the agent — accepts them and refuses them altered. The agent's own
verifier and the quality-service simulator share code with the sealer; this one does not, so a
mistake made the same way on both ends shows here."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

CASES = Path(__file__).parent / "cases" / "records"
EXPECTED = json.loads((CASES / "expected.json").read_text(encoding="utf-8"))
LINES = (CASES / "chain.jsonl").read_bytes().splitlines()
GENESIS = "0" * 64
FIELDS = ("v", "gw", "chain", "seq", "kind", "at", "src_at", "zone", "device", "point", "value",
          "unit", "quality", "data", "prev", "hash", "key", "sig")  # fmt: skip


def _public_key() -> Ed25519PublicKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(EXPECTED["seed_hex"])).public_key()


class ChainError(Exception):
    pass


def verify(records: list[dict[str, Any]], key: Ed25519PublicKey) -> None:
    """CONTRACT §2, independently: hash, signature, link and seq of every record."""
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_id = hashlib.sha256(raw).hexdigest()[:16]
    prev = GENESIS
    for seq, record in enumerate(records, start=1):
        if tuple(record) != FIELDS:
            raise ChainError(f"seq {record.get('seq')}: fields {tuple(record)}")
        if record["seq"] != seq:
            raise ChainError(f"expected seq {seq}, got {record['seq']}")
        if record["prev"] != prev:
            raise ChainError(f"seq {seq}: prev does not link")
        unsigned = {k: v for k, v in record.items() if k not in ("hash", "sig")}
        digest = hashlib.sha256(rfc8785.dumps(unsigned)).hexdigest()
        if digest != record["hash"]:
            raise ChainError(f"seq {seq}: hash does not recompute")
        if record["key"] != key_id:
            raise ChainError(f"seq {seq}: key id {record['key']}, expected {key_id}")
        try:
            key.verify(base64.b64decode(record["sig"], validate=True), bytes.fromhex(digest))
        except InvalidSignature:
            raise ChainError(f"seq {seq}: signature does not verify") from None
        prev = digest


def _records() -> list[dict[str, Any]]:
    return [json.loads(line) for line in LINES]


def test_the_vectors_are_what_the_contract_says() -> None:
    records = _records()
    verify(records, _public_key())
    assert [r["kind"] for r in records] == [
        "audit", "reading", "reading", "reading", "custody", "alarm", "audit", "reading",
    ]  # fmt: skip
    for record, expected in zip(records, EXPECTED["records"], strict=True):
        unsigned = {k: v for k, v in record.items() if k not in ("hash", "sig")}
        assert rfc8785.dumps(unsigned) == expected["canonical"].encode("utf-8")
        assert (record["hash"], record["sig"]) == (expected["hash"], expected["sig"])
        assert len(base64.b64decode(record["sig"])) == 64


def test_the_agents_sealer_produces_these_bytes() -> None:
    from agent.evidence import canonical_bytes
    from agent.sealing import Sealer

    spec = importlib.util.spec_from_file_location("golden_make", CASES / "make.py")
    assert spec is not None
    assert spec.loader is not None
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(EXPECTED["seed_hex"]))
    rows = Sealer(key, EXPECTED["gw"], EXPECTED["chain"]).seal(make.facts(), 0, None)
    assert [row.body for row in rows] == LINES
    for row, expected in zip(rows, EXPECTED["records"], strict=True):
        assert canonical_bytes(json.loads(row.body)).decode("utf-8") == expected["canonical"]


def test_the_agents_verifier_accepts_them() -> None:
    from agent.evidence import verify_lines

    verdict = verify_lines(LINES, [_public_key()])
    assert verdict.ok, verdict
    assert verdict.records == len(LINES)


def _value(records: list[dict[str, Any]]) -> None:
    records[1]["value"] = 5.26


def _data(records: list[dict[str, Any]]) -> None:
    records[6]["data"]["comment"] = "door open"


def _swap(records: list[dict[str, Any]]) -> None:
    records[2], records[3] = records[3], records[2]


def _drop(records: list[dict[str, Any]]) -> None:
    del records[4]


def _resign_elsewhere(records: list[dict[str, Any]]) -> None:
    # A forger with another key recomputes the hash but cannot sign as the gateway.
    other = Ed25519PrivateKey.generate()
    records[5]["value"] = 7.0
    unsigned = {k: v for k, v in records[5].items() if k not in ("hash", "sig")}
    digest = hashlib.sha256(rfc8785.dumps(unsigned)).hexdigest()
    records[5]["hash"] = digest
    records[5]["sig"] = base64.b64encode(other.sign(bytes.fromhex(digest))).decode()


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_value, "seq 2: hash does not recompute"),
        (_data, "seq 7: hash does not recompute"),
        (_swap, "expected seq 3, got 4"),
        (_drop, "expected seq 5, got 6"),
        (_resign_elsewhere, "seq 6: signature does not verify"),
    ],
)
def test_an_altered_chain_is_refused(
    tamper: Callable[[list[dict[str, Any]]], None], reason: str
) -> None:
    records = _records()
    tamper(records)
    with pytest.raises(ChainError, match=reason):
        verify(records, _public_key())
