"""A real HTTP server that plays the central quality service (CONTRACT.md §3).

The gateway's uplink, the demo and the benchmarks talk to it over 127.0.0.1 exactly as they would
talk to the real service; tests use its inspection methods to see what arrived and its fault
injection to make the network misbehave.

Design:

* **Threads.** ``http.server.ThreadingHTTPServer`` (HTTP/1.1, keep-alive) serves in a background
  thread, one handler thread per connection, so it runs the same under sync tests and beside an
  asyncio program in one process. Every thread it starts is joined by :meth:`stop`.
* **Checking.** Batches are checked with :class:`gxpgate.agent.evidence.ChainVerifier`, resumed per
  (gw, chain) from the last stored ``seq`` and ``hash``; the simulator never hashes or verifies on
  its own. Batches of one chain are processed one at a time (a per-chain lock), different chains
  concurrently.
* **Answers.** A record at or below ``acked_through`` with the stored hash is a harmless duplicate;
  with another hash the batch gets ``409`` (an integrity incident). A batch starting beyond
  ``acked_through + 1`` is not stored and gets ``200`` with the current ``acked_through`` so the
  gateway resends the gap. The first record failing verification ends the batch: the valid prefix
  before it is stored and the answer is ``422 {"error", "seq", "acked_through"}``.
* **Storage.** SQLite in WAL mode, one transaction per batch (one ``executemany``). Each record is
  stored as ``orjson.dumps`` of the parsed record: the same keys in the same order with the same
  values (orjson round-trips floats exactly), byte-identical to what an orjson-based sender put on
  the wire; :meth:`QualityServiceSimulator.records` returns the parsed dicts. Chain cursors,
  verification progress and every public key (configured or learned from a ``key_rotated``
  record) are in the database too, so a restarted or new simulator on the same file knows all it
  stored. Counters in :attr:`QualityServiceSimulator.stats` are per instance, in memory.
* **Deferred signatures.** With ``verify_signatures="deferred"`` hashes, links, ``seq`` and key ids
  are checked before the answer, signatures afterwards by a background thread that works through
  the stored records in ``seq`` order. Ed25519 verification holds the GIL (~200 µs a record here),
  so that thread only runs while no request is in flight and none arrived in the last 20 ms: a
  gateway draining a backlog is measured without the simulator's verification in the way, and
  :meth:`~QualityServiceSimulator.wait_signatures_verified` waits for the catch-up afterwards. A
  signature that fails there is recorded (``first_bad_seq``, an integrity incident); the records
  were already acknowledged, as a service that checks asynchronously would have done.
* **Faults** (:meth:`~QualityServiceSimulator.fail_next`, ``drop_next``, ``set_delay``,
  ``outage``) apply to every request that arrives after the call, whatever its path. A request
  consumes at most one fault; a pending drop is taken before a pending failure. Injected faults
  are counted in ``stats["faults_injected"]``, not in ``rejected_batches``.

The bearer token is compared in constant time and never logged. One debug line per batch.
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import socketserver
import sqlite3
import ssl
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gxpgate.agent.evidence import (
    GENESIS_PREV,
    ChainVerifier,
    RecordInvalid,
    key_id,
    public_key_pem,
    verify_signature,
)

__all__ = ["BatchOutcome", "QualityServiceSimulator"]

logger = logging.getLogger("gxpgate.simulators.quality_service")

EVIDENCE_PATH = "/v1/evidence"
CURSOR_PATH = "/v1/evidence/cursor"
_MAX_BODY_BYTES = 64 * 1024 * 1024  # on the wire and after gunzip
_IDLE_CONNECTION_TIMEOUT_SECS = 30.0
_VERIFY_CHUNK = 32  # records per step of the deferred verifier (~6 ms of Ed25519)
_VERIFY_WHEN_IDLE_SECS = 0.02  # the deferred verifier waits this long after the last request
_SERVE_POLL_SECS = 0.05  # how quickly serve_forever notices shutdown()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chains (
    id               INTEGER PRIMARY KEY,
    gw               TEXT NOT NULL,
    chain            TEXT NOT NULL,
    acked_through    INTEGER NOT NULL,
    last_hash        TEXT NOT NULL,
    verified_through INTEGER NOT NULL,
    first_bad_seq    INTEGER,
    bad_reason       TEXT,
    UNIQUE (gw, chain)
);
CREATE TABLE IF NOT EXISTS records (
    chain_id INTEGER NOT NULL REFERENCES chains (id),
    seq      INTEGER NOT NULL,
    hash     TEXT NOT NULL,
    body     BLOB NOT NULL,
    PRIMARY KEY (chain_id, seq)
);
CREATE TABLE IF NOT EXISTS keys (
    kid TEXT PRIMARY KEY,
    pem TEXT NOT NULL
);
PRAGMA user_version = 1;
"""


