"""The lot register: which lot, SSCC and serialised item is in which zone, since when.

A projection of the sealed chain, kept durably in its own SQLite file (``lots.db`` beside the
buffer file, see :func:`lots_path_for`). The chain is the truth: the register only ever
applies ``custody`` records in ``seq`` order and remembers the last ``seq`` it has seen
(``last_seq``), in the same transaction as the changes. At agent start :meth:`LotRegister.sync`
applies what the outbox holds after ``last_seq`` (nothing after a clean stop, the tail after a
crash), and from then on :class:`~gxpgate.agent.custody.feed.LotFeed` applies each commit's custody
records in a worker thread, so sealing never waits for the register. Deleting ``lots.db``
rebuilds it from the chain at the next start — complete while the buffer still holds every
custody record (delivered records are pruned after ``retention_days``); a register whose
chain differs from the buffer's (a new buffer) or that is ahead of it (a buffer restored from
backup) is rebuilt the same way.

Identifiers
    Canonical ids are GS1 element strings in human-readable form: lot ``(01)<GTIN>(10)<lot>``,
    SSCC ``(00)<SSCC>``, serialised item ``(01)<GTIN>(21)<serial>``. They need no company-prefix
    length (which EPC URIs do and a barcode does not carry), they are what every label prints
    under its barcode, and barcode and RFID reads of one object give the same id.
    :func:`parse_identifier` also accepts SSCCs as 18 digits, element strings with ``<GS>``
    separators, GS1 Digital Link URIs, EPC pure identity URIs (``urn:epc:id:sgtin:``,
    ``urn:epc:id:sscc:``, ``urn:epc:class:lgtin:``) and a bare lot number (any GTIN).

How presence follows custody events
    *Units* move: a serialised item, an SSCC, and per lot its *unserialised stock* (what lot-level
    scans, GTIN + lot without serial, report). A unit is in at most one zone. A custody record
    observing it in zone Z ends its presence elsewhere and starts one in Z (a read in the zone it
    is already in changes nothing); a record whose ``bizStep`` takes goods off the site
    (:data:`EXIT_STEPS`, and every EPCIS DELETE) ends its presence. A *lot* is present in a zone
    while at least one of its units is: from the first unit's arrival to the last one's
    departure, so a lot can be in several zones at once. An item's lot is learned from a barcode
    carrying (01), (10) and (21); from then on RFID reads of that item (SGTIN, no lot on the tag)
    move the lot too. Lot-level scans cannot tell part of a lot from all of it, so they move the
    lot's whole unserialised stock. No packing is inferred: an SSCC and the cases scanned after
    it move independently. Times are the records' ``at``; records apply in ``seq`` order, and a
    presence never ends before it began (a clock step backwards shortens it to zero).

Time out of storage (agent/custody/exposure.py) is part of the same projection: with an
:class:`~gxpgate.agent.custody.exposure.ExposureBook` attached, temperature readings are applied
too, and
``alarm`` records naming lots are kept per lot for ``gxpgate lots exposure``.

Schema (``PRAGMA user_version`` 2; a version 1 register gains the new tables)
    ``meta(key, value)``: ``chain``, ``last_seq``, ``incomplete_before`` (set when a rebuild
    found records already pruned).
    ``presence(id, identifier, kind, zone, since, until, seq, until_seq)``: kind ``lot``,
    ``sscc``, ``item`` or ``stock`` (a lot's unserialised stock; internal); ``until`` null
    while present; ``seq`` / ``until_seq`` the records that started and ended it. Times are
    RFC 3339 UTC with microseconds, so text order is time order.
    ``member(item, lot)``: the lot each serialised item belongs to.
    ``exposure(id, lot, zone, cause, start_at, end_at, presence)``: time a lot spent outside
    its required condition; cause ``zone`` (a stay in a zone of another profile; ``end_at``
    null while it lasts) or ``excursion``.
    ``stay_stats(presence, n, min, max, sum_exp)``: temperature readings during a lot's stay.
    ``lot_alarm(lot, seq, at, alarm_id, rule, kind, severity, state, zone)``: alarm records
    naming the lot.

PRAGMAs: ``journal_mode=WAL`` (the CLI reads while the agent writes), ``synchronous=FULL``,
``busy_timeout=5000``.

Thread safety: one connection behind a lock; any thread may call any method. The agent writes
from a worker thread; in the event loop, queries should go through ``asyncio.to_thread``.

Exceptions::

    LotRegisterError        the register cannot be opened or written; says why
    └── RegisterMissing     no register file yet (the agent creates it on its first start)
    BadIdentifier           (a ValueError) the text names no lot, SSCC or serialised item
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, Self
from urllib.parse import unquote

from gxpgate.agent.evidence import format_time
from gxpgate.agent.recording.sealing import Committed
from gxpgate.buffer import Outbox
from gxpgate.drivers.gs1 import CSET82, GS, gs1_check_digit, parse_scan

if TYPE_CHECKING:
    import sqlite_utils

    from gxpgate.agent.alarms.rules import Event

__all__ = [
    "EXIT_STEPS",
    "BadIdentifier",
    "Identity",
    "LotRegister",
    "LotRegisterError",
    "Presence",
    "RegisterMissing",
    "StayObserver",
    "item_id",
    "lot_id",
    "lots_path_for",
    "parse_identifier",
    "sscc_id",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 2
EXIT_STEPS: Final = frozenset(
    {"shipping", "departing", "retail_selling", "decommissioning", "destroying", "killing"}
)
"""CBV business steps after which the observed objects are no longer on the site."""
REPLAY_CHUNK: Final = 2000
_APPLIED: Final = frozenset({"custody", "reading", "alarm"})
_PRAGMAS: Final = {"journal_mode": "wal", "synchronous": 2, "busy_timeout": 5000}
_LOT_NUMBER_AT: Final = len("(01)00000000000000(10)") + 1  # SQLite substr() is 1-based

Kind = Literal["lot", "sscc", "item"]
_UnitKind = Literal["item", "sscc", "stock"]


class LotRegisterError(Exception):
    """The register cannot be opened or written."""


class RegisterMissing(LotRegisterError):
    """There is no register file yet."""


class BadIdentifier(ValueError):
    """The text names no lot, SSCC or serialised item; the message says why."""


def lots_path_for(buffer_path: Path) -> Path:
    """Where the register lives: ``lots.db`` in the buffer file's folder."""
    return buffer_path.with_name("lots.db")


