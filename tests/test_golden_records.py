"""Golden sealed-record vectors (``tests/cases/records/``): one set of committed bytes that the
agent's sealer reproduces, the agent's verifiers accept, and an independent verifier accepts.

The independent verifier below reads CONTRACT.md §1–2 afresh, with only the standard library,
``rfc8785`` and ``cryptography``: if the agent's fast canonical serialiser, its hash input or its
signature encoding drifted from the contract, the sealer tests and this verifier would disagree
on the committed bytes. ``test_the_independent_verifier_uses_no_gxpgate_code`` keeps it
independent. The vectors are never regenerated here: ``python -m tests.cases.records.make`` does
that, deliberately (README.md beside them).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from typer.testing import CliRunner

from gxpgate.agent.cli.main import app
from gxpgate.agent.evidence import canonical_bytes, parse_time, verify_file, verify_lines
from gxpgate.agent.recording.sealing import Fact, Sealer
from gxpgate.buffer import Row
from gxpgate.simulators.quality_service import QualityServiceSimulator

from .cases.records import make

HERE = Path(__file__).resolve().parent / "cases" / "records"
CHAIN_JSON = HERE / "chain.json"
CHAIN_JSONL = HERE / "chain.jsonl"
KEYS_JSON = HERE / "keys.json"
PUB_PEM = HERE / "key-a.pub.pem"


def _golden() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(CHAIN_JSON.read_text(encoding="utf-8"))
    return doc


def _lines() -> list[bytes]:
    return CHAIN_JSONL.read_bytes().splitlines()


def _seeds() -> dict[str, str]:
    keys = json.loads(KEYS_JSON.read_text(encoding="utf-8"))["keys"]
    return {name: entry["seed_hex"] for name, entry in keys.items()}


def _private(name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(_seeds()[name]))


def _trusted_at_start() -> Ed25519PublicKey:
    name = json.loads(KEYS_JSON.read_text(encoding="utf-8"))["trusted_at_start"]
    return _private(name).public_key()


# =============================================================== the independent verifier
# Nothing in this section may use gxpgate code (agent, buffer, drivers, simulators); the guard
# test below walks these functions' globals to keep it so.

GENESIS = "0" * 64
FIELDS = (
    "v", "gw", "chain", "seq", "kind", "at", "src_at", "zone", "device", "point", "value",
    "unit", "quality", "data", "prev", "hash", "key", "sig",
)  # fmt: skip
KINDS = frozenset({"reading", "custody", "alarm", "audit"})
UNHASHED = ("hash", "sig")


class ChainBroken(Exception):
    """The first record that fails a check of CONTRACT §2, and why."""

    def __init__(self, seq: object, reason: str) -> None:
        super().__init__(f"seq {seq}: {reason}")
        self.seq = seq
        self.reason = reason


def independent_canonical(record: dict[str, Any]) -> bytes:
    """CONTRACT §2: RFC 8785 of the record without ``hash`` and ``sig``, UTF-8."""
    return rfc8785.dumps({k: v for k, v in record.items() if k not in UNHASHED})


def independent_key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def independent_seal(record: dict[str, Any], private: Ed25519PrivateKey) -> dict[str, Any]:
    """Sign ``record`` as CONTRACT §2 says, for negative cases that need a validly signed lie
    (they isolate one structural check from the hash and signature checks)."""
    record = {**record, "key": independent_key_id(private.public_key())}
    digest = hashlib.sha256(independent_canonical(record)).hexdigest()
    record["hash"] = digest
    record["sig"] = base64.b64encode(private.sign(bytes.fromhex(digest))).decode("ascii")
    return record


def _independent_signature(record: dict[str, Any], public: Ed25519PublicKey) -> None:
    text = record["sig"]
    try:
        signature = base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise ChainBroken(record["seq"], "sig is not base64") from exc
    # "standard base64 (with padding)": exactly one spelling of the 64 bytes is accepted.
    if base64.b64encode(signature).decode("ascii") != text:
        raise ChainBroken(record["seq"], "sig is not standard padded base64")
    try:
        public.verify(signature, bytes.fromhex(record["hash"]))
    except InvalidSignature as exc:
        raise ChainBroken(record["seq"], "signature does not verify") from exc


def _independent_rotation(record: dict[str, Any]) -> Ed25519PublicKey:
    data = record["data"]
    try:
        new = serialization.load_pem_public_key(data["public_key"].encode("ascii"))
    except (KeyError, ValueError, AttributeError) as exc:
        raise ChainBroken(record["seq"], "key_rotated without a readable public key") from exc
    if not isinstance(new, Ed25519PublicKey):
        raise ChainBroken(record["seq"], "key_rotated announces a non-Ed25519 key")
    if data.get("new_key") != independent_key_id(new):
        raise ChainBroken(record["seq"], "key_rotated names another key id than its key")
    return new


def independent_verify(lines: list[bytes], trusted: Ed25519PublicKey) -> list[str]:
    """Check a whole chain from genesis; return its hashes or raise :class:`ChainBroken`.

    Stricter than a resuming checker on purpose: the first record must be ``seq`` 1 with the
    genesis ``prev``, and after a ``key_rotated`` record only the new key is accepted (CONTRACT:
    "followed by records signed by the new").
    """
    key_id, public = independent_key_id(trusted), trusted
    prev, seq_wanted, same = GENESIS, 1, None
    hashes: list[str] = []
    for line in lines:
        record = json.loads(line)
        seq = record.get("seq") if isinstance(record, dict) else None
        if not isinstance(record, dict) or set(FIELDS) - set(record):
            raise ChainBroken(seq, "not a record with every field of CONTRACT §1")
        if record["v"] != 1 or record["kind"] not in KINDS:
            raise ChainBroken(seq, "unknown version or kind")
        if same is None:
            same = (record["gw"], record["chain"])
        if (record["gw"], record["chain"]) != same:
            raise ChainBroken(seq, "another gateway's or chain's record")
        if type(seq) is not int or seq != seq_wanted:
            raise ChainBroken(seq, f"seq {seq_wanted} expected")
        if record["prev"] != prev:
            raise ChainBroken(seq, "prev is not the previous record's hash")
        digest = hashlib.sha256(independent_canonical(record)).hexdigest()
        if record["hash"] != digest:
            raise ChainBroken(seq, "hash does not match the canonical bytes")
        if record["key"] != key_id:
            raise ChainBroken(seq, f"signed by {record['key']}, not the key in force {key_id}")
        _independent_signature(record, public)
        if record["kind"] == "audit" and record["data"].get("event") == "key_rotated":
            public = _independent_rotation(record)
            key_id = independent_key_id(public)
        hashes.append(digest)
        prev, seq_wanted = digest, seq_wanted + 1
    if not hashes:
        raise ChainBroken(None, "no records")
    return hashes


INDEPENDENT: tuple[Any, ...] = (independent_verify, independent_seal)
_GXPGATE_PACKAGES = frozenset({"agent", "buffer", "config", "drivers", "simulators"})


def _gxpgate_names(func: types.FunctionType, seen: set[str]) -> list[str]:
    """Globals that ``func`` (and the module-local functions and classes it uses) reach whose
    module is not the standard library, rfc8785 or cryptography."""
    allowed = {"builtins", "base64", "hashlib", "json", "types", "rfc8785", "cryptography"}
    found: list[str] = []
    codes = [func.__code__]
    while codes:
        code = codes.pop()
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
        for name in code.co_names:
            if name.split(".")[0] in _GXPGATE_PACKAGES:
                found.append(f"{name} (imported inside a function)")
            if name not in func.__globals__ or name in seen:
                continue  # an attribute or builtin name, or already walked
            seen.add(name)
            obj = func.__globals__[name]
            if isinstance(obj, types.ModuleType):
                module = obj.__name__
            else:
                module = getattr(obj, "__module__", None) or "builtins"  # plain data
            if module == __name__:
                members = vars(obj).values() if isinstance(obj, type) else [obj]
                for member in members:
                    if isinstance(member, types.FunctionType):
                        found += _gxpgate_names(member, seen)
            elif module.split(".")[0] not in allowed:
                found.append(f"{name} ({module})")
    return found


def test_the_independent_verifier_uses_no_gxpgate_code() -> None:
    seen: set[str] = set()
    reached = [name for func in INDEPENDENT for name in _gxpgate_names(func, seen)]
    assert reached == []
    # the guard itself sees an import when there is one
    assert _gxpgate_names(
        cast(types.FunctionType, test_sealer_reproduces_the_golden_records), set()
    )


# ====================================================================== the vectors themselves


def test_the_test_keys_are_what_the_files_say() -> None:
    doc = json.loads(KEYS_JSON.read_text(encoding="utf-8"))
    assert "TEST ONLY" in doc["WARNING"]
    for entry in doc["keys"].values():
        public = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(entry["seed_hex"])).public_key()
        assert independent_key_id(public) == entry["key_id"]
        pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")
        assert pem == entry["public_key_pem"]
    assert (
        PUB_PEM.read_text(encoding="ascii")
        == doc["keys"][doc["trusted_at_start"]]["public_key_pem"]
    )


def test_the_golden_chain_covers_every_kind_and_the_contract_cases() -> None:
    records = [json.loads(line) for line in _lines()]
    assert len(records) == len(_golden()["records"])
    assert {r["kind"] for r in records} == KINDS
    assert records[0]["seq"] == 1
    assert records[0]["prev"] == GENESIS
    assert any(r["quality"] == "bad" and "error" in r["data"] for r in records)
    assert any(r["data"].get("backfill") is True for r in records)
    assert any(r["data"].get("epcis") for r in records if r["kind"] == "custody")
    assert {r["data"]["state"] for r in records if r["kind"] == "alarm"} >= {
        "active",
        "acknowledged",
    }
    events = [r["data"]["event"] for r in records if r["kind"] == "audit"]
    assert "key_rotated" in events
    assert len({r["key"] for r in records}) == 2  # signed before and after the rotation
    for record in records:
        assert tuple(record) == FIELDS  # the agent emits CONTRACT's field order


# ========================================================== a. the agent's sealer reproduces it


def _fact(stored: dict[str, Any]) -> Fact:
    return Fact(
        kind=stored["kind"],
        at=parse_time(stored["at"]),
        data=stored["data"],
        zone=stored["zone"],
        device=stored["device"],
        point=stored["point"],
        value=stored["value"],
        unit=stored["unit"],
        quality=stored["quality"],
        src_at=parse_time(stored["src_at"]) if stored["src_at"] else None,
    )


def _seal_golden_facts(per_record: bool) -> list[Row]:
    """The committed facts through the real Sealer: one Sealer per signing key, each continuing
    from the tail, in runs (as the recorder seals a batch) or one record per call."""
    doc = _golden()
    rows: list[Row] = []
    pending: list[Fact] = []
    signer: str | None = None

    def flush() -> None:
        nonlocal pending
        if pending and signer is not None:
            # A Sealer holds no chain state: a fresh one continues from the tail it is given.
            sealer = Sealer(_private(signer), doc["gw"], doc["chain"])
            last_seq, last_hash = (rows[-1].seq, rows[-1].hash) if rows else (0, None)
            rows.extend(sealer.seal(pending, last_seq, last_hash))
        pending = []

    for entry in doc["records"]:
        if entry["signer"] != signer or per_record:
            flush()
            signer = entry["signer"]
        pending.append(_fact(entry["fact"]))
    flush()
    return rows


@pytest.mark.parametrize("per_record", [False, True], ids=["batched", "one-by-one"])
def test_sealer_reproduces_the_golden_records(per_record: bool) -> None:
    rows = _seal_golden_facts(per_record)
    expected = _golden()["records"]
    assert len(rows) == len(expected) == len(_lines())
    for row, entry, line in zip(rows, expected, _lines(), strict=True):
        assert row.seq == entry["seq"]
        assert row.body == line, f"seq {row.seq}: the emitted record differs"
        record = json.loads(row.body)
        assert canonical_bytes(record) == entry["canonical"].encode("utf-8")
        assert row.hash == record["hash"] == entry["hash"]
        assert record["sig"] == entry["sig"]


def test_the_generator_still_writes_the_committed_files() -> None:
    """The builders make.py uses (CustodyBuilder, Transition.data) still give these facts; a
    failure means the vectors are stale: regenerate them on purpose, and review the diff."""
    built = make.build()
    for name, content in built.items():
        assert (HERE / name).read_bytes() == content, f"{name} is stale: see README.md there"


# ==================================================== b. the independent verifier agrees


def test_independent_verifier_accepts_the_golden_chain() -> None:
    hashes = independent_verify(_lines(), _trusted_at_start())
    expected = _golden()["records"]
    assert hashes == [entry["hash"] for entry in expected]
    for line, entry in zip(_lines(), expected, strict=True):
        assert independent_canonical(json.loads(line)) == entry["canonical"].encode("utf-8")
        assert json.loads(line)["sig"] == entry["sig"]


def test_the_agents_verifier_accepts_the_golden_chain() -> None:
    verdict = verify_file(CHAIN_JSONL, [_trusted_at_start()])
    assert verdict.ok, verdict.summary()
    assert (verdict.first_seq, verdict.last_seq) == (1, len(_lines()))


def test_gxpgate_verify_accepts_the_golden_chain() -> None:
    result = CliRunner().invoke(app, ["verify", str(CHAIN_JSONL), "--public-key", str(PUB_PEM)])
    assert result.exit_code == 0, result.output
    assert f"OK: {len(_lines())} record(s)" in result.output


@pytest.fixture
def quality_service(tmp_path: Path) -> Iterator[QualityServiceSimulator]:
    with QualityServiceSimulator(tmp_path / "quality.db", [_trusted_at_start()]) as sim:
        yield sim


def test_the_quality_service_simulator_accepts_the_golden_chain(
    quality_service: QualityServiceSimulator,
) -> None:
    doc, lines = _golden(), _lines()
    # The committed bytes themselves go on the wire, not a re-serialisation of them.
    head = json.dumps({"gw": doc["gw"], "chain": doc["chain"]}, separators=(",", ":"))
    body = head[:-1].encode() + b',"records":[' + b",".join(lines) + b"]}"
    headers = {
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
        "Idempotency-Key": f"{doc['gw']}:{doc['chain']}:1-{len(lines)}",
    }
    # plain HTTP to 127.0.0.1: verify=False only spares loading the CA bundle
    with httpx.Client(base_url=quality_service.url, timeout=5.0, verify=False) as client:
        response = client.post("/v1/evidence", content=gzip.compress(body), headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"acked_through": len(lines)}
    assert quality_service.records(doc["gw"], doc["chain"]) == [json.loads(x) for x in lines]
    report = quality_service.verification_report(doc["gw"], doc["chain"])
    assert report["ok"], report


# ------------------------------------------------------------- formatting is not content


def _reserialised(**options: Any) -> Callable[[list[bytes]], list[bytes]]:
    def apply(lines: list[bytes]) -> list[bytes]:
        return [json.dumps(json.loads(line), **options).encode("utf-8") for line in lines]

    return apply


def _keys_reversed(lines: list[bytes]) -> list[bytes]:
    return [json.dumps(dict(reversed(json.loads(line).items()))).encode("utf-8") for line in lines]


def _integral_floats_as_ints(lines: list[bytes]) -> list[bytes]:
    changed = [line.replace(b'"value":5.0,', b'"value":5,') for line in lines]
    assert changed != lines
    return changed


@pytest.mark.parametrize(
    "reformat",
    [
        _reserialised(),  # spaces after separators, non-ASCII as \u escapes
        _reserialised(separators=(",", ":")),  # compact, as emitted, but with \u escapes
        _keys_reversed,
        _integral_floats_as_ints,
    ],
    ids=["json-defaults", "compact-ascii", "keys-reversed", "5.0-as-5"],
)
def test_any_json_spelling_of_the_same_records_verifies(
    reformat: Callable[[list[bytes]], list[bytes]],
) -> None:
    lines = reformat(_lines())
    assert lines != _lines()
    expected = [entry["hash"] for entry in _golden()["records"]]
    assert independent_verify(lines, _trusted_at_start()) == expected
    verdict = verify_lines(lines, [_trusted_at_start()])
    assert verdict.ok, verdict.summary()


# ---------------------------------------------------------------------------- tampering


Records = list[dict[str, Any]]


@dataclass(frozen=True)
class Tamper:
    name: str
    change: Callable[[Records], Records]
    bad_seq: int
    why: str
    """Part of the independent verifier's reason: the case fails for the reason it is about."""
    agent_rejects: bool = True
    """False where the agent's verifier accepts by design (see the case)."""


