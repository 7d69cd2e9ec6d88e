"""The SQLite outbox: every sealed record, durable before it counts, until the service has it.

Invariants
    * ``seq`` runs 1, 2, 3… without gaps; :meth:`Outbox.append` refuses anything that does not
      continue the tail. The agent's sealer is the only writer of records.
    * A record is kept once :meth:`Outbox.append` returns: the transaction is committed with
      ``synchronous=FULL`` in WAL mode, i.e. the WAL is fsync'd before the commit returns.
    * Nothing leaves before the service acknowledges it: records with ``seq`` above the cursor
      (``acked_through``, the service's word) are never deleted.
    * The newest record is never deleted, so the chain can always be continued after a restart.

Schema
    ``meta(key, value)``: ``schema_version``, ``chain`` (UUID4 minted with the file), ``gw``,
    ``created_at``, ``acked_through``.
    ``records(seq PRIMARY KEY, at, kind, hash, body, src, zone, …, sig)`` (schema 4): each
    record packed into columns, ``prev`` derived from the row before, names in
    ``names(id, name)`` (:mod:`gxpgate.buffer.packing`); every read (export, the forwarder's
    batches, replays) rebuilds the exact bytes that were sealed, checked when the row was
    written. ``meta.hash_before_first`` is the ``prev`` of the oldest record once older ones
    are pruned.
    ``acks(through PRIMARY KEY, acked_at)``: when the cursor first reached ``through``, so
    retention counts from delivery, not from acquisition.
    ``state(key PRIMARY KEY, value)`` (schema 2): resume points of sources, e.g. the last data
    logger record index kept, written in the same transaction as the records they cover, so
    that after a crash a source resumes exactly after what is stored: no hole, no duplicate.
    Schema 1 files gain the table when opened (a one-way migration).
    Schema 3: triggers refuse any ``acked_through`` that is not a plain non-negative integer, so
    no answer, however malformed, can be stored as the cursor. A schema 2 file gains them when
    opened; a cursor an older version stored corrupt (e.g. ``True``) is reset to 0 then, which
    only offers delivered records again (the service ignores what it holds), and is reported in
    :attr:`Outbox.repairs`.
    Schema 4: records packed (above); earlier files are packed when opened, in one
    transaction, and the figures kept for the agent to seal (:attr:`Outbox.migrated`).

PRAGMAs (read back and checked at open)
    ``journal_mode=WAL`` (the forwarder reads while the sealer writes), ``synchronous=FULL``
    (durability per commit), ``busy_timeout=5000``.

When full
    The buffer does not delete undelivered records to make room: deleting one would leave a
    hole in the chain that the quality service could never get past. A *reserve* file beside
    the database (``buffer.db.reserve``, ``reserve_mb``) holds space back: the first write (or
    open: WAL mode must create its ``-shm`` file) that fails gives it back to the filesystem and
    is tried once more, so the gateway goes on sealing, and can start, on a disk that someone
    else filled; :attr:`Outbox.disk_full` says so until :meth:`Outbox.restore_reserve` finds
    room for the reserve again. Once the reserve is gone too, :meth:`Outbox.append` raises
    :class:`BufferWriteError`; the caller keeps the records and retries.
    The quota is the agent's policy (agent/health/capacity.py): :meth:`Outbox.used_bytes`
    measures against it, and :meth:`Outbox.prune` with a zero retention frees what the service
    already holds.

The witness
    ``buffer.db.witness`` (written by the agent after every commit, without an fsync of its
    own) says which chain the file holds and the last ``seq`` committed to it. A file that
    holds less than its witness says (a lost or damaged ``-wal``, an emptied or replaced
    ``buffer.db``) is refused with :class:`BufferCorrupt`, never started over: minting a new
    chain over one that held records would hide them. The witness is only ever behind the
    database (it is written after the commit returns), so a crash or power loss can make it
    lag, never lead. ``gxpgate buffer reset`` moves damaged files aside and leaves the witness
    naming the chain they held, which the next chain's first records cite.

What it does not promise
    Protection against a deliberately edited file: that is what the hash chain is for, and the
    agent verifies the tail's hashes and signature when it opens the buffer.

Exceptions::

    OutboxError
    ├── BufferCorrupt       the file is damaged or is not a gxpgate buffer; never started over
    ├── BufferMismatch      the file belongs to another gateway id
    └── BufferWriteError    a write failed (disk full, I/O error); nothing was committed
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gxpgate.buffer import packing
from gxpgate.buffer.packing import Names

__all__ = [
    "MIGRATION_KEY",
    "BufferCorrupt",
    "BufferMismatch",
    "BufferStatus",
    "BufferWriteError",
    "Outbox",
    "OutboxError",
    "Row",
    "read_witness",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4
MIGRATION_KEY = "buffer:migrated"
"""``state`` entry of the last schema migration: its figures as JSON until sealed, then
``sealed``."""
_BEFORE_FIRST = "hash_before_first"
_CURSOR_GUARDS = tuple(
    f"""CREATE TRIGGER IF NOT EXISTS cursor_is_a_seq_{event.lower()} BEFORE {event} ON meta
    WHEN NEW.key = 'acked_through' AND (NEW.value = '' OR NEW.value GLOB '*[^0-9]*'
        OR length(NEW.value) > 18)
    BEGIN SELECT RAISE(ABORT, 'acked_through must be a non-negative integer'); END"""
    for event in ("INSERT", "UPDATE")
)
_PRAGMAS = {"journal_mode": "wal", "synchronous": 2, "busy_timeout": 5000}


class OutboxError(Exception):
    """Base of the buffer's errors."""