def lot_id(gtin: str, lot: str) -> str:
    return f"(01){gtin}(10){lot}"


def item_id(gtin: str, serial: str) -> str:
    return f"(01){gtin}(21){serial}"


def sscc_id(sscc: str) -> str:
    return f"(00){sscc}"


@dataclass(frozen=True, slots=True)
class Presence:
    """An object in a zone from ``since`` until ``until`` (``None``: still there)."""

    identifier: str
    kind: Kind
    zone: str
    since: datetime
    until: datetime | None
    seq: int
    """The custody record that started the presence."""
    until_seq: int | None
    """The custody record that ended it."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "identifier": self.identifier,
            "kind": self.kind,
            "zone": self.zone,
            "since": format_time(self.since),
            "until": format_time(self.until) if self.until else None,
            "seq": self.seq,
            "until_seq": self.until_seq,
        }


@dataclass(frozen=True, slots=True)
class Identity:
    """What an identifier names: ``kind`` ``lot``, ``sscc``, ``item``, or ``lot_number`` (a bare
    lot number, any GTIN); ``id`` is the canonical id (the lot number for ``lot_number``)."""

    kind: Literal["lot", "sscc", "item", "lot_number"]
    id: str


@dataclass(frozen=True, slots=True)
class _Unit:
    kind: _UnitKind
    id: str
    lot: str | None
    """The lot id the unit belongs to, when this record says so (stock: itself)."""


# --------------------------------------------------------------------------- identifiers

_HRI_AI: Final = re.compile(r"\((\d{2,4})\)")
_GS_SPELLING: Final = re.compile(r"<GS>|\\x1d", re.IGNORECASE)
_SGTIN_URI: Final = re.compile(r"urn:epc:id:sgtin:(\d{6,12})\.(\d{1,7})\.(.+)")
_SSCC_URI: Final = re.compile(r"urn:epc:id:sscc:(\d{6,12})\.(\d{5,11})")
_LGTIN_URI: Final = re.compile(r"urn:epc:class:lgtin:(\d{6,12})\.(\d{1,7})\.(.+)")


def _with_check_digit(payload: str) -> str:
    return payload + str(gs1_check_digit(payload))


def _from_epc_uri(text: str) -> Identity:
    if match := _SGTIN_URI.fullmatch(text):
        cp, ref, serial = match.groups()
        if len(cp) + len(ref) == 13:
            gtin = _with_check_digit(ref[0] + cp + ref[1:])
            return Identity("item", item_id(gtin, unquote(serial)))
    elif match := _SSCC_URI.fullmatch(text):
        cp, ref = match.groups()
        if len(cp) + len(ref) == 17:
            return Identity("sscc", sscc_id(_with_check_digit(ref[0] + cp + ref[1:])))
    elif match := _LGTIN_URI.fullmatch(text):
        cp, ref, lot = match.groups()
        if len(cp) + len(ref) == 13:
            gtin = _with_check_digit(ref[0] + cp + ref[1:])
            return Identity("lot", lot_id(gtin, unquote(lot)))
    raise BadIdentifier(
        f"{text!r} is not an EPC URI of a serialised item (urn:epc:id:sgtin:…), an SSCC "
        "(urn:epc:id:sscc:…) or a lot (urn:epc:class:lgtin:…)"
    )


def _from_ai(ai: Mapping[str, str], text: str) -> Identity:
    if "00" in ai:
        return Identity("sscc", sscc_id(ai["00"]))
    gtin = ai["01"]
    if "21" in ai:
        return Identity("item", item_id(gtin, ai["21"]))
    if "10" in ai:
        return Identity("lot", lot_id(gtin, ai["10"]))
    raise BadIdentifier(f"{text!r} is a GTIN alone; add its lot (10) or serial (21)")


def _element_string(text: str) -> str:
    """``(01)…(10)…`` → element strings separated by <GS>; other text unchanged."""
    if not text.startswith("("):
        return _GS_SPELLING.sub(GS, text)
    parts = _HRI_AI.split(text)
    if parts[0]:
        raise BadIdentifier(f"{text!r}: text before the first (AI)")
    return GS.join(ai + value for ai, value in zip(parts[1::2], parts[2::2], strict=True))


def parse_identifier(text: str, *, today: date | None = None) -> Identity:
    """What ``text`` names (module docstring lists the accepted forms); raises
    :class:`BadIdentifier` with the reason. ``today`` resolves two-digit years of dates in an
    element string (only their validity matters here)."""
    text = text.strip()
    if not text:
        raise BadIdentifier("empty identifier")
    if text.lower().startswith("urn:"):
        return _from_epc_uri(text)
    if re.fullmatch(r"\d{18}", text):
        expected = gs1_check_digit(text[:17])
        if int(text[17]) != expected:
            raise BadIdentifier(f"SSCC {text}: check digit is {text[17]}, expected {expected}")
        return Identity("sscc", sscc_id(text))
    explicit = text.startswith(("(", "]", "http://", "https://")) or bool(
        _GS_SPELLING.search(text) or GS in text
    )
    scan = parse_scan(_element_string(text), reference_date=today or date.today())
    ai = scan.ai
    if scan.ok and ("00" in ai or "01" in ai):
        return _from_ai(ai, text)
    if explicit:
        raise BadIdentifier(f"{text!r}: {scan.problem or 'names no GTIN or SSCC'}")
    if len(text) > 20 or not set(text) <= CSET82:
        raise BadIdentifier(
            f"{text!r} is neither a GS1 identifier nor a lot number (up to 20 characters of "
            "GS1 character set 82)"
        )
    return Identity("lot_number", text)


def _units(record: Mapping[str, Any]) -> tuple[list[_Unit], bool]:
    """The units a custody record observes, and whether they leave the site."""
    data = record.get("data") or {}
    scan = data.get("scan") or {}
    event = data.get("epcis")
    if not isinstance(event, dict) or scan.get("error"):
        return [], False
    exits = event.get("bizStep") in EXIT_STEPS or event.get("action") == "DELETE"
    units: list[_Unit] = []
    ai = scan.get("ai")
    if isinstance(ai, dict):
        if "00" in ai:
            units.append(_Unit("sscc", sscc_id(ai["00"]), None))
        elif "01" in ai:
            lot = lot_id(ai["01"], ai["10"]) if "10" in ai else None
            if "21" in ai:
                units.append(_Unit("item", item_id(ai["01"], ai["21"]), lot))
            elif lot is not None:
                units.append(_Unit("stock", lot, lot))
    elif isinstance(uri := scan.get("uri"), str):
        try:
            identity = _from_epc_uri(uri)
        except BadIdentifier:
            return [], False
        if identity.kind == "item":
            units.append(_Unit("item", identity.id, None))
        elif identity.kind == "sscc":
            units.append(_Unit("sscc", identity.id, None))
    return units, exits


def _utc_text(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no time zone")
    return format_time(moment.astimezone(UTC))


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --------------------------------------------------------------------------- the register


class StayObserver(Protocol):
    """What follows the lots' stays in zones to keep their time out of storage (the exposure
    book, agent/custody/exposure.py): told of every stay and good temperature reading, it writes its
    figures inside the register's transactions."""

    def attach(self, conn: sqlite3.Connection, lock: threading.Lock) -> None: ...
    def stay_started(self, presence: int, lot: str, zone: str, at: str) -> None: ...
    def stay_ended(self, presence: int, zone: str, at: str) -> None: ...
    def reading(
        self, device: str, point: str, value: Any, at: str, samples: Any = None
    ) -> None: ...
    @property
    def wants_write(self) -> bool: ...
    def flush(self) -> None: ...
    def reset(self) -> None: ...
    def check(self, now: float | None = None) -> list[Event]: ...