def _at(seq: int, change: Callable[[dict[str, Any]], None]) -> Callable[[Records], Records]:
    def apply(records: Records) -> Records:
        change(records[seq - 1])
        return records

    return apply


def _set(seq: int, field: str, value: Any) -> Callable[[Records], Records]:
    return _at(seq, lambda r: r.__setitem__(field, value))


def _set_data(seq: int, field: str, value: Any) -> Callable[[Records], Records]:
    return _at(seq, lambda r: r["data"].__setitem__(field, value))


def _rewritten_from(
    seq: int, change: Callable[[dict[str, Any]], None]
) -> Callable[[Records], Records]:
    """Change a record, then recompute its hash and relink and rehash every later record: all
    a forger without the key can do. The signatures are left as they were."""

    def apply(records: Records) -> Records:
        change(records[seq - 1])
        prev = records[seq - 2]["hash"] if seq > 1 else GENESIS
        for record in records[seq - 1 :]:
            record["prev"] = prev
            record["hash"] = prev = hashlib.sha256(independent_canonical(record)).hexdigest()
        return records

    return apply


def _resealed(
    change: Callable[[Records], Records], start: int, signer: Callable[[int], str]
) -> Callable[[Records], Records]:
    """Apply ``change``, then sign from position ``start`` on with the test keys (``signer``
    of the position, counted from 1 like ``seq``): a validly signed chain that only the
    structural checks can refuse. Each record is relinked to the one before it, except a first
    record, whose ``prev`` is left as ``change`` made it."""

    def apply(records: Records) -> Records:
        records = change(records)
        prev = records[start - 2]["hash"] if start > 1 else GENESIS
        for i in range(start - 1, len(records)):
            record = records[i] if i == 0 else {**records[i], "prev": prev}
            records[i] = independent_seal(record, _private(signer(i + 1)))
            prev = records[i]["hash"]
        return records

    return apply


