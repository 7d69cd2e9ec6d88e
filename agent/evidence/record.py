"""Evidence records: canonical bytes, hash chain and signature (CONTRACT.md §1–2).

This module is the one place that knows how a record is hashed, signed and checked. The agent
uses it to seal, ``gxpgate verify`` and the quality-service simulator use it to check, so the
three can never disagree about the format.

Canonical bytes are RFC 8785 (JCS). The reference serialiser (the ``rfc8785`` package) costs
about 40–70 µs per record here, more than the Ed25519 signature, so :func:`canonical_bytes`
takes a fast path through orjson where orjson's output is proven byte-identical to JCS
(``tests/test_canonical.py`` checks this property on generated records) and falls back to the
reference for anything outside that proven domain.

Exceptions::

    EvidenceError
    └── RecordInvalid        a record fails a check; ``seq`` and ``reason`` say which and why
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "FORMAT_VERSION",
    "GENESIS_PREV",
    "KEY_ROTATED",
    "RECORD_FIELDS",
    "ChainVerifier",
    "EvidenceError",
    "RecordInvalid",
    "canonical_bytes",
    "key_id",
    "public_key_pem",
    "record_hash",
    "sign_hash",
    "verify_signature",
]

FORMAT_VERSION = 1
GENESIS_PREV = "0" * 64
RECORD_FIELDS = (
    "v", "gw", "chain", "seq", "kind", "at", "src_at", "zone", "device", "point",
    "value", "unit", "quality", "data", "prev", "hash", "key", "sig",
)  # fmt: skip
KINDS = frozenset({"reading", "custody", "alarm", "audit"})
# The audit event of a key change (§2), from which a verifier learns the new key; the rest of
# the audit vocabulary is the agent's (agent/recording/audit.py).
KEY_ROTATED = "key_rotated"
_UNSIGNED = ("hash", "sig")
_SAFE_INT = 2**53
# Magnitudes where orjson's shortest round-trip output is plain decimal, as ECMAScript's is.
_PLAIN_FLOATS = (1e-3, 1e15)


class EvidenceError(Exception):
    """Base of this module's errors."""


class RecordInvalid(EvidenceError):
    """A record fails a check."""

    def __init__(self, seq: int | None, reason: str) -> None:
        super().__init__(f"seq {seq}: {reason}" if seq is not None else reason)
        self.seq = seq
        self.reason = reason


class _OutsideFastPath(Exception):
    """The value is outside the domain where orjson is proven to equal JCS."""


def _normalise(value: Any) -> Any:
    """Map a JSON value to one that orjson serialises exactly as RFC 8785 does.

    orjson already escapes strings as JCS does and formats doubles of ordinary magnitude the
    ECMAScript way; it differs on integral floats (``100.0`` vs ``100``, ``-0.0`` vs ``0``), on
    small or huge magnitudes (``5.7e-6`` vs ``0.0000057``) and on key order for non-ASCII keys
    (UTF-8 vs UTF-16 order). Integral floats become ints; anything else orjson might get wrong
    sends the whole record to the reference serialiser. This runs for every record sealed and
    every record the service checks, hence the exact-type dispatch.
    """
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return value
    if kind is int:
        if -_SAFE_INT < value < _SAFE_INT:
            return value
        raise _OutsideFastPath
    if kind is float:
        if value.is_integer():
            if abs(value) >= _SAFE_INT:
                raise _OutsideFastPath
            return int(value)
        if not _PLAIN_FLOATS[0] <= abs(value) < _PLAIN_FLOATS[1]:
            raise _OutsideFastPath
        return value
    if kind is dict:
        return _normalise_object(value, ())
    if kind is list or kind is tuple:
        return [_normalise(v) for v in value]
    raise _OutsideFastPath  # not a JSON type: let the reference serialiser decide