class BufferCorrupt(OutboxError):
    """The database is damaged or not a gxpgate buffer."""


class BufferMismatch(OutboxError):
    """The database belongs to another gateway."""


class BufferWriteError(OutboxError):
    """A write failed; the transaction was rolled back."""


_WITNESS_BYTES = 256
_INSERT = (
    f"INSERT INTO records({', '.join(packing.COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(packing.COLUMNS))})"
)
_WAY_FORWARD = (
    "Restore the buffer from a backup; or, to keep the damaged files for investigation and "
    "start a new chain that cites this one: gxpgate buffer reset --config FILE --yes"
)


def _claimed_prev(body: bytes) -> str | None:
    """The ``prev`` a stored body names, if it is a record that names one."""
    try:
        record = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    prev = record.get("prev") if isinstance(record, dict) else None
    return prev if isinstance(prev, str) else None


def read_witness(path: Path) -> dict[str, Any] | None:
    """The witness beside a buffer (see the module docstring); None when there is none. A
    witness that does not parse is damaged itself: that is said, not ignored."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BufferCorrupt(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if not raw.strip():
        return None  # created, never written: no commit was ever counted
    try:
        found = orjson.loads(raw.strip())
        if not isinstance(found, dict):
            raise ValueError("not an object")
        if found.get("chain") is not None:
            int(found["last_seq"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BufferCorrupt(
            f"{path}: damaged ({exc}); it says which chain the buffer held: move it aside only "
            "if you know the buffer beside it is the right one"
        ) from None
    return found


@dataclass(frozen=True, slots=True)
class Row:
    """A sealed record as the outbox stores it."""

    seq: int
    at: str
    kind: str
    hash: str
    body: bytes
    record: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    """The record ``body`` serialises, when the sealer has it at hand: spares parsing the
    body again to pack it (the packed row is still checked against ``body``)."""


@dataclass(frozen=True, slots=True)
class BufferStatus:
    chain: str
    gw: str
    records: int
    last_seq: int
    acked_through: int
    pending: int
    oldest_pending_at: str | None
    disk_bytes: int
    quota_bytes: int


class Outbox:
    """One gateway's chain in one SQLite file. Thread-safe; one writer connection, one reader."""

    def __init__(
        self,
        path: Path,
        gw: str,
        *,
        quota_mb: float = 2048,
        reserve_mb: float = 0,
        witness: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        """``witness``: keep the witness file up to date (the agent, the single writer);
        every opener checks it. ``progress``: told, besides the log, how a long step on opening
        (a schema migration) goes, for a command whose user sees no log."""
        self.path = path
        self._progress = progress
        self.witness_path = path.with_name(path.name + ".witness")
        self.predecessor: dict[str, object] | None = None
        """The chain a ``gxpgate buffer reset`` set aside, when this file's chain followed it."""
        self._witness_fd: int | None = None
        self.quota_bytes = int(quota_mb * 1024 * 1024)
        self.reserve_path = path.with_name(path.name + ".reserve")
        self.reserve_bytes = int(reserve_mb * 1024 * 1024)
        self.disk_full = False
        """The reserve had to be given back (or could not be made): the disk is full or
        nearly so. Cleared by :meth:`restore_reserve`."""
        self.migrated: dict[str, int] | None = None
        """A schema migration not yet sealed (``from_schema``, ``to_schema``, ``records``,
        ``kept_whole``): the agent seals it with the state ``{MIGRATION_KEY: "sealed"}`` in
        the same transaction, so it is sealed once, whoever opened the file first."""
        self.repairs: list[str] = []
        """What opening repaired (a corrupt cursor reset); the agent seals each."""
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        known = read_witness(self.witness_path)
        if known is not None and known.get("chain") is not None:
            size = path.stat().st_size if path.exists() else None
            if not size:  # refused before SQLite writes a header into it
                raise BufferCorrupt(
                    f"{path}: holds no chain ({'missing' if size is None else 'empty'}), but "
                    f"chain {known['chain']} held records through seq {known['last_seq']} in "
                    f"it: the file was emptied or replaced. {_WAY_FORWARD}"
                )
        try:
            self._db = self._connect()
        except BufferWriteError:
            if not self._release_reserve():
                raise
            self._db = self._connect()  # the open failed for want of space, not for damage
        try:
            self._init_or_check(gw, known)
        except OutboxError:
            self._db.close()
            raise
        self._reader = self._connect()
        if witness:
            self._open_witness()
        if not self.disk_full:
            self.restore_reserve()

    # -- opening -----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            for name, value in _PRAGMAS.items():
                conn.execute(f"PRAGMA {name}={value}")
            for name, value in _PRAGMAS.items():
                actual = conn.execute(f"PRAGMA {name}").fetchone()[0]
                if str(actual).lower() != str(value):
                    raise BufferCorrupt(f"{self.path}: PRAGMA {name} is {actual}, expected {value}")
        except sqlite3.DatabaseError as exc:
            free = shutil.disk_usage(self.path.parent).free
            if free < 1024 * 1024:
                raise BufferWriteError(
                    f"{self.path}: cannot open: its filesystem is full ({free} bytes free): {exc}"
                ) from None
            raise BufferCorrupt(f"{self.path}: cannot open as SQLite: {exc}") from None
        return conn

    def _init_or_check(self, gw: str, witness: Mapping[str, Any] | None) -> None:
        held = witness is not None and witness.get("chain") is not None
        try:
            tables = self._table_names()
            if not tables:
                if held:
                    assert witness is not None
                    raise BufferCorrupt(
                        f"{self.path}: holds no chain, but chain {witness['chain']} held records "
                        f"through seq {witness['last_seq']} in it: the file was emptied or "
                        f"replaced. {_WAY_FORWARD}"
                    )
                if witness is not None:
                    self.predecessor = witness.get("replaced")
                self._create(gw)
            elif not {"meta", "records", "acks"} <= tables:
                raise BufferCorrupt(f"{self.path}: not a gxpgate buffer (tables: {sorted(tables)})")
            problems = [r[0] for r in self._db.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as exc:
            raise BufferCorrupt(f"{self.path}: damaged database: {exc}") from None
        if problems != ["ok"]:
            raise BufferCorrupt(f"{self.path}: integrity check failed: {'; '.join(problems[:3])}")
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        for key in ("schema_version", "chain", "gw", "acked_through"):
            if key not in meta:
                raise BufferCorrupt(f"{self.path}: meta lacks {key!r}")
        version = int(meta["schema_version"]) if str(meta["schema_version"]).isdigit() else -1
        if not 1 <= version <= SCHEMA_VERSION:
            raise BufferCorrupt(f"{self.path}: schema version {meta['schema_version']} unknown")
        if meta["gw"] != gw:
            raise BufferMismatch(
                f"{self.path}: buffer belongs to gateway {meta['gw']!r}, not {gw!r}; "
                "a gateway id is part of every record, so one buffer serves one id"
            )
        self.chain: str = meta["chain"]
        self.gw = gw
        self._head = packing.head(gw, self.chain)
        if version == 1:
            self._migrate_to_2()
        if version in (1, 2):
            self._migrate_to_3(meta["acked_through"])
        if version in (1, 2, 3):
            self._migrate_to_4(version)
        elif "names" not in self._table_names():
            raise BufferCorrupt(f"{self.path}: schema 4 without its names table")
        self._names = Names(self._db.execute("SELECT id, name FROM names"))
        note = self._db.execute("SELECT value FROM state WHERE key = ?", (MIGRATION_KEY,))
        text = (note.fetchone() or ("",))[0]
        if text.startswith("{"):
            self.migrated = orjson.loads(text)
        self._check_sequence()
        if held:
            assert witness is not None
            if witness["chain"] != self.chain:
                raise BufferCorrupt(
                    f"{self.path}: holds chain {self.chain}, but chain {witness['chain']} held "
                    f"records through seq {witness['last_seq']} in it: the file was replaced. "
                    f"{_WAY_FORWARD}"
                )
            if self.last_seq < int(witness["last_seq"]):
                raise BufferCorrupt(
                    f"{self.path}: ends at seq {self.last_seq}, but records through seq "
                    f"{witness['last_seq']} were committed to it: its write-ahead log "
                    f"({self.path.name}-wal) was lost or damaged. {_WAY_FORWARD}"
                )

    def _table_names(self) -> set[str]:
        rows = self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows}

    def _create(self, gw: str) -> None:
        # sqlite-utils only where a file is created or migrated: an agent opening its buffer
        # does not load it (with pluggy and dateutil, 2.2 MiB of RSS).
        import sqlite_utils

        db = sqlite_utils.Database(self._db)
        with db.atomic():
            db.table("meta").create({"key": str, "value": str}, pk="key")
            db.execute(packing.CREATE_RECORDS)
            db.execute(packing.CREATE_NAMES)
            db.table("acks").create({"through": int, "acked_at": float}, pk="through")
            db.table("state").create({"key": str, "value": str}, pk="key", not_null={"value"})
            for guard in _CURSOR_GUARDS:
                db.execute(guard)
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            db.table("meta").insert_all(
                {"key": key, "value": value}
                for key, value in (
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("chain", str(uuid.uuid4())),
                    ("gw", gw),
                    ("created_at", now),
                    ("acked_through", "0"),
                )
            )

    def _migrate_to_2(self) -> None:
        import sqlite_utils

        db = sqlite_utils.Database(self._db)
        try:
            with db.atomic():
                db.table("state").create({"key": str, "value": str}, pk="key", not_null={"value"})
                db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        except sqlite3.Error as exc:
            raise BufferWriteError(f"{self.path}: migration to schema 2 failed: {exc}") from exc

    def _migrate_to_3(self, cursor: str) -> None:
        valid = cursor.isascii() and cursor.isdigit() and len(cursor) <= 18
        try:
            self._db.execute("BEGIN IMMEDIATE")
            if not valid:
                self._db.execute("UPDATE meta SET value = '0' WHERE key = 'acked_through'")
            for guard in _CURSOR_GUARDS:
                self._db.execute(guard)
            self._db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise BufferWriteError(f"{self.path}: migration to schema 3 failed: {exc}") from exc
        if not valid:
            self.repairs.append(
                f"the delivery cursor held {cursor[:40]!r}, not a sequence number; reset to 0 "
                "(records the service holds are offered again and ignored by it)"
            )

    def _migrate_to_4(self, from_schema: int) -> None:
        """Records from a whole body per row to packed columns (:mod:`.packing`), in one
        transaction: a failure leaves the file as it was (on a full disk, the reserve is given
        back first, as for any write). Every record is checked to rebuild byte for byte, or
        kept whole. What was done is kept in ``state`` until the agent has sealed it
        (:attr:`migrated`), whoever opened the file first."""
        names = self._names = Names()
        started = time.monotonic()
        (total,) = self._db.execute("SELECT count(*) FROM records").fetchone()
        self._say(f"buffer.migrating path={self.path} schema=4 records={total}")
        note: dict[str, int] = {}

        name_json = names.lookup(self._db, provisional=True)

        def write() -> None:
            names.forget()  # a second attempt starts over
            count = whole = 0
            self._db.execute("ALTER TABLE records RENAME TO records_v3")
            self._db.execute(packing.CREATE_RECORDS)
            self._db.execute(packing.CREATE_NAMES)
            old = self._db.execute("SELECT seq, at, kind, hash, body FROM records_v3 ORDER BY seq")
            prev: str | None = None
            while chunk := old.fetchmany(5000):
                if prev is None:  # the oldest held: its own word for what came before
                    prev = _claimed_prev(chunk[0][4])
                    if chunk[0][0] > 1 and prev is not None:
                        self._db.execute(
                            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                            (_BEFORE_FIRST, prev),
                        )
                values = []
                for seq, at, kind, digest, body in chunk:
                    row = Row(seq, at, kind, digest, bytes(body))
                    values.append(self._stored(row, prev or "", name_json))
                    prev = digest
                whole += sum(1 for v in values if v[4] is not None)
                self._db.executemany(_INSERT, values)
                count += len(values)
                if count % 100_000 < len(values):
                    self._say(f"buffer.migrating records={count} of {total}")
            self._db.executemany("INSERT INTO names(id, name) VALUES (?, ?)", names.new())
            self._db.execute("DROP TABLE records_v3")
            note.update(from_schema=from_schema, to_schema=4, records=count, kept_whole=whole)
            self._db.execute(
                "INSERT OR REPLACE INTO state(key, value) VALUES (?, ?)",
                (MIGRATION_KEY, orjson.dumps(note).decode()),
            )
            self._db.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")

        try:
            self._transaction(write, "migration to schema 4")
        except BufferWriteError:
            names.forget()
            raise
        names.commit()
        self._say(
            f"buffer.migrated records={note['records']} kept_whole={note['kept_whole']} "
            f"secs={time.monotonic() - started:.1f}"
        )

    def _say(self, text: str) -> None:
        log.info("%s", text)
        if self._progress is not None:
            self._progress(text)

    def _check_sequence(self) -> None:
        first, last, count = self._db.execute(
            "SELECT min(seq), max(seq), count(*) FROM records"
        ).fetchone()
        if count and (first < 1 or last - first + 1 != count):
            raise BufferCorrupt(
                f"{self.path}: seq {first}..{last} holds {count} records: the chain has a gap"
            )
        self.last_seq: int = last or 0
        row = self._db.execute(
            "SELECT hash FROM records WHERE seq = ?", (self.last_seq,)
        ).fetchone()
        self.last_hash: str | None = packing.hex_of(row[0]) if row else None

    # -- the sealer's side -------------------------------------------------------------------

    def tail(self, count: int = 2) -> list[bytes]:
        """Bodies of the newest ``count`` records, oldest first (for the agent's tail check)."""
        rows = self._read(f"{packing.SELECT} ORDER BY r.seq DESC LIMIT ?", (count,))
        return [body for _, _, body in reversed(rows)]

    def _stored(self, row: Row, prev: str, name_json: Callable[[int], bytes]) -> tuple[Any, ...]:
        """The row to insert for ``row``: packed when it comes back byte for byte (checked
        here, every time), whole otherwise. ``name_json``: the writer's
        ``Names.lookup(provisional=True)``."""
        names = self._names
        packed = packing.pack(row.seq, row.body, names, self.gw, self.chain, row.record)
        if packed is not None and packing.hex_of(packed[3]) == row.hash:
            try:
                rebuilt = packing.unpack(packed, prev, name_json, self._head)
            except packing.Unpackable:
                rebuilt = b""
            if rebuilt == row.body:
                return packed
        return packing.whole(row.seq, row.at, row.kind, row.hash, row.body, names)

    def append(self, rows: Sequence[Row], state: Mapping[str, str | None] | None = None) -> None:
        """Commit ``rows`` durably in one transaction; they must continue the chain exactly.
        ``state`` entries (key → value) are written in the same transaction (also alone: a
        checkpoint of state derived from records already stored); a value of None deletes the
        key."""
        if not rows and not state:
            return
        with self._write_lock:
            expected = self.last_seq + 1
            for offset, row in enumerate(rows):
                if row.seq != expected + offset:
                    raise ValueError(f"seq {row.seq} does not continue the chain at {expected}")
            values = []
            prev = self.last_hash or packing.GENESIS.hex()
            name_json = self._names.lookup(self._db, provisional=True)
            for row in rows:
                values.append(self._stored(row, prev, name_json))
                prev = row.hash
            names = self._names.new()

            def write() -> None:
                if names:
                    self._db.executemany("INSERT INTO names(id, name) VALUES (?, ?)", names)
                self._db.executemany(_INSERT, values)
                if state:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO state(key, value) VALUES (?, ?)",
                        [(k, v) for k, v in state.items() if v is not None],
                    )
                    self._db.executemany(
                        "DELETE FROM state WHERE key = ?",
                        [(k,) for k, v in state.items() if v is None],
                    )

            try:
                self._transaction(write, "write")
            except BufferWriteError:
                self._names.forget()
                raise
            self._names.commit()
            if rows:
                self.last_seq = rows[-1].seq
                self.last_hash = rows[-1].hash
                self._write_witness()

    def _read(self, query: str, params: Sequence[Any]) -> list[tuple[int, str, bytes]]:
        """``(seq, hash, body)`` of the rows ``query`` (a :data:`packing.SELECT`) selects,
        through the reader connection."""
        with self._read_lock:
            return list(self._bodies(self._reader.execute(query, params), self._reader))

    def _bodies(
        self, rows: Iterable[tuple[Any, ...]], conn: sqlite3.Connection
    ) -> Iterator[tuple[int, str, bytes]]:
        def before_first() -> str | None:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (_BEFORE_FIRST,)).fetchone()
            return None if row is None else str(row[0])

        return packing.bodies(rows, self._names.lookup(conn), self._head, before_first)

    def sample(self, count: int) -> list[tuple[int, str, bytes]]:
        """Up to ``count`` records at random: ``(seq, hash, body)``. Index lookups only, so
        it costs the same for a thousand records held as for a million."""
        first, last = self.first_seq, self.last_seq
        if not first:
            return []
        seqs = random.sample(range(first, last + 1), min(count, last - first + 1))
        marks = ",".join("?" * len(seqs))
        return self._read(f"{packing.SELECT} WHERE r.seq IN ({marks})", seqs)

    def state(self, key: str) -> str | None:
        """The value last committed for ``key`` with :meth:`append`, if any."""
        with self._read_lock:
            row = self._reader.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def states(self, prefix: str) -> dict[str, str]:
        """Every committed state entry whose key starts with ``prefix``."""
        upper = prefix + "\U0010ffff"
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT key, value FROM state WHERE key >= ? AND key < ?", (prefix, upper)
            ).fetchall()
        return dict(rows)

    # -- the forwarder's side ----------------------------------------------------------------

    @property
    def acked_through(self) -> int:
        with self._read_lock:
            row = self._reader.execute(
                "SELECT value FROM meta WHERE key='acked_through'"
            ).fetchone()
        return int(row[0])

    @property
    def first_seq(self) -> int:
        """The oldest record still held (0: none); an index lookup, cheap to ask often."""
        with self._read_lock:
            row = self._reader.execute("SELECT min(seq) FROM records").fetchone()
        return int(row[0] or 0)

    def pending(
        self, after_seq: int, limit: int, kind: str | None = None
    ) -> list[tuple[int, bytes]]:
        """Up to ``limit`` records with ``seq > after_seq``, ascending; with ``kind``, only
        records of that kind (read from the stored column, not sniffed from the bodies)."""
        if kind is None:
            rows = self._read(
                f"{packing.SELECT} WHERE r.seq > ? ORDER BY r.seq LIMIT ?", (after_seq, limit)
            )
        else:
            rows = self._read(
                f"{packing.SELECT} WHERE r.seq > ? AND r.kind = ? ORDER BY r.seq LIMIT ?",
                (after_seq, self._kind_id(kind), limit),
            )
        return [(seq, body) for seq, _, body in rows]

    def newest(self, kind: str, limit: int) -> list[tuple[int, bytes]]:
        """The newest ``limit`` records of ``kind`` still held, newest first."""
        rows = self._read(
            f"{packing.SELECT} WHERE r.kind = ? ORDER BY r.seq DESC LIMIT ?",
            (self._kind_id(kind), limit),
        )
        return [(seq, body) for seq, _, body in rows]

    def _kind_id(self, kind: str) -> int:
        with self._read_lock:
            row = self._reader.execute("SELECT id FROM names WHERE name = ?", (kind,)).fetchone()
        return -1 if row is None else int(row[0])  # -1: no such name, so no such row

    def set_acked_through(self, through: int, now: float | None = None) -> None:
        """Move the cursor to the service's ``acked_through``, also backwards (service restored)."""
        if type(through) is not int or through < 0:  # bool is an int; True is not a seq
            raise ValueError(f"acked_through must be a non-negative int, not {through!r}")
        through = min(through, self.last_seq)
        now = time.time() if now is None else now

        def write() -> None:
            self._db.execute(
                "UPDATE meta SET value = ? WHERE key = 'acked_through'", (str(through),)
            )
            self._db.execute(
                "INSERT OR IGNORE INTO acks(through, acked_at) VALUES (?, ?)", (through, now)
            )

        with self._write_lock:
            self._transaction(write, "cursor update")

    def prune(self, retention_secs: float, now: float | None = None) -> int:
        """Delete records delivered more than ``retention_secs`` ago; return how many."""
        now = time.time() if now is None else now
        with self._write_lock:
            (through,) = self._db.execute(
                "SELECT max(through) FROM acks WHERE acked_at <= ?", (now - retention_secs,)
            ).fetchone()
            if not through:
                return 0
            (cursor,) = self._db.execute(
                "SELECT CAST(value AS INTEGER) FROM meta WHERE key='acked_through'"
            ).fetchone()
            limit = min(through, cursor, self.last_seq - 1)
            deleted = 0

            def write() -> None:
                nonlocal deleted
                # The oldest record kept names its predecessor in ``prev``: keep that hash.
                query = "SELECT hash FROM records WHERE seq = ?"
                row = self._db.execute(query, (limit,)).fetchone()
                if row is not None:
                    self._db.execute(
                        "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                        (_BEFORE_FIRST, packing.hex_of(row[0])),
                    )
                deleted = self._db.execute("DELETE FROM records WHERE seq <= ?", (limit,)).rowcount
                self._db.execute("DELETE FROM acks WHERE through < ?", (through,))

            self._transaction(write, "prune")
            return deleted

    # -- the witness -------------------------------------------------------------------------

    def _open_witness(self) -> None:
        try:
            self._witness_fd = os.open(
                self.witness_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640
            )
        except OSError as exc:
            raise BufferWriteError(f"{self.witness_path}: {exc.strerror or exc}") from exc
        self._write_witness()

    def _write_witness(self) -> None:
        if self._witness_fd is None:
            return
        text = orjson.dumps({"chain": self.chain, "gw": self.gw, "last_seq": self.last_seq})
        # One fixed-size block rewritten in place: a full disk cannot refuse it, and a torn
        # write leaves padding, not a shorter number, behind.
        with contextlib.suppress(OSError):
            os.pwrite(self._witness_fd, text.ljust(_WITNESS_BYTES), 0)

    # -- space -------------------------------------------------------------------------------

    def _transaction(self, write: Callable[[], None], what: str) -> None:
        """Run ``write`` in one transaction (the caller holds the write lock); when it fails
        and the reserve is still there, give the reserve back and try once more."""
        for attempt in (1, 2):
            try:
                self._db.execute("BEGIN IMMEDIATE")
                write()
                self._db.execute("COMMIT")
                return
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                # Space, not a constraint: an OperationalError (disk full, I/O error) is what
                # giving the reserve back can cure.
                space = isinstance(exc, sqlite3.OperationalError)
                if attempt == 1 and space and self._release_reserve():
                    continue
                raise BufferWriteError(f"{self.path}: {what} failed: {exc}") from exc

    def _release_reserve(self) -> bool:
        """Give the reserve's space back to the filesystem; False when there was none."""
        self.disk_full = True
        try:
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        return True

    def restore_reserve(self) -> bool:
        """Set the reserve aside again when the filesystem has room for it twice over; True
        once it is in place (or none is configured), which ends :attr:`disk_full`."""
        if self.reserve_bytes <= 0:
            self.disk_full = False
            return True
        with contextlib.suppress(FileNotFoundError):
            if self.reserve_path.stat().st_size >= self.reserve_bytes:
                self.disk_full = False
                return True
        try:
            if shutil.disk_usage(self.path.parent).free < 2 * self.reserve_bytes:
                self.disk_full = True
                return False
            with self.reserve_path.open("wb") as handle:
                os.posix_fallocate(handle.fileno(), 0, self.reserve_bytes)
        except OSError:
            with contextlib.suppress(OSError):
                self.reserve_path.unlink()
            self.disk_full = True
            return False
        self.disk_full = False
        return True

    # -- operators' views --------------------------------------------------------------------

    def status(self) -> BufferStatus:
        with self._read_lock:
            count = self._reader.execute("SELECT count(*) FROM records").fetchone()[0]
            acked = int(
                self._reader.execute("SELECT value FROM meta WHERE key='acked_through'").fetchone()[
                    0
                ]
            )
            oldest = self._reader.execute(
                "SELECT at FROM records WHERE seq > ? ORDER BY seq LIMIT 1", (acked,)
            ).fetchone()
        return BufferStatus(
            chain=self.chain,
            gw=self.gw,
            records=count,
            last_seq=self.last_seq,
            acked_through=acked,
            pending=self.last_seq - acked,
            oldest_pending_at=packing.time_text(oldest[0]) if oldest else None,
            disk_bytes=self.disk_bytes(),
            quota_bytes=self.quota_bytes,
        )

    def used_bytes(self) -> int:
        """Space the database's content takes: its pages less the free ones SQLite reuses
        before growing the file (pruning frees pages; the file itself never shrinks). Pages
        still in the write-ahead log count once, as the newest snapshot sees them; the log
        file's own size is bounded by SQLite's auto-checkpoint (about 4 MB)."""
        with self._read_lock:
            pages = self._reader.execute("PRAGMA page_count").fetchone()[0]
            free = self._reader.execute("PRAGMA freelist_count").fetchone()[0]
            size = self._reader.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def disk_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                total += Path(f"{self.path}{suffix}").stat().st_size
        return total

    def export(self, since: str | None = None, until: str | None = None) -> Iterator[bytes]:
        """The sealed bytes of each record in ``seq`` order, optionally only those with
        ``since <= at < until`` (record times, as :func:`packing.micros` reads them).

        Streams from its own connection, so an export of any size runs in constant memory and
        does not hold the reader lock.
        """
        low = packing.micros(since) if since else -(2**63)
        high = packing.micros(until) if until else 2**63 - 1
        conn = self._connect()
        try:
            rows = conn.execute(
                f"{packing.SELECT} WHERE r.at >= ? AND r.at < ? ORDER BY r.seq", (low, high)
            )
            yield from (body for _, _, body in self._bodies(rows, conn))
        finally:
            conn.close()

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._reader.close()
            self._db.close()
            if self._witness_fd is not None:
                os.close(self._witness_fd)
                self._witness_fd = None
