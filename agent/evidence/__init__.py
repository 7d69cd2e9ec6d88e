"""The evidence contract (CONTRACT §1-2): the sealed record, its canonical bytes, hash chain and
signature, the time text, the signing key files, and verification.

A leaf: it imports nothing else of the agent, and it is the only part of the agent the
simulators (the stand-in quality service) may import (pyproject.toml, ``[tool.importlinter]``).
"""

from __future__ import annotations

from gxpgate.agent.evidence.keys import (
    KeyFileError,
    describe,
    generate_key_file,
    key_path_for,
    load_private_key,
    load_public_key,
    public_key_path_for,
)
from gxpgate.agent.evidence.record import (
    FORMAT_VERSION,
    GENESIS_PREV,
    KEY_ROTATED,
    RECORD_FIELDS,
    ChainVerifier,
    EvidenceError,
    RecordInvalid,
    canonical_bytes,
    key_id,
    public_key_pem,
    record_hash,
    sign_hash,
    verify_signature,
)
from gxpgate.agent.evidence.timefmt import format_time, parse_time
from gxpgate.agent.evidence.verify import Verdict, verify_file, verify_lines

__all__ = [
    "FORMAT_VERSION",
    "GENESIS_PREV",
    "KEY_ROTATED",
    "RECORD_FIELDS",
    "ChainVerifier",
    "EvidenceError",
    "KeyFileError",
    "RecordInvalid",
    "Verdict",
    "canonical_bytes",
    "describe",
    "format_time",
    "generate_key_file",
    "key_id",
    "key_path_for",
    "load_private_key",
    "load_public_key",
    "parse_time",
    "public_key_path_for",
    "public_key_pem",
    "record_hash",
    "sign_hash",
    "verify_file",
    "verify_lines",
    "verify_signature",
]