def _swap(a: int, b: int) -> Callable[[Records], Records]:
    def apply(records: Records) -> Records:
        records[a - 1], records[b - 1] = records[b - 1], records[a - 1]
        return records

    return apply


def _drop(seq: int) -> Callable[[Records], Records]:
    return lambda records: records[: seq - 1] + records[seq:]


def _duplicate(seq: int) -> Callable[[Records], Records]:
    return lambda records: [*records[:seq], dict(records[seq - 1]), *records[seq:]]


def _renumber_from(seq: int) -> Callable[[Records], Records]:
    def apply(records: Records) -> Records:
        for record in records[seq - 1 :]:
            record["seq"] += 1
        return records

    return apply


def _sig_spelling(seq: int, spell: Callable[[str], str]) -> Callable[[Records], Records]:
    def change(record: dict[str, Any]) -> None:
        spelled = spell(record["sig"])
        assert spelled != record["sig"], "the case must change the text"
        record["sig"] = spelled

    return _at(seq, change)


def _pop(seq: int, field: str) -> Callable[[Records], Records]:
    return _at(seq, lambda r: r.pop(field))


_ROTATION_SEQ = 10  # the key_rotated record of the golden chain (asserted below)
_URLSAFE = str.maketrans("+/", "-_")


def _a_then_b(position: int) -> str:
    """The golden chain's signer at a position: key A up to the rotation, then B."""
    return "A" if position <= _ROTATION_SEQ else "B"


