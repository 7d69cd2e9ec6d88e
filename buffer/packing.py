"""Records at rest in columns, and back to the exact bytes that were sealed (schema 4).

A sealed record's JSON repeats, in every row, what the file already knows or can derive: the
format version, the gateway and chain ids (one per file), the previous record's hash (the row
before's ``hash``), the field names, and names such as the zone, device, point, unit and key
that recur across a site's records. Stored as it was sealed, a reading took ~690 bytes in the
records table; packed, it takes ~150, most of it the signature and the hash (96 bytes raw),
which cannot be derived.

A packed row holds:

* ``at`` and ``src`` as integer microseconds since 1970 (UTC);
* ``kind``, ``zone``, ``device``, ``point``, ``unit``, ``quality`` and ``key`` as ids into the
  ``names`` table (each name stored once per file);
* ``value`` as SQLite stores the JSON number (integer or real), so ``1`` and ``1.0`` stay apart;
* ``data`` as NULL for ``{}``, else its JSON bytes exactly as sealed, deflated with a preset
  dictionary (``_DICTIONARIES``) when that is shorter; the first byte says which;
* ``hash`` and ``sig`` as their raw 32 and 64 bytes.

Exactness is checked, not assumed: every row is rebuilt the moment it is packed and compared
byte for byte with the body the sealer produced. Any record that does not come back
identical (another format version, a field this layout does not know, a body a newer or
older agent wrote differently) is kept whole in ``body`` instead, so an export always yields
the sealed bytes and a verifier sees exactly what was signed.

Dictionaries are only ever added, never changed: a file holds rows deflated with every one
that was in use when they were written.
"""

from __future__ import annotations

import binascii
import sqlite3
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

__all__ = [
    "COLUMNS",
    "CREATE_NAMES",
    "CREATE_RECORDS",
    "GENESIS",
    "RECORD_FIELDS",
    "SELECT",
    "Names",
    "Unpackable",
    "bodies",
    "head",
    "hex_of",
    "micros",
    "pack",
    "time_text",
    "unpack",
    "whole",
]

GENESIS = bytes(32)
"""``prev`` of ``seq`` 1: 64 zeros as hex (CONTRACT §1)."""

RECORD_FIELDS = (
    "v", "gw", "chain", "seq", "kind", "at", "src_at", "zone", "device", "point",
    "value", "unit", "quality", "data", "prev", "hash", "key", "sig",
)  # fmt: skip
"""Record format 1's fields in the order the sealer writes them (CONTRACT §1); the buffer
must not import the agent, so a test holds this equal to ``agent.evidence.RECORD_FIELDS``."""
_FORMAT = 1

