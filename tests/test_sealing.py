"""Sealing: records per CONTRACT §1-2, signatures identical to the reference library's."""

from __future__ import annotations

import base64
import math

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gxpgate.agent.evidence import (
    GENESIS_PREV,
    RECORD_FIELDS,
    ChainVerifier,
    key_id,
    record_hash,
    sign_hash,
)
from gxpgate.agent.recording.sealing import Sealer

from .sealed import reading


def test_sealed_records_follow_the_contract() -> None:
    key = Ed25519PrivateKey.generate()
    sealer = Sealer(key, "gw-test", "6f1c2a9e-0d4b-4b8e-9a51-2f3c4d5e6f70")
    rows = sealer.seal([reading(i) for i in range(50)], 0, None)
    records = [orjson.loads(r.body) for r in rows]
    assert [r["seq"] for r in records] == list(range(1, 51))
    assert records[0]["prev"] == GENESIS_PREV
    for record, row in zip(records, rows, strict=True):
        assert tuple(record) == RECORD_FIELDS
        assert record["hash"] == row.hash == record_hash(record)
        assert record["key"] == key_id(key.public_key())
        assert record["at"].endswith("Z")
        assert len(record["at"]) == len("2026-11-21T10:00:00.123456Z")
        # libsodium's signature is byte-identical to cryptography's (Ed25519 is deterministic)
        assert record["sig"] == sign_hash(key, record["hash"])
        assert len(base64.b64decode(record["sig"])) == 64
    verifier = ChainVerifier.for_public_keys([key.public_key()])
    for record in records:
        verifier.check(record)
    assert verifier.checked == 50


def test_non_finite_value_becomes_bad_quality_not_an_invalid_record() -> None:
    key = Ed25519PrivateKey.generate()
    fact = reading(0)
    fact.value = math.nan
    record = orjson.loads(Sealer(key, "gw-test", "c").seal([fact], 0, None)[0].body)
    assert record["value"] is None
    assert record["quality"] == "bad"
    assert record["data"]["error"] == "non-finite value nan"