@dataclass
class _ChainState:
    id: int
    acked_through: int
    last_hash: str
    verified_through: int
    first_bad_seq: int | None = None
    bad_reason: str | None = None


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    payload: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


def _new_stats() -> dict[str, Any]:
    return {
        "batches": 0,
        "records_received": 0,
        "records_stored": 0,
        "duplicates": 0,
        "rejected_batches": {},
        "integrity_incidents": 0,
        "signatures_verified": 0,
        "faults_injected": 0,
    }


class _Store:
    """Chains, records and keys in SQLite, with the in-memory state that answers quickly.

    Lock order: a chain's lock, then ``_db_lock``, then ``_cond``. ``_cond`` guards the in-memory
    state (chains, keys, stats, request activity) and wakes the deferred verifier and waiters.
    """

    def __init__(self, db_path: Path, keys: Iterable[Ed25519PublicKey], deferred: bool) -> None:
        self.path = db_path
        self.deferred = deferred
        self._cond = threading.Condition()
        self._db_lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._chains: dict[tuple[str, str], _ChainState] = {}
        self._chain_locks: dict[tuple[str, str], threading.Lock] = {}
        self._keys: dict[str, Ed25519PublicKey] = {key_id(k): k for k in keys}
        self.stats = _new_stats()
        self._inflight = 0
        self._last_activity = 0.0
        self._verifier: threading.Thread | None = None
        self._closing = False
        with closing(self._connect()) as db:
            self._load(db)

    # -- lifecycle --------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode not in ("wal", "memory"):
            db.close()
            raise RuntimeError(f"{self.path}: journal_mode is {mode!r}, expected 'wal'")
        db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(_SCHEMA)
        return db

    def _load(self, db: sqlite3.Connection) -> None:
        chains = {
            (gw, chain): _ChainState(cid, acked, last_hash, verified, bad, reason)
            for cid, gw, chain, acked, last_hash, verified, bad, reason in db.execute(
                "SELECT id, gw, chain, acked_through, last_hash, verified_through,"
                " first_bad_seq, bad_reason FROM chains"
            )
        }
        keys = {}
        for kid, pem in db.execute("SELECT kid, pem FROM keys"):
            key = serialization.load_pem_public_key(pem.encode("ascii"))
            if isinstance(key, Ed25519PublicKey):
                keys[kid] = key
        with self._cond:
            self._chains = chains
            self._keys.update(keys)
            own = list(self._keys.items())
        db.executemany(
            "INSERT OR IGNORE INTO keys (kid, pem) VALUES (?, ?)",
            [(kid, public_key_pem(key)) for kid, key in own],
        )

    def open(self) -> None:
        db = self._connect()
        self._load(db)
        with self._db_lock:
            self._db = db
        with self._cond:
            self._closing = False
        self._verifier = threading.Thread(
            target=self._verify_loop, name="quality-sim-verifier", daemon=True
        )
        self._verifier.start()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._verifier is not None:
            self._verifier.join()
            self._verifier = None
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """The live connection (under its lock), or a short-lived one while stopped."""
        with self._db_lock:
            if self._db is not None:
                yield self._db
                return
        with closing(sqlite3.connect(self.path)) as db:
            yield db

    # -- keys, counters, activity -----------------------------------------------------------

    def add_key(self, key: Ed25519PublicKey) -> None:
        kid = key_id(key)
        with self._cond:
            self._keys[kid] = key
            self._cond.notify_all()
        with self._db_lock:
            if self._db is not None:
                self._db.execute(
                    "INSERT OR IGNORE INTO keys (kid, pem) VALUES (?, ?)",
                    (kid, public_key_pem(key)),
                )

    def count(self, **increments: int) -> None:
        with self._cond:
            for name, n in increments.items():
                self.stats[name] += n

    def count_rejected(self, status: int) -> None:
        with self._cond:
            rejected = self.stats["rejected_batches"]
            rejected[status] = rejected.get(status, 0) + 1

    def snapshot_stats(self) -> dict[str, Any]:
        with self._cond:
            return {**self.stats, "rejected_batches": dict(self.stats["rejected_batches"])}

    @contextmanager
    def request(self) -> Iterator[None]:
        """Marks a request in flight; the deferred verifier stays out of its way."""
        with self._cond:
            self._inflight += 1
        try:
            yield
        finally:
            with self._cond:
                self._inflight -= 1
                self._last_activity = time.monotonic()
                self._cond.notify_all()

    # -- inspection -------------------------------------------------------------------------

    def acked_through(self, gw: str, chain: str) -> int:
        with self._cond:
            state = self._chains.get((gw, chain))
            return state.acked_through if state else 0

    def chains(self) -> list[tuple[str, str]]:
        with self._cond:
            return sorted(self._chains)

    def records(self, gw: str, chain: str) -> list[dict[str, Any]]:
        with self._cond:
            state = self._chains.get((gw, chain))
        if state is None:
            return []
        with self._reader() as db:
            rows = db.execute(
                "SELECT body FROM records WHERE chain_id = ? ORDER BY seq", (state.id,)
            ).fetchall()
        return [orjson.loads(body) for (body,) in rows]

    def report(self, gw: str, chain: str) -> dict[str, Any]:
        with self._cond:
            state = self._chains.get((gw, chain))
            if state is None:
                return {
                    "records": 0,
                    "verified_through": 0,
                    "ok": True,
                    "first_bad_seq": None,
                    "reason": None,
                }
            return {
                "records": state.acked_through,
                "verified_through": state.verified_through,
                "ok": state.first_bad_seq is None and state.verified_through == state.acked_through,
                "first_bad_seq": state.first_bad_seq,
                "reason": state.bad_reason,
            }

    def _backlog(self) -> list[_ChainState]:
        return [
            s
            for s in self._chains.values()
            if s.first_bad_seq is None and s.verified_through < s.acked_through
        ]

    def wait_verified(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._backlog(), timeout)

    # -- the batch --------------------------------------------------------------------------

    def _lock_for(self, key: tuple[str, str]) -> threading.Lock:
        with self._cond:
            return self._chain_locks.setdefault(key, threading.Lock())

    def accept(self, gw: str, chain: str, records: list[dict[str, Any]]) -> _Reply:
        """Check and store one batch of consecutive records; the shape is already checked."""
        key = (gw, chain)
        first, last = records[0]["seq"], records[-1]["seq"]
        with self._lock_for(key):
            with self._cond:
                state = self._chains.get(key)
                acked = state.acked_through if state else 0
                last_hash = state.last_hash if state else GENESIS_PREV
                keys = dict(self._keys)
            duplicates = 0
            if state is not None and first <= acked:
                upto = min(last, acked)
                with self._db_lock:
                    stored = self._require_db().execute(
                        "SELECT seq, hash FROM records WHERE chain_id = ? AND seq BETWEEN ? AND ?"
                        " ORDER BY seq",
                        (state.id, first, upto),
                    )
                    stored_hashes = dict(stored.fetchall())
                for record in records[: upto - first + 1]:
                    seq = record["seq"]
                    if record.get("hash") != stored_hashes.get(seq):
                        self.count(integrity_incidents=1)
                        return _Reply(
                            409,
                            {
                                "error": f"seq {seq} is stored with a different hash",
                                "seq": seq,
                                "acked_through": acked,
                            },
                        )
                duplicates = upto - first + 1
                self.count(duplicates=duplicates)
            fresh = records[duplicates:]
            if not fresh or fresh[0]["seq"] > acked + 1:
                return _Reply(200, {"acked_through": acked})  # all duplicates, or a gap

            verifier = ChainVerifier(
                keys=dict(keys),  # the verifier adds rotated-in keys: compare with `keys` after
                chain=chain,
                last_seq=acked,
                last_hash=last_hash,
                check_signatures=not self.deferred,
            )
            failure: RecordInvalid | None = None
            for record in fresh:
                try:
                    verifier.check(record)
                except RecordInvalid as exc:
                    failure = exc
                    break
            good = fresh[: verifier.checked]
            learned = {k: v for k, v in verifier.keys.items() if k not in keys}
            if good:
                self._store(key, state, good, verifier.last_hash, learned)
            now_acked = acked + len(good)
            if failure is not None:
                self.count(integrity_incidents=1)
                return _Reply(
                    422,
                    {
                        "error": failure.reason,
                        "seq": fresh[len(good)]["seq"],
                        "acked_through": now_acked,
                    },
                )
            return _Reply(200, {"acked_through": now_acked})

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the quality-service simulator is not running")
        return self._db

    def _store(
        self,
        key: tuple[str, str],
        state: _ChainState | None,
        good: list[dict[str, Any]],
        last_hash: str,
        learned: Mapping[str, Ed25519PublicKey],
    ) -> None:
        """One transaction: the records, the chain's cursor, any key learned from a rotation."""
        first, last = good[0]["seq"], good[-1]["seq"]
        with self._db_lock:
            db = self._require_db()
            db.execute("BEGIN IMMEDIATE")
            try:
                if state is None:
                    cursor = db.execute(
                        "INSERT INTO chains (gw, chain, acked_through, last_hash, verified_through)"
                        " VALUES (?, ?, 0, ?, 0)",
                        (*key, GENESIS_PREV),
                    )
                    assert cursor.lastrowid is not None
                    chain_id, verified, clean = cursor.lastrowid, 0, True
                else:
                    chain_id = state.id
                    with self._cond:
                        verified, clean = state.verified_through, state.first_bad_seq is None
                if not self.deferred and clean and verified == first - 1:
                    verified = last  # inline: everything stored so far has been verified
                db.executemany(
                    "INSERT INTO records (chain_id, seq, hash, body) VALUES (?, ?, ?, ?)",
                    [(chain_id, r["seq"], r["hash"], orjson.dumps(r)) for r in good],
                )
                db.execute(
                    "UPDATE chains SET acked_through = ?, last_hash = ?, verified_through = ?"
                    " WHERE id = ?",
                    (last, last_hash, verified, chain_id),
                )
                db.executemany(
                    "INSERT OR IGNORE INTO keys (kid, pem) VALUES (?, ?)",
                    [(kid, public_key_pem(k)) for kid, k in learned.items()],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            with self._cond:
                if state is None:
                    self._chains[key] = _ChainState(chain_id, last, last_hash, verified)
                else:
                    state.acked_through = last
                    state.last_hash = last_hash
                    state.verified_through = verified
                self._keys.update(learned)
                self.stats["records_stored"] += len(good)
                if not self.deferred:
                    self.stats["signatures_verified"] += len(good)
                self._cond.notify_all()

    # -- the deferred verifier --------------------------------------------------------------

    def _verify_loop(self) -> None:
        turn = 0
        while True:
            with self._cond:
                while True:
                    if self._closing:
                        return
                    backlog = self._backlog()
                    idle_for = time.monotonic() - self._last_activity
                    if backlog and self._inflight == 0 and idle_for >= _VERIFY_WHEN_IDLE_SECS:
                        break
                    if backlog and self._inflight == 0:
                        self._cond.wait(_VERIFY_WHEN_IDLE_SECS - idle_for)
                    else:
                        self._cond.wait(1.0)
                turn += 1
                state = backlog[turn % len(backlog)]
                start = state.verified_through
            self._verify_chunk(state, start)

    def _verify_chunk(self, state: _ChainState, start: int) -> None:
        with self._db_lock:
            rows = (
                self._require_db()
                .execute(
                    "SELECT seq, body FROM records WHERE chain_id = ? AND seq > ?"
                    " ORDER BY seq LIMIT ?",
                    (state.id, start, _VERIFY_CHUNK),
                )
                .fetchall()
            )
            with self._cond:  # after the read: every key these records may need is learned
                keys = dict(self._keys)
        verified, bad = start, None
        if not rows:  # acked but absent: a damaged database; stop rather than spin
            bad = (start + 1, "acknowledged record missing from the store")
        for seq, body in rows:
            try:
                verify_signature(orjson.loads(body), keys)
            except RecordInvalid as exc:
                bad = (seq, exc.reason)
                break
            verified = seq
        with self._db_lock:
            with self._cond:
                state.verified_through = max(state.verified_through, verified)
                if bad is not None:
                    state.first_bad_seq, state.bad_reason = bad
                    self.stats["integrity_incidents"] += 1
                    logger.warning("deferred verification: seq %d: %s", *bad)
                self.stats["signatures_verified"] += verified - start
                values = (state.verified_through, state.first_bad_seq, state.bad_reason, state.id)
                self._cond.notify_all()
            self._require_db().execute(
                "UPDATE chains SET verified_through = ?, first_bad_seq = ?, bad_reason = ?"
                " WHERE id = ?",
                values,
            )


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Server(ThreadingHTTPServer):
    """One listening generation: tracks its connections so an outage can cut them."""

    daemon_threads = True
    block_on_close = True  # server_close() joins the handler threads
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sim: QualityServiceSimulator) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.sim = sim
        self.closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host name (socket.getfqdn): skip the DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # the client went away: routine
            logger.debug("quality-service simulator: %s disconnected", client_address)
            return
        logger.exception("quality-service simulator: error serving %s", client_address)

    def cut_connections(self) -> None:
        self.closing.set()
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with suppress(OSError):  # already gone
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gxpgate-quality-sim/1"
    timeout = _IDLE_CONNECTION_TIMEOUT_SECS
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    do_PUT = do_DELETE = do_PATCH = do_POST

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one line per batch is logged by the simulator instead

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("quality-service simulator: " + format, *args)

    def _serve(self) -> None:
        sim = self.server.sim
        try:
            body = self._read_body()
        except _BodyError as exc:
            self.close_connection = True
            self._send(_Reply(exc.status, {"error": str(exc)}))
            return
        with sim._store.request():
            fault = sim._take_fault()
            if fault == "drop":
                self.close_connection = True
                return
            delay = sim._delay_secs
            if delay > 0 and self.server.closing.wait(delay):
                self.close_connection = True  # an outage or stop cut this request short
                return
            if isinstance(fault, tuple):
                status, retry_after = fault
                headers = () if retry_after is None else (("Retry-After", f"{retry_after:g}"),)
                reply = _Reply(status, {"error": "injected fault"}, headers)
            else:
                reply = sim._dispatch(self.command, self.path, self.headers, body)
        self._send(reply)

    def _read_body(self) -> bytes:
        encoding = self.headers.get("Transfer-Encoding")
        if encoding is not None:
            if encoding.strip().lower() != "chunked":
                raise _BodyError(501, f"unsupported Transfer-Encoding {encoding!r}")
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            raise _BodyError(400, "invalid Content-Length") from None
        if length < 0:
            raise _BodyError(400, "invalid Content-Length")
        if length > _MAX_BODY_BYTES:
            raise _BodyError(413, f"body over {_MAX_BODY_BYTES} bytes")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BodyError(400, "invalid chunked body") from None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > _MAX_BODY_BYTES:
                raise _BodyError(413, f"body over {_MAX_BODY_BYTES} bytes")
            parts.append(self.rfile.read(size))
            self.rfile.readline(3)

    def _send(self, reply: _Reply) -> None:
        body = orjson.dumps(reply.payload)
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True  # the client (or an outage) closed the connection