COLUMNS = (
    "seq", "at", "kind", "hash", "body", "src", "zone", "device", "point", "value", "unit",
    "quality", "data", "key", "sig",
)  # fmt: skip
CREATE_RECORDS = f"""CREATE TABLE records (
    seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, kind INTEGER NOT NULL, hash BLOB NOT NULL,
    body BLOB, {", ".join(COLUMNS[5:])}
)"""
"""Columns without a type (``value``, ``data``…) keep what they are given, as Python gave it.
``body`` is NULL for a packed row and the sealed bytes otherwise."""
CREATE_NAMES = "CREATE TABLE names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)"
SELECT = (
    f"SELECT {', '.join('r.' + c for c in COLUMNS)}, p.hash "
    "FROM records r LEFT JOIN records p ON p.seq = r.seq - 1"
)
"""Every column a row is rebuilt from, and the hash of the row before (its ``prev``)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_SECOND = timedelta(seconds=1)
_DATA_PLAIN = 0x7B  # "{": the JSON itself
# A preset dictionary holds what a short JSON object repeats; deflate finds the longest matches
# nearest its end, so the commonest strings come last. Tag byte → dictionary; append only.
_DICTIONARIES = {
    1: (
        b'"https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld",{"gxp":"urn:gxpgate:'
        b'epcis:"}],"type":"ObjectEvent","eventID":"ni:///sha-256;?ver=CBV2.0","eventTime":"'
        b'"eventTimeZoneOffset":"+00:00","epcList":["urn:epc:id:sgtin:urn:epc:id:sscc:"],'
        b'"quantityList":"action":"OBSERVE","bizStep":"receiving","disposition":"in_progress",'
        b'"readPoint":{"id":"urn:gxpgate:device:"},"bizLocation":{"id":"urn:gxpgate:zone:"}'
        b',"gxp:lot":"gxp:expiry":"{"scan":{"raw":"]d2010","symbology":"]C1","ai":{"01":"'
        b'"epc_hex":"uri":"{"alarm_id":"A","rule":"kind":"severity":"warning","state":"active"'
        b',"condition":"normal","started_at":"value":null,"limit":null,"extreme":null,"lots":['
        b'"by":null,"comment":null,"detail":{"lot":"route":"quality"{"event":"device_offline"'
        b',"device":"reason":"{"error":"{"backfill":true,"clock_unsynced":true'
        b',"samples":{"count":,"min":,"max":,"mean":,"first_at":"2026-12-01T00:00:00.000000Z",'
        b'"last_at":"2026-12-01T00:00:00.000000Z","mkt":'
    ),
}
_NEWEST = max(_DICTIONARIES)


class Unpackable(Exception):
    """A stored row cannot be rebuilt: the file was damaged or edited."""


class Names:
    """The ``names`` table's ids, cached per file: names are only ever added.

    The writer's new names are provisional until its transaction commits (:meth:`commit`),
    so a rolled-back id is never cached and never handed out twice. Readers on other threads
    see committed names only (:meth:`lookup`)."""

    def __init__(self, rows: Iterable[tuple[int, str]] = ()) -> None:
        self._name: dict[int, str] = {}
        self._id: dict[str, int] = {}
        for ident, name in rows:
            self._name[ident], self._id[name] = name, ident
        self._top = max(self._name, default=0)
        self._new: dict[str, int] = {}
        self._new_name: dict[int, str] = {}
        self._json: dict[int, bytes] = {}

        self.known: Callable[[str], int | None] = self._id.get
        """The committed id of a name, if it has one (ids start at 1, so never falsy)."""

    def id_for(self, name: str) -> int:
        """The writer's id for ``name``: provisional when the name is new."""
        ident = self._id.get(name)
        if ident is None:
            ident = self._new.get(name)
            if ident is None:
                ident = self._new[name] = self._top + len(self._new) + 1
                self._new_name[ident] = name
        return ident

    def new(self) -> list[tuple[int, str]]:
        """Names given an id since the last :meth:`commit` or :meth:`forget`."""
        return list(self._new_name.items())

    def commit(self) -> None:
        for ident, name in self._new_name.items():
            self._name[ident], self._id[name] = name, ident
        self._top += len(self._new)
        self.forget()

    def forget(self) -> None:
        self._new.clear()
        self._new_name.clear()

    def lookup(self, conn: sqlite3.Connection, provisional: bool = False) -> Callable[[int], bytes]:
        """A name by id as JSON text (quoted and escaped as the record has it), read through
        ``conn`` when not cached; ``provisional``: also the writer's uncommitted names (only
        the writer, holding its lock, may ask for them)."""
        cached = self._json

        def name_json(ident: int) -> bytes:
            text = cached.get(ident)
            if text is not None:
                return text
            name = self._name.get(ident)
            if name is None and provisional:
                name = self._new_name.get(ident)
                if name is not None:
                    return orjson.dumps(name)  # not cached: the write may yet roll back
            if name is None:
                row = conn.execute("SELECT name FROM names WHERE id = ?", (ident,)).fetchone()
                if row is None:
                    raise Unpackable(f"name {ident} is not in the names table")
                name = self._name[ident] = str(row[0])
            text = cached[ident] = orjson.dumps(name)
            return text

        return name_json


# Records come in time order, so most share their second with the one before: the last second
# parsed and the last formatted are kept (one tuple each, replaced whole, so threads can share).
_parsed: tuple[str, int] = ("", 0)
_formatted: tuple[int, bytes] = (-1, b"")