def _lines_sig(seq: int) -> str:
    sig: str = json.loads(_lines()[seq - 1])["sig"]
    return sig


def _key_b_id(record: dict[str, Any]) -> None:
    record["key"] = independent_key_id(_private("B").public_key())


TAMPERING = [
    Tamper("value-changed", _set(2, "value", 5.1), 2, "hash does not match"),
    Tamper("quality-bad-made-good", _set(3, "quality", "good"), 3, "hash does not match"),
    Tamper(
        "alarm-comment-edited", _set_data(7, "comment", "Tür geschlossen"), 7, "hash does not match"
    ),
    Tamper(
        "epcis-lot-edited",
        _at(5, lambda r: r["data"]["epcis"].update({"gxp:lot": "X"})),
        5,
        "hash does not match",
    ),
    Tamper("time-moved", _set(6, "at", "2026-11-21T10:00:31.000000Z"), 6, "hash does not match"),
    Tamper(
        "rewritten-without-the-key",
        _rewritten_from(2, lambda r: r.update(value=4.0)),
        2,
        "signature does not verify",
    ),
    Tamper("swapped-order", _swap(5, 6), 6, "expected"),
    Tamper("middle-record-removed", _drop(4), 5, "expected"),
    Tamper("duplicated-record", _duplicate(3), 3, "expected"),
    # The agent's verifier takes the first record's prev on trust (an export may start after
    # pruned records); a check from genesis does not.
    Tamper("genesis-record-removed", _drop(1), 2, "expected", agent_rejects=False),
    Tamper(
        "sig-from-another-record",
        _at(2, lambda r: r.update(sig=_lines_sig(3))),
        2,
        "signature does not verify",
    ),
    Tamper("sig-unpadded", _sig_spelling(2, lambda s: s.rstrip("=")), 2, "not base64"),
    Tamper(
        "sig-url-safe-alphabet", _sig_spelling(1, lambda s: s.translate(_URLSAFE)), 1, "not base64"
    ),
    Tamper(
        "hash-uppercase",
        _at(4, lambda r: r.update(hash=r["hash"].upper())),
        4,
        "hash does not match",
    ),
    # every field but hash and sig is hashed, unknown ones too
    Tamper("unknown-field-added", _set(2, "note", "harmless?"), 2, "hash does not match"),
    Tamper("field-removed", _pop(2, "src_at"), 2, "every field"),
    Tamper("key-id-swapped", _at(2, _key_b_id), 2, "hash does not match"),
    # validly signed with the test keys: only the structural checks can refuse these
    Tamper("resealed-genesis-prev", _resealed(_set(1, "prev", "1" * 64), 1, _a_then_b), 1, "prev"),
    Tamper("resealed-seq-gap", _resealed(_renumber_from(4), 4, _a_then_b), 5, "expected"),
    Tamper("resealed-other-chain", _resealed(_set(3, "chain", "x"), 3, _a_then_b), 3, "chain"),
    Tamper(
        "resealed-unknown-kind", _resealed(_set(3, "kind", "checkpoint"), 3, _a_then_b), 3, "kind"
    ),
    Tamper("resealed-version-2", _resealed(_set(3, "v", 2), 3, _a_then_b), 3, "version"),
    Tamper(
        "resealed-new-key-too-early",
        _resealed(lambda r: r, 2, lambda position: "B"),
        2,
        "not the key in force",
    ),
    # The agent's verifier keeps trusting the old key after a rotation; this one does not
    # (CONTRACT: a rotation is "followed by records signed by the new").
    Tamper(
        "resealed-old-key-after-rotation",
        _resealed(lambda r: r, _ROTATION_SEQ + 1, lambda position: "A"),
        _ROTATION_SEQ + 1,
        "not the key in force",
        agent_rejects=False,
    ),
]