class LotRegister:
    """The register in one SQLite file. :meth:`open` (the agent: creates it) or
    :meth:`open_existing` (operators: never creates it)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._db = conn
        self._lock = threading.Lock()
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        self.chain: str | None = meta.get("chain") or None
        self.last_seq: int = int(meta.get("last_seq", "0"))
        self.persisted_seq = self.last_seq
        """:attr:`last_seq` as written (readings may be applied in memory ahead of it)."""
        before = meta.get("incomplete_before")
        self.incomplete_before: int | None = int(before) if before else None
        """Set when the register was built from a buffer that had already pruned records."""
        self.book: StayObserver | None = None
        self.version = SCHEMA_VERSION

    def attach(self, book: StayObserver) -> None:
        """Keep time out of storage too (the agent does; see agent/custody/exposure.py)."""
        with self._lock:
            book.attach(self._db, self._lock)
            self.book = book

    @classmethod
    def open(cls, path: Path) -> LotRegister:
        """Open the register at ``path``, creating it (and its folder) if needed."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise LotRegisterError(f"{path}: cannot open the lot register: {exc}") from exc
        except OSError as exc:
            raise LotRegisterError(f"{path}: {exc.strerror or exc}") from exc
        try:
            _set_pragmas(path, conn)
            _init_schema(path, conn)
            return cls(path, conn)
        except sqlite3.Error as exc:
            conn.close()
            raise LotRegisterError(f"{path}: cannot open the lot register: {exc}") from exc
        except BaseException:
            conn.close()
            raise

    @classmethod
    def open_existing(cls, path: Path) -> LotRegister:
        """Open an existing register for queries; :class:`RegisterMissing` if there is none."""
        if not path.is_file():
            raise RegisterMissing(
                f"{path}: no lot register yet (the agent creates it when it first runs)"
            )
        try:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=rw",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise LotRegisterError(f"{path}: cannot read the lot register: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout={_PRAGMAS['busy_timeout']}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (1, SCHEMA_VERSION):  # 1: before time out of storage
                raise LotRegisterError(f"{path}: not a lot register (schema version {version})")
            register = cls(path, conn)
            register.version = version
            return register
        except sqlite3.Error as exc:
            conn.close()
            raise LotRegisterError(f"{path}: cannot read the lot register: {exc}") from exc
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- keeping up with the chain -----------------------------------------------------------

    def sync(self, outbox: Outbox) -> int:
        """Apply the custody records ``outbox`` holds after :attr:`last_seq`; return how many.

        Rebuilds from scratch when the register belongs to another chain or is ahead of the
        buffer. Call it while nothing else commits to the outbox (at agent start).
        """
        if self.chain != outbox.chain or self.last_seq > outbox.last_seq:
            if self.chain is not None:
                log.warning(
                    "lots.rebuild register_chain=%s register_seq=%d buffer_chain=%s buffer_seq=%d",
                    self.chain,
                    self.last_seq,
                    outbox.chain,
                    outbox.last_seq,
                )
            self._reset(outbox.chain)
        applied = 0
        after = self.last_seq
        first = True
        while after < outbox.last_seq:
            rows = outbox.pending(after, REPLAY_CHUNK)
            if not rows:
                break
            if first and rows[0][0] > after + 1:
                log.warning(
                    "lots.replay_incomplete missing_seq=%d..%d (pruned from the buffer)",
                    after + 1,
                    rows[0][0] - 1,
                )
                self._set_meta({"incomplete_before": str(rows[0][0])})
                self.incomplete_before = rows[0][0]
            first = False
            records = [Committed.stored(seq, body) for seq, body in rows]
            applied += self.apply([r for r in records if r.kind in _APPLIED], rows[-1][0])
            after = rows[-1][0]
        if applied:
            log.info("lots.replayed custody_records=%d through_seq=%d", applied, self.last_seq)
        return applied

    def apply(self, records: Iterable[Mapping[str, Any]], through_seq: int) -> int:
        """Apply ``records`` (ascending ``seq``; custody records, and with a book attached
        good readings and alarm records; others and those at or below :attr:`last_seq` are
        skipped) and move :attr:`last_seq` to ``through_seq``, in one transaction. Returns how
        many custody records were applied.

        Readings alone that leave the book nothing to write (no excursion time) are applied in
        memory only: :attr:`last_seq` moves, :attr:`persisted_seq` does not, and the next
        transaction writes them (``apply([], seq)`` is one). A crash before then replays
        them from the chain."""
        records = list(records)
        book = self.book
        if book is not None and records and all(r.get("kind") == "reading" for r in records):
            with self._lock:
                for record in records:
                    if int(record["seq"]) > self.last_seq:
                        self._reading(book, record)
                self.last_seq = max(self.last_seq, through_seq)
                if not book.wants_write:
                    return 0
            records = []
        with self._lock:
            applied = 0
            last = self.last_seq
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for record in records:
                    seq = int(record["seq"])
                    if seq <= last:
                        continue
                    kind = record.get("kind")
                    if kind == "custody":
                        self._apply_one(record)
                        applied += 1
                    elif book is None:
                        continue
                    elif kind == "reading":
                        self._reading(book, record)
                    elif kind == "alarm":
                        self._note_alarm(record)
                    last = seq
                if book is not None:
                    book.flush()
                last = max(last, through_seq)
                self._db.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('last_seq', ?)", (str(last),)
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise LotRegisterError(f"{self.path}: write failed: {exc}") from exc
            self.last_seq = self.persisted_seq = last
            return applied

    def flush_book(self, *, force: bool = False) -> None:
        """Write what the book holds in memory: its excursion time, and with ``force`` also
        the statistics and how far the readings are applied."""
        book = self.book
        if book is not None and (
            book.wants_write or (force and self.persisted_seq < self.last_seq)
        ):
            self.apply([], self.last_seq)

    @staticmethod
    def _reading(book: StayObserver, record: Mapping[str, Any]) -> None:
        if record.get("quality") == "good" and not (record.get("data") or {}).get("backfill"):
            book.reading(
                record["device"], record["point"], record["value"], record["at"],
                (record["data"] or {}).get("samples"),
            )  # fmt: skip

    def _reset(self, chain: str) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("DELETE FROM presence")
                self._db.execute("DELETE FROM member")
                self._db.execute("DELETE FROM lot_alarm")
                if self.book is not None:
                    self.book.reset()
                else:
                    self._db.execute("DELETE FROM exposure")
                    self._db.execute("DELETE FROM stay_stats")
                self._db.execute("DELETE FROM meta")
                self._db.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [("chain", chain), ("last_seq", "0")],
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise LotRegisterError(f"{self.path}: reset failed: {exc}") from exc
            self.chain, self.last_seq, self.incomplete_before = chain, 0, None
            self.persisted_seq = 0

    def _set_meta(self, values: Mapping[str, str]) -> None:
        with self._lock:
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", values.items()
                )
            except sqlite3.Error as exc:
                raise LotRegisterError(f"{self.path}: write failed: {exc}") from exc

    # -- applying one record (under the lock, inside a transaction) ---------------------------

    def _apply_one(self, record: Mapping[str, Any]) -> None:
        units, exits = _units(record)
        zone = record.get("zone")
        if not units or not isinstance(zone, str):
            return
        at, seq = str(record["at"]), int(record["seq"])
        for unit in units:
            self._move(unit, zone, at, seq, exits)

    def _move(self, unit: _Unit, zone: str, at: str, seq: int, exits: bool) -> None:
        current = self._db.execute(
            "SELECT id, zone, since FROM presence WHERE identifier = ? AND kind = ? "
            "AND until IS NULL",
            (unit.id, unit.kind),
        ).fetchone()
        old_lot = self._lot_of(unit)
        if exits:
            if current is not None:
                self._end(current, at, seq)
                if old_lot is not None:
                    self._end_lot_if_empty(old_lot, current[1], at, seq)
            return
        new_lot = unit.lot or old_lot
        if unit.kind == "item" and unit.lot is not None and unit.lot != old_lot:
            self._db.execute(
                "INSERT OR REPLACE INTO member(item, lot) VALUES (?, ?)", (unit.id, unit.lot)
            )
        moved = current is None or current[1] != zone
        if current is not None and moved:
            self._end(current, at, seq)
        if moved:
            self._start(unit.id, unit.kind, zone, at, seq)
        if current is not None and old_lot is not None and (moved or old_lot != new_lot):
            self._end_lot_if_empty(old_lot, current[1], at, seq)
        if new_lot is not None:
            open_lot = self._db.execute(
                "SELECT 1 FROM presence WHERE identifier = ? AND kind = 'lot' AND zone = ? "
                "AND until IS NULL",
                (new_lot, zone),
            ).fetchone()
            if open_lot is None:
                self._start(new_lot, "lot", zone, at, seq)

    def _lot_of(self, unit: _Unit) -> str | None:
        if unit.kind == "stock":
            return unit.id
        if unit.kind == "item":
            row = self._db.execute("SELECT lot FROM member WHERE item = ?", (unit.id,)).fetchone()
            return row[0] if row else None
        return None

    def _start(self, identifier: str, kind: str, zone: str, at: str, seq: int) -> None:
        cursor = self._db.execute(
            "INSERT INTO presence(identifier, kind, zone, since, seq) VALUES (?, ?, ?, ?, ?)",
            (identifier, kind, zone, at, seq),
        )
        if kind == "lot" and self.book is not None:
            assert cursor.lastrowid is not None
            self.book.stay_started(cursor.lastrowid, identifier, zone, at)

    def _note_alarm(self, record: Mapping[str, Any]) -> None:
        data = record["data"]
        rows = [
            (lot, int(record["seq"]), record["at"], data.get("alarm_id"), data.get("rule"),
             data.get("kind"), data.get("severity"), data.get("state"), record.get("zone"))
            for lot in data.get("lots") or ()
            if isinstance(lot, str) and lot.startswith("(01)") and "(10)" in lot
        ]  # fmt: skip
        self._db.executemany(
            "INSERT INTO lot_alarm(lot, seq, at, alarm_id, rule, kind, severity, state, zone) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def _end(self, row: tuple[int, str, str], at: str, seq: int) -> None:
        row_id, _zone, since = row
        self._db.execute(
            "UPDATE presence SET until = ?, until_seq = ? WHERE id = ?",
            (max(at, since), seq, row_id),
        )

    def _end_lot_if_empty(self, lot: str, zone: str, at: str, seq: int) -> None:
        remaining = self._db.execute(
            "SELECT 1 FROM presence WHERE zone = ? AND until IS NULL AND ("
            " (kind = 'stock' AND identifier = ?)"
            " OR (kind = 'item' AND identifier IN (SELECT item FROM member WHERE lot = ?))"
            ") LIMIT 1",
            (zone, lot, lot),
        ).fetchone()
        if remaining is not None:
            return
        row = self._db.execute(
            "SELECT id, zone, since FROM presence WHERE identifier = ? AND kind = 'lot' "
            "AND zone = ? AND until IS NULL",
            (lot, zone),
        ).fetchone()
        if row is not None:
            self._end(row, at, seq)
            if self.book is not None:
                self.book.stay_ended(row[0], zone, max(at, row[2]))

    # -- queries -----------------------------------------------------------------------------

    def where(self, identifier: str) -> list[Presence]:
        """Every presence (past and current) of what ``identifier`` names, in record order; for a
        bare lot number, those of every lot with that number. Raises :class:`BadIdentifier`."""
        identity = parse_identifier(identifier)
        if identity.kind == "lot_number":
            return self._presences(
                "kind = 'lot' AND substr(identifier, ?) = ? ORDER BY identifier, seq, id",
                (_LOT_NUMBER_AT, identity.id),
            )
        return self._presences(
            "identifier = ? AND kind = ? ORDER BY seq, id", (identity.id, identity.kind)
        )

    def in_zone(self, zone: str, at: datetime | None = None) -> list[Presence]:
        """What is in ``zone`` now, or at the moment ``at``: lots, SSCCs and items."""
        if at is None:
            return self._presences(
                "zone = ? AND until IS NULL AND kind != 'stock' ORDER BY kind, identifier",
                (zone,),
            )
        moment = _utc_text(at)
        return self._presences(
            "zone = ? AND kind != 'stock' AND since <= ? AND (until IS NULL OR until > ?) "
            "ORDER BY kind, identifier",
            (zone, moment, moment),
        )

    def present_between(self, zone: str, t1: datetime, t2: datetime) -> list[str]:
        """Ids of what was in ``zone`` at any moment from ``t1`` to ``t2``: lots and SSCCs, and
        serialised items whose lot is not known (so that nothing present goes unnamed)."""
        start, end = _utc_text(t1), _utc_text(t2)
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT identifier FROM presence WHERE zone = ? AND since <= ? "
                "AND (until IS NULL OR until > ?) AND (kind IN ('lot', 'sscc') OR "
                "(kind = 'item' AND identifier NOT IN (SELECT item FROM member))) "
                "ORDER BY identifier",
                (zone, end, start),
            ).fetchall()
        return [r[0] for r in rows]

    def seen_before(self, identifier: str, kind: Kind, seq: int) -> bool:
        """Was ``identifier`` on the site (any presence) before the record ``seq``?"""
        return (
            self._one(
                "SELECT 1 FROM presence WHERE identifier = ? AND kind = ? AND seq < ? LIMIT 1",
                (identifier, kind, seq),
            )
            is not None
        )

    def present_in(self, identifier: str, kind: Kind, zone: str) -> bool:
        """Is ``identifier`` in ``zone`` now?"""
        return (
            self._one(
                "SELECT 1 FROM presence WHERE identifier = ? AND kind = ? AND zone = ? "
                "AND until IS NULL LIMIT 1",
                (identifier, kind, zone),
            )
            is not None
        )

    def lot_of_item(self, item: str) -> str | None:
        """The lot id a serialised item belongs to, when a barcode has said so."""
        row = self._one("SELECT lot FROM member WHERE item = ?", (item,))
        return str(row[0]) if row else None

    def query(self, query: str, args: Sequence[object]) -> list[tuple[Any, ...]]:
        """Rows of a read-only ``query`` (for reports over the register's tables)."""
        try:
            with self._lock:
                return list(self._db.execute(query, tuple(args)).fetchall())
        except sqlite3.Error as exc:
            raise LotRegisterError(f"{self.path}: query failed: {exc}") from exc

    def _one(self, query: str, args: Sequence[object]) -> tuple[Any, ...] | None:
        try:
            with self._lock:
                row: tuple[Any, ...] | None = self._db.execute(query, tuple(args)).fetchone()
        except sqlite3.Error as exc:
            raise LotRegisterError(f"{self.path}: query failed: {exc}") from exc
        return row

    def _presences(self, where: str, args: Sequence[object]) -> list[Presence]:
        query = (
            "SELECT identifier, kind, zone, since, until, seq, until_seq FROM presence "
            f"WHERE {where}"
        )
        try:
            with self._lock:
                rows = self._db.execute(query, tuple(args)).fetchall()
        except sqlite3.Error as exc:
            raise LotRegisterError(f"{self.path}: query failed: {exc}") from exc
        return [
            Presence(ident, kind, zone, _time(since), _time(until) if until else None, seq, u_seq)
            for ident, kind, zone, since, until, seq, u_seq in rows
        ]