def micros(text: str) -> int:
    """A record time (``2026-11-21T10:00:00.123456Z``) as integer microseconds since 1970."""
    global _parsed
    if len(text) == 27 and text[19] == "." and text[26] == "Z" and text[20:26].isdigit():
        second, seconds = _parsed
        if text[:19] != second:
            second = text[:19]
            seconds = (datetime.fromisoformat(second + "Z") - _EPOCH) // _SECOND
            _parsed = (second, seconds)
        return seconds * 1_000_000 + int(text[20:26])
    return (datetime.fromisoformat(text) - _EPOCH) // _MICRO


def _time(us: int) -> bytes:
    global _formatted
    seconds, fraction = divmod(us, 1_000_000)
    cached, prefix = _formatted
    if seconds != cached:
        prefix = (_EPOCH + seconds * _SECOND).strftime("%Y-%m-%dT%H:%M:%S").encode()
        _formatted = (seconds, prefix)
    return b"%s.%06dZ" % (prefix, fraction)


def hex_of(digest: bytes | str) -> str:
    """A stored hash as the record writes it (lowercase hex)."""
    return digest.hex() if isinstance(digest, bytes) else digest


def whole(seq: int, at: str, kind: str, digest: str, body: bytes, names: Names) -> tuple[Any, ...]:
    """The row for a record kept as sealed, in ``body``."""
    return (seq, _at_column(at), names.id_for(kind), _hash_column(digest), body, *(None,) * 10)


def pack(
    seq: int,
    body: bytes,
    names: Names,
    gw: str,
    chain: str,
    record: Mapping[str, Any] | None = None,
) -> tuple[Any, ...] | None:
    """The packed row for a sealed record of a shape this layout holds; None for any other.
    ``record``: the object ``body`` serialises, if at hand (else ``body`` is parsed). The
    caller still checks that :func:`unpack` gives ``body`` back, byte for byte."""
    if record is None:
        try:
            record = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
    if not isinstance(record, dict) or tuple(record) != RECORD_FIELDS:
        return None
    value = record["value"]
    if (
        record["v"] != _FORMAT
        or record["gw"] != gw
        or record["chain"] != chain
        or record["seq"] != seq
        or type(record["data"]) is not dict
        or not (value is None or type(value) is float or (type(value) is int and _in_int64(value)))
    ):
        return None
    # Any other type in a text field (a number for a zone, say) fails here, as TypeError.
    known, id_for = names.known, names.id_for
    zone, device, point, unit, quality, src = (
        record["zone"], record["device"], record["point"], record["unit"], record["quality"],
        record["src_at"],
    )  # fmt: skip
    try:
        return (
            seq,
            micros(record["at"]),
            known(record["kind"]) or id_for(_text(record["kind"])),
            bytes.fromhex(record["hash"]),
            None,
            None if src is None else micros(src),
            None if zone is None else known(zone) or id_for(_text(zone)),
            None if device is None else known(device) or id_for(_text(device)),
            None if point is None else known(point) or id_for(_text(point)),
            value,
            None if unit is None else known(unit) or id_for(_text(unit)),
            None if quality is None else known(quality) or id_for(_text(quality)),
            _data_column(record["data"]),
            known(record["key"]) or id_for(_text(record["key"])),
            binascii.a2b_base64(record["sig"], strict_mode=True),
        )
    except (ValueError, TypeError, OverflowError, binascii.Error):
        return None


def _text(value: Any) -> str:
    if type(value) is not str:
        raise TypeError("not text")
    return value


def _in_int64(value: int) -> bool:
    return -(2**63) <= value < 2**63


def _at_column(at: str) -> int:
    try:
        return micros(at)
    except (ValueError, TypeError):
        return 0  # only a damaged legacy row: its body is kept whole, and exports as it was


def _hash_column(digest: str) -> bytes | str:
    try:
        return bytes.fromhex(digest) if len(digest) == 64 else digest
    except ValueError:
        return digest


def _data_column(data: dict[str, Any]) -> bytes | None:
    if not data:
        return None
    text = orjson.dumps(data)
    if len(text) < 24:
        return text
    zdict = _DICTIONARIES[_NEWEST]
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, zdict)
    packed = bytes([_NEWEST]) + deflate.compress(text) + deflate.flush()
    return packed if len(packed) < len(text) else text