def test_the_rotation_is_where_the_tampering_cases_expect_it() -> None:
    record = json.loads(_lines()[_ROTATION_SEQ - 1])
    assert record["data"]["event"] == "key_rotated"
    assert len(_lines()) > _ROTATION_SEQ


@pytest.mark.parametrize("tamper", TAMPERING, ids=[t.name for t in TAMPERING])
def test_tampering_is_detected(tamper: Tamper) -> None:
    records = tamper.change([json.loads(line) for line in _lines()])
    lines = [json.dumps(r, ensure_ascii=False).encode("utf-8") for r in records]
    assert lines != _reserialised(ensure_ascii=False)(_lines()), "the case changed nothing"
    with pytest.raises(ChainBroken) as broken:
        independent_verify(lines, _trusted_at_start())
    assert broken.value.seq == tamper.bad_seq, broken.value
    assert tamper.why in broken.value.reason, broken.value
    verdict = verify_lines(lines, [_trusted_at_start()])
    if tamper.agent_rejects:
        assert not verdict.ok
        assert verdict.bad_seq == tamper.bad_seq, verdict.summary()


def test_a_truncated_tail_still_verifies() -> None:
    """What a hash chain cannot show: records cut off the end leave a valid shorter chain. The
    quality service's ``acked_through`` is what catches that, not the verifier."""
    lines = _lines()[:-3]
    assert len(independent_verify(lines, _trusted_at_start())) == len(lines)
    assert verify_lines(lines, [_trusted_at_start()]).ok