def _normalise_object(obj: Mapping[str, Any], skip: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for key, value in obj.items():
        if key in skip:
            continue
        if type(key) is not str or not key.isascii():
            raise _OutsideFastPath
        out[key] = value if type(value) is str or value is None else _normalise(value)
    return out


def canonical_bytes(record: Mapping[str, Any]) -> bytes:
    """RFC 8785 bytes of ``record`` without its ``hash`` and ``sig`` fields."""
    try:
        return orjson.dumps(_normalise_object(record, _UNSIGNED), option=orjson.OPT_SORT_KEYS)
    except _OutsideFastPath:
        return rfc8785.dumps({k: v for k, v in record.items() if k not in _UNSIGNED})


def record_hash(record: Mapping[str, Any]) -> str:
    """Lowercase hex SHA-256 of the record's canonical bytes."""
    return hashlib.sha256(canonical_bytes(record)).hexdigest()


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def sign_hash(private_key: Ed25519PrivateKey, hash_hex: str) -> str:
    """Standard base64 of the Ed25519 signature over the 32 raw digest bytes."""
    return base64.b64encode(private_key.sign(bytes.fromhex(hash_hex))).decode("ascii")


def verify_signature(record: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]) -> None:
    """Check ``sig`` over ``hash`` with the key the record names; raise :class:`RecordInvalid`.

    It trusts ``hash``: callers check the hash first (as :class:`ChainVerifier` does).
    """
    seq = record.get("seq")
    public_key = keys.get(record["key"])
    if public_key is None:
        raise RecordInvalid(seq, f"unknown signing key {record['key']!r}")
    try:
        signature = base64.b64decode(record["sig"], validate=True)
        public_key.verify(signature, bytes.fromhex(record["hash"]))
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise RecordInvalid(seq, "signature does not verify") from exc


@dataclass
class ChainVerifier:
    """Checks records of one chain, fed in ``seq`` order, against CONTRACT §2.

    It holds only the previous record's ``seq`` and ``hash``, so a chain of any length is checked
    in constant memory. ``keys`` maps key id to public key; a verified ``key_rotated`` audit
    record adds the key it announces. ``start_after`` lets a checker resume a chain whose
    earlier records it has already verified (the quality service does this per batch).
    With ``check_signatures`` off it checks everything but the signatures, for a caller that
    verifies those later with :func:`verify_signature`.
    """

    keys: dict[str, Ed25519PublicKey]
    chain: str | None = None
    last_seq: int = 0
    last_hash: str = GENESIS_PREV
    check_signatures: bool = True
    checked: int = 0

    @classmethod
    def for_public_keys(cls, keys: Iterable[Ed25519PublicKey], **kw: Any) -> ChainVerifier:
        return cls(keys={key_id(k): k for k in keys}, **kw)

    def check(self, record: Mapping[str, Any]) -> str:
        """Check one record; return its hash, or raise :class:`RecordInvalid`."""
        seq = record.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise RecordInvalid(None, f"seq is not an integer: {seq!r}")
        missing = [f for f in RECORD_FIELDS if f not in record]
        if missing:
            raise RecordInvalid(seq, f"missing fields: {', '.join(missing)}")
        if record["v"] != FORMAT_VERSION:
            raise RecordInvalid(seq, f"unsupported record version {record['v']!r}")
        if record["kind"] not in KINDS:
            raise RecordInvalid(seq, f"unknown kind {record['kind']!r}")
        if self.chain is None:
            self.chain = record["chain"]
        elif record["chain"] != self.chain:
            raise RecordInvalid(seq, f"chain {record['chain']} differs from {self.chain}")
        if seq != self.last_seq + 1:
            raise RecordInvalid(seq, f"gap or reorder: expected seq {self.last_seq + 1}")
        if record["prev"] != self.last_hash:
            raise RecordInvalid(seq, "prev does not match the hash of the previous record")
        digest = record_hash(record)
        if record["hash"] != digest:
            raise RecordInvalid(seq, "hash does not match the record's content")
        if record["key"] not in self.keys:
            raise RecordInvalid(seq, f"unknown signing key {record['key']!r}")
        if self.check_signatures:
            verify_signature(record, self.keys)
        self._learn_rotation(record)
        self.last_seq, self.last_hash = seq, digest
        self.checked += 1
        return digest

    def _learn_rotation(self, record: Mapping[str, Any]) -> None:
        data = record["data"]
        if record["kind"] != "audit" or data.get("event") != KEY_ROTATED:
            return
        try:
            new_key = serialization.load_pem_public_key(data["public_key"].encode("ascii"))
        except (KeyError, ValueError, AttributeError) as exc:
            raise RecordInvalid(record["seq"], "key_rotated record without a valid key") from exc
        if not isinstance(new_key, Ed25519PublicKey):
            raise RecordInvalid(record["seq"], "key_rotated announces a non-Ed25519 key")
        self.keys[key_id(new_key)] = new_key