def _data_json(column: bytes) -> bytes:
    tag = column[0]
    if tag == _DATA_PLAIN:
        return column
    zdict = _DICTIONARIES.get(tag)
    if zdict is None:
        raise Unpackable(f"data is packed with dictionary {tag}, which this version lacks")
    inflate = zlib.decompressobj(-15, zdict)
    try:
        return inflate.decompress(column[1:]) + inflate.flush()
    except zlib.error as exc:
        raise Unpackable(f"data does not inflate: {exc}") from None


def head(gw: str, chain: str) -> bytes:
    """What every packed record of a file begins with, up to its ``seq``."""
    return b"".join(
        (b'{"v":', str(_FORMAT).encode(), b',"gw":', orjson.dumps(gw), b',"chain":',
         orjson.dumps(chain), b',"seq":')
    )  # fmt: skip


def unpack(
    row: tuple[Any, ...], prev: bytes | str, name_json: Callable[[int], bytes], start: bytes
) -> bytes:
    """The sealed bytes of a stored row (a tuple in :data:`COLUMNS` order); ``prev`` is the
    hash of the record before it, ``start`` the file's :func:`head`.

    Written out piece by piece in the sealer's field order, as orjson writes a record: the
    same function checks every row as it is stored, so what it writes is what was sealed."""
    seq, at, kind, digest, body, src, zone, device, point, value, unit, quality, data, key, sig = (
        row
    )
    if body is not None:
        return bytes(body)
    try:
        return b"".join(
            (
                start, str(seq).encode(),
                b',"kind":', name_json(kind),
                b',"at":"', _time(at),
                b'","src_at":', b"null" if src is None else b'"%s"' % _time(src),
                b',"zone":', b"null" if zone is None else name_json(zone),
                b',"device":', b"null" if device is None else name_json(device),
                b',"point":', b"null" if point is None else name_json(point),
                b',"value":', orjson.dumps(value),
                b',"unit":', b"null" if unit is None else name_json(unit),
                b',"quality":', b"null" if quality is None else name_json(quality),
                b',"data":', b"{}" if data is None else _data_json(data),
                b',"prev":"', _hex_bytes(prev),
                b'","hash":"', _hex_bytes(digest),
                b'","key":', name_json(key),
                b',"sig":"', binascii.b2a_base64(sig, newline=False), b'"}',
            )
        )  # fmt: skip
    except (TypeError, ValueError, OverflowError, binascii.Error) as exc:
        raise Unpackable(f"record {seq} cannot be rebuilt: {exc}") from None


def _hex_bytes(digest: bytes | str) -> bytes:
    return binascii.hexlify(digest) if isinstance(digest, bytes) else digest.encode()


def bodies(
    rows: Iterable[tuple[Any, ...]],
    name_json: Callable[[int], bytes],
    start: bytes,
    before_first: Callable[[], bytes | str | None],
) -> Iterator[tuple[int, str, bytes]]:
    """``(seq, hash, body)`` for rows selected with :data:`SELECT`; ``before_first`` gives the
    hash of the record before the oldest still held, asked only when a row needs it.

    A row that cannot be rebuilt (the file was damaged or edited) comes out as a line that
    says so, ``{"seq": N, "damaged": "..."}``: it is no record and fails any verification,
    so the forwarder's batch is refused and ``gxpgate verify`` names it, as for a damaged body
    stored whole; nothing stops at it, and nothing is made up in its place."""
    for row in rows:
        *stored, prev = row
        seq = stored[0]
        try:
            if prev is None:
                prev = GENESIS if seq == 1 else before_first()
                if prev is None:
                    raise Unpackable("the hash of the record before it is not held")
            body = unpack(tuple(stored), prev, name_json, start)
        except Unpackable as exc:
            body = orjson.dumps({"seq": seq, "damaged": str(exc)})
        yield seq, hex_of(stored[3]), body


def time_text(us: int) -> str:
    """The record time of :func:`micros`' microseconds."""
    return _time(us).decode()