def _set_pragmas(path: Path, conn: sqlite3.Connection) -> None:
    for name, value in _PRAGMAS.items():
        conn.execute(f"PRAGMA {name}={value}")
    for name, value in _PRAGMAS.items():
        actual = conn.execute(f"PRAGMA {name}").fetchone()[0]
        if str(actual).lower() != str(value):
            raise LotRegisterError(f"{path}: PRAGMA {name} is {actual}, expected {value}")


def _init_schema(path: Path, conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    # sqlite-utils only where the file is created or migrated (2.2 MiB of RSS, with pluggy and
    # dateutil, that an agent opening its register does not need).
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    if version == 1:
        with db.atomic():
            _create_exposure_tables(db)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        log.info("lots.migrated from_version=1 to_version=%d", SCHEMA_VERSION)
        return
    if version != 0 or db.table_names():
        raise LotRegisterError(f"{path}: not a lot register (schema version {version})")
    with db.atomic():
        _create_exposure_tables(db)
        db.table("meta").create({"key": str, "value": str}, pk="key", not_null={"value"})
        db.table("presence").create(
            {
                "id": int,
                "identifier": str,
                "kind": str,
                "zone": str,
                "since": str,
                "until": str,
                "seq": int,
                "until_seq": int,
            },
            pk="id",
            not_null={"identifier", "kind", "zone", "since", "seq"},
        )
        db.table("presence").create_index(["identifier", "kind", "until"])
        db.table("presence").create_index(["zone", "until"])
        db.table("member").create({"item": str, "lot": str}, pk="item", not_null={"lot"})
        db.table("member").create_index(["lot"])
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _create_exposure_tables(db: sqlite_utils.Database) -> None:
    db.table("exposure").create(
        {
            "id": int,
            "lot": str,
            "zone": str,
            "cause": str,
            "start_at": str,
            "end_at": str,
            "presence": int,
        },
        pk="id",
        not_null={"lot", "zone", "cause", "start_at"},
    )
    db.table("exposure").create_index(["lot"])
    db.table("exposure").create_index(["presence"])
    db.table("stay_stats").create(
        {"presence": int, "n": int, "min": float, "max": float, "sum_exp": float},
        pk="presence",
    )
    db.table("lot_alarm").create(
        {
            "lot": str,
            "seq": int,
            "at": str,
            "alarm_id": str,
            "rule": str,
            "kind": str,
            "severity": str,
            "state": str,
            "zone": str,
        },
        not_null={"lot", "seq", "at"},
    )
    db.table("lot_alarm").create_index(["lot", "seq"])