def _gunzip(data: bytes) -> bytes:
    """Decompress every gzip member; raise _BodyError on garbage or an oversized result."""
    out: list[bytes] = []
    total = 0
    while data:
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            chunk = d.decompress(data, _MAX_BODY_BYTES + 1 - total)
        except zlib.error as exc:
            raise _BodyError(400, f"invalid gzip body: {exc}") from None
        total += len(chunk)
        if total > _MAX_BODY_BYTES:
            raise _BodyError(413, f"decompressed body over {_MAX_BODY_BYTES} bytes")
        if not d.eof:
            raise _BodyError(400, "truncated gzip body")
        out.append(chunk)
        data = d.unused_data
    return b"".join(out)


def _bad(status: int, error: str, **extra: Any) -> _Reply:
    return _Reply(status, {"error": error, **extra})


def _parse_batch(body: bytes, max_records: int) -> tuple[str, str, list[dict[str, Any]]] | _Reply:
    """The batch's gw, chain and records, or the error reply for a malformed one."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _bad(400, f"body is not JSON: {exc}")
    if not isinstance(doc, dict):
        return _bad(422, "body must be a JSON object")
    gw, chain, records = doc.get("gw"), doc.get("chain"), doc.get("records")
    if not isinstance(gw, str) or not gw or not isinstance(chain, str) or not chain:
        return _bad(422, "gw and chain must be non-empty strings")
    if not isinstance(records, list) or not records:
        return _bad(422, "records must be a non-empty array")
    if len(records) > max_records:
        return _bad(413, f"{len(records)} records in one batch; at most {max_records}")
    expected: int | None = None
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            return _bad(422, f"records[{index}] is not an object")
        seq = record.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            return _bad(422, f"records[{index}]: seq must be a positive integer")
        if expected is not None and seq != expected:
            return _bad(422, f"records must be consecutive: expected seq {expected}", seq=seq)
        if record.get("gw") != gw or record.get("chain") != chain:
            return _bad(422, "record's gw/chain differ from the batch's", seq=seq)
        expected = seq + 1
    return gw, chain, records


class QualityServiceSimulator:
    """The central quality service of CONTRACT §3, in-process, over real HTTP on 127.0.0.1.

    All public methods are thread-safe. ``start()`` returns once the socket listens (connections
    queue until the serving thread picks them up); ``stop()`` closes the listener and every live
    connection and joins every thread it started.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        public_keys: Iterable[Ed25519PublicKey] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        verify_signatures: Literal["inline", "deferred"] = "inline",
        max_body_records: int = 10_000,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if verify_signatures not in ("inline", "deferred"):
            raise ValueError(
                f"verify_signatures must be 'inline' or 'deferred': {verify_signatures!r}"
            )
        if max_body_records < 1:
            raise ValueError("max_body_records must be at least 1")
        self.host = host
        self.port = port
        self.max_body_records = max_body_records
        self._ssl_context = ssl_context
        self._token = None if token is None else f"Bearer {token}".encode()
        self._store = _Store(Path(db_path), public_keys, deferred=verify_signatures == "deferred")
        self._lifecycle = threading.RLock()
        self._running = False
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._outage_timer: threading.Timer | None = None
        self._faults_lock = threading.Lock()
        self._drops = 0
        self._failures: deque[tuple[int, float | None]] = deque()
        self._delay_secs = 0.0

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> QualityServiceSimulator:
        with self._lifecycle:
            if self._running:
                return self
            self._store.open()
            try:
                self._listen()
            except BaseException:
                self._store.close()
                raise
            self._running = True
        return self

    def stop(self) -> None:
        with self._lifecycle:
            timer, self._outage_timer = self._outage_timer, None
        if timer is not None:
            timer.cancel()
            if timer is not threading.current_thread():
                timer.join()
        with self._lifecycle:
            if not self._running:
                return
            self._running = False
            self._unlisten()
            self._store.close()

    def restart(self) -> None:
        """Stop and start again on the same port and database; stored state survives."""
        self.stop()
        self.start()

    def __enter__(self) -> QualityServiceSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _listen(self) -> None:
        server = _Server((self.host, self.port), self)
        self.port = server.server_address[1]
        if self._ssl_context is not None:  # HTTPS, for the gateway's TLS and mTLS tests
            server.socket = self._ssl_context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _SERVE_POLL_SECS},
            name=f"quality-sim-http-{self.port}",
            daemon=True,
        )
        thread.start()
        self._server, self._serve_thread = server, thread

    def _unlisten(self) -> None:
        server, thread = self._server, self._serve_thread
        self._server = self._serve_thread = None
        if server is None or thread is None:
            return
        server.closing.set()
        server.shutdown()  # no more accepts
        thread.join()
        server.cut_connections()
        server.server_close()  # closes the listener, joins the handler threads

    # -- fault injection --------------------------------------------------------------------

    def fail_next(self, status: int, count: int = 1, retry_after: float | None = None) -> None:
        """Answer the next ``count`` requests with ``status`` (and ``Retry-After`` if given).

        ``Retry-After`` is written as a number of seconds; a fractional value (handy in fast
        tests) is written as a decimal, e.g. ``0.2``.
        """
        if not 100 <= status <= 599:
            raise ValueError(f"not an HTTP status: {status}")
        with self._faults_lock:
            self._failures.extend([(status, retry_after)] * count)

    def drop_next(self, count: int = 1) -> None:
        """Read each of the next ``count`` requests, then close its connection unanswered."""
        with self._faults_lock:
            self._drops += count

    def set_delay(self, seconds: float) -> None:
        """Wait ``seconds`` after reading each request before handling it (0 turns it off)."""
        self._delay_secs = max(0.0, float(seconds))

    def outage(self, seconds: float) -> None:
        """Close the listener and live connections now; listen again on the same port later."""
        with self._lifecycle:
            self.outage_start()
            timer = threading.Timer(seconds, self.outage_end)
            timer.name = "quality-sim-outage"
            timer.daemon = True
            self._outage_timer = timer
            timer.start()

    def outage_start(self) -> None:
        with self._lifecycle:
            if not self._running:
                raise RuntimeError("the quality-service simulator is not running")
            if self._outage_timer is not None:
                self._outage_timer.cancel()
                self._outage_timer = None
            self._unlisten()

    def outage_end(self) -> None:
        with self._lifecycle:
            if (
                self._outage_timer is not None
                and self._outage_timer is not threading.current_thread()
            ):
                self._outage_timer.cancel()
            self._outage_timer = None
            if self._running and self._server is None:
                self._listen()

    def _take_fault(self) -> Literal["drop"] | tuple[int, float | None] | None:
        with self._faults_lock:
            if self._drops:
                self._drops -= 1
                fault: Literal["drop"] | tuple[int, float | None] | None = "drop"
            elif self._failures:
                fault = self._failures.popleft()
            else:
                return None
        self._store.count(faults_injected=1)
        return fault

    # -- keys and inspection ----------------------------------------------------------------

    def add_public_key(self, key: Ed25519PublicKey) -> None:
        self._store.add_key(key)

    def acked_through(self, gw: str, chain: str) -> int:
        return self._store.acked_through(gw, chain)

    def records(self, gw: str, chain: str) -> list[dict[str, Any]]:
        """Stored records in ``seq`` order, parsed from the stored JSON."""
        return self._store.records(gw, chain)

    def chains(self) -> list[tuple[str, str]]:
        return self._store.chains()

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters; ``rejected_batches`` maps HTTP status to count."""
        return self._store.snapshot_stats()

    def verification_report(self, gw: str, chain: str) -> dict[str, Any]:
        """``ok`` is true once every stored record's signature has verified and none failed."""
        return self._store.report(gw, chain)

    def wait_signatures_verified(self, timeout: float) -> bool:
        """Block until every chain is verified through its last record or stopped at a bad one."""
        return self._store.wait_verified(timeout)

    # -- requests ---------------------------------------------------------------------------

    def _authorised(self, headers: Message) -> bool:
        if self._token is None:
            return True
        given = headers.get("Authorization", "").encode("latin-1", "replace")
        return hmac.compare_digest(given, self._token)

    def _dispatch(self, method: str, target: str, headers: Message, body: bytes) -> _Reply:
        url = urlsplit(target)
        if url.path == EVIDENCE_PATH:
            if method != "POST":
                return _Reply(405, {"error": "use POST"}, (("Allow", "POST"),))
            return self._post_evidence(headers, body)
        if url.path == CURSOR_PATH:
            if method != "GET":
                return _Reply(405, {"error": "use GET"}, (("Allow", "GET"),))
            if not self._authorised(headers):
                return _Reply(401, {"error": "unauthorised"}, (("WWW-Authenticate", "Bearer"),))
            query = parse_qs(url.query)
            gw, chain = query.get("gw", [""])[0], query.get("chain", [""])[0]
            if not gw or not chain:
                return _bad(400, "gw and chain query parameters are required")
            return _Reply(200, {"acked_through": self._store.acked_through(gw, chain)})
        return _bad(404, f"no such resource: {url.path}")

    def _post_evidence(self, headers: Message, body: bytes) -> _Reply:
        store = self._store
        store.count(batches=1)
        checked = self._check_evidence(headers, body)
        if isinstance(checked, _Reply):
            reply = checked
        else:
            gw, chain, records = checked
            store.count(records_received=len(records))
            reply = store.accept(gw, chain, records)
            logger.debug(
                "batch gw=%s chain=%s seq=%d-%d -> %d %s",
                gw,
                chain,
                records[0]["seq"],
                records[-1]["seq"],
                reply.status,
                reply.payload,
            )
        if reply.status != 200:
            store.count_rejected(reply.status)
        return reply

    def _check_evidence(
        self, headers: Message, body: bytes
    ) -> _Reply | tuple[str, str, list[dict[str, Any]]]:
        """The batch, or the reply refusing it (auth, encoding, shape, Idempotency-Key)."""
        if not self._authorised(headers):
            return _Reply(401, {"error": "unauthorised"}, (("WWW-Authenticate", "Bearer"),))
        encoding = headers.get("Content-Encoding", "identity").strip().lower()
        if encoding == "gzip":
            try:
                body = _gunzip(body)
            except _BodyError as exc:
                return _bad(exc.status, str(exc))
        elif encoding != "identity":
            return _bad(415, f"unsupported Content-Encoding {encoding!r}")
        parsed = _parse_batch(body, self.max_body_records)
        if isinstance(parsed, _Reply):
            return parsed
        gw, chain, records = parsed
        expected = f"{gw}:{chain}:{records[0]['seq']}-{records[-1]['seq']}"
        given = headers.get("Idempotency-Key")
        if given != expected:
            return _bad(422, f"Idempotency-Key must be {expected!r}, got {given!r}")
        return parsed

    def accept_batch(self, payload: bytes) -> BatchOutcome:
        """Check and store one batch that arrived without HTTP, e.g. over MQTT (CONTRACT §4):
        gzipped or plain JSON, the same checks, storage and counters as ``POST /v1/evidence``,
        without the HTTP headers. Thread-safe; the simulator must be running."""
        store = self._store
        with store.request():
            store.count(batches=1)
            try:
                body = _gunzip(payload) if payload[:2] == b"\x1f\x8b" else payload
            except _BodyError as exc:
                reply: _Reply | tuple[str, str, list[dict[str, Any]]] = _bad(exc.status, str(exc))
            else:
                reply = _parse_batch(body, self.max_body_records)
            if isinstance(reply, _Reply):
                store.count_rejected(reply.status)
                return BatchOutcome(reply.status, reply.payload)
            gw, chain, records = reply
            store.count(records_received=len(records))
            answer = store.accept(gw, chain, records)
        if answer.status != 200:
            store.count_rejected(answer.status)
        first, last = records[0]["seq"], records[-1]["seq"]
        return BatchOutcome(answer.status, answer.payload, gw, chain, first, last)


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What :meth:`QualityServiceSimulator.accept_batch` made of a batch: the HTTP status and
    answer the endpoint would have given, and which records the batch held (when parsable)."""

    status: int
    answer: dict[str, Any]
    gw: str | None = None
    chain: str | None = None
    first_seq: int = 0
    last_seq: int = 0
