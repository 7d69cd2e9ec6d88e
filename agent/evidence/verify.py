"""``gxpgate verify``: check an exported chain, line by line, in constant memory."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gxpgate.agent.evidence.record import ChainVerifier, RecordInvalid

__all__ = ["Verdict", "verify_file", "verify_lines"]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    records: int
    chain: str | None
    first_seq: int | None
    last_seq: int | None
    bad_seq: int | None = None
    bad_line: int | None = None
    reason: str | None = None

    def summary(self) -> str:
        if self.ok:
            if not self.records:
                return "FAIL: no records to verify"
            partial = (
                f" (starts at seq {self.first_seq}: its link to seq {self.first_seq - 1} is not"
                " in the file)"
                if self.first_seq and self.first_seq > 1
                else ""
            )
            return (
                f"OK: {self.records} record(s), chain {self.chain}, seq {self.first_seq}.."
                f"{self.last_seq}: hashes, signatures, links and sequence verified{partial}"
            )
        where = f"seq {self.bad_seq}" if self.bad_seq is not None else "a record"
        return (
            f"FAIL at {where} (line {self.bad_line}): {self.reason}; "
            f"{self.records} record(s) before it verified"
        )


def verify_lines(lines: Iterable[bytes], keys: Iterable[Ed25519PublicKey]) -> Verdict:
    """Verify a chain given as JSON lines. An export may start after pruned records: the first
    record's ``prev`` is then taken on trust, and everything after it is checked."""
    verifier = ChainVerifier.for_public_keys(keys)
    first_seq: int | None = None
    line_no = 0
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
            if not isinstance(record, dict):
                raise RecordInvalid(None, "line is not a JSON object")
            if first_seq is None and isinstance(record.get("seq"), int):
                first_seq = record["seq"]
                if first_seq > 1:
                    verifier.last_seq = first_seq - 1
                    verifier.last_hash = record.get("prev", "")
            verifier.check(record)
        except orjson.JSONDecodeError as exc:
            return _failed(verifier, first_seq, None, line_no, f"not valid JSON: {exc}")
        except RecordInvalid as exc:
            return _failed(verifier, first_seq, exc.seq, line_no, exc.reason)
    return Verdict(
        ok=verifier.checked > 0,
        records=verifier.checked,
        chain=verifier.chain,
        first_seq=first_seq,
        last_seq=verifier.last_seq if verifier.checked else None,
        reason=None if verifier.checked else "no records",
    )


def _failed(
    verifier: ChainVerifier, first_seq: int | None, seq: int | None, line: int, reason: str
) -> Verdict:
    return Verdict(
        ok=False,
        records=verifier.checked,
        chain=verifier.chain,
        first_seq=first_seq,
        last_seq=verifier.last_seq if verifier.checked else None,
        bad_seq=seq,
        bad_line=line,
        reason=reason,
    )


def verify_file(path: Path, keys: Iterable[Ed25519PublicKey]) -> Verdict:
    with path.open("rb") as handle:
        return verify_lines(handle, keys)
