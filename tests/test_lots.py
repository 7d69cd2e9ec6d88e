"""The lot register: presences from custody records, identifiers, and replay from the chain.

Custody records are built by the real custody builder, sealed and stored in a real outbox; the
register reads them back from there, as the agent's does. Times are fixed (10:00 receiving at
the dock, 11:00 put-away into the cold room), so every answer can be written out by hand.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gxpgate.agent.custody.epcis import CustodyBuilder
from gxpgate.agent.custody.feed import LotFeed
from gxpgate.agent.custody.lots import (
    BadIdentifier,
    LotRegister,
    LotRegisterError,
    Presence,
    RegisterMissing,
    lots_path_for,
    parse_identifier,
)
from gxpgate.agent.recording.recorder import Recorder
from gxpgate.agent.recording.sealing import Fact, Sealer
from gxpgate.buffer import Outbox
from gxpgate.drivers.epc import decode_epc
from gxpgate.drivers.scanner import BarcodeRead, Observation, TagRead, decode_scan
from gxpgate.drivers.scanner_model import BarcodeScannerDevice, RfidReaderDevice
from gxpgate.simulators.scanner_sim import (
    DOCK_PORTAL_TAGS,
    DOCK_RECEIVING,
    PUT_AWAY,
    REFERENCE_TAGS,
)

from .sealed import reading

GW = "gw-test"
DAY = datetime(2026, 11, 21, tzinfo=UTC)
LOT_A = "(01)10614141000019(10)LOT-A1"
LOT_B = "(01)10614141000026(10)LOT-B7"
PALLET_1 = "(00)306141410000001010"
PALLET_2 = "(00)306141410000001027"
A1001, A1002, A1003 = (f"(01)10614141000019(21){s}" for s in ("1001", "1002", "1003"))
B2001, B2002 = (f"(01)10614141000026(21){s}" for s in ("2001", "2002"))


def at(hh: int, mm: int, ss: int = 0) -> datetime:
    return DAY.replace(hour=hh, minute=mm, second=ss)


def device(kind: str, zone: str, step: str) -> BarcodeScannerDevice | RfidReaderDevice:
    settings = {"transport": "tcp", "host": "127.0.0.1", "port": 1, "zone": zone}
    if kind == "rfid":
        return RfidReaderDevice.model_validate(
            {"type": "rfid_reader", "biz_step": step, **settings}
        )
    return BarcodeScannerDevice.model_validate(
        {"type": "barcode_scanner", "biz_step": step, **settings}
    )


class Site:
    """A buffer that custody records are sealed into, as the agent would."""

    def __init__(self, path: Path, key: Ed25519PrivateKey) -> None:
        self.outbox = Outbox(path, GW)
        self.sealer = Sealer(key, GW, self.outbox.chain)
        self.builders = {
            "dock": CustodyBuilder(GW, "dock-scanner", device("barcode", "dock", "receiving")),
            "cold": CustodyBuilder(GW, "cold-scanner", device("barcode", "cold-1", "storing")),
            "ship": CustodyBuilder(GW, "ship-scanner", device("barcode", "dock", "shipping")),
            "portal": CustodyBuilder(GW, "dock-portal", device("rfid", "dock", "receiving")),
            "cold-portal": CustodyBuilder(GW, "cold-portal", device("rfid", "cold-1", "storing")),
        }

    def seal(self, facts: list[Fact]) -> int:
        rows = self.sealer.seal(facts, self.outbox.last_seq, self.outbox.last_hash)
        self.outbox.append(rows)
        return rows[-1].seq

    def scan(self, where: str, data: bytes, when: datetime) -> int:
        """Seal one barcode scan; return the seq of its custody record."""
        return self._observe(where, BarcodeRead(when, decode_scan(data, when, "NOREAD")))

    def tag(self, where: str, epc_hex: str, when: datetime) -> int:
        return self._observe(where, TagRead(when, decode_epc(epc_hex)))

    def _observe(self, where: str, observation: Observation) -> int:
        facts = self.builders[where].facts(observation)
        last = self.seal(facts)
        return last - len(facts) + 1

    def script(self, where: str, scans: Any, start: datetime) -> list[int]:
        seqs = []
        for index, scan in enumerate(scans):
            line = (scan.symbology or "").encode() + scan.data
            seqs.append(self.scan(where, line, start + timedelta(minutes=index)))
        return seqs


@pytest.fixture
def site(tmp_path: Path, signing_key: tuple[Path, Ed25519PrivateKey]) -> Any:
    s = Site(tmp_path / "buffer.db", signing_key[1])
    yield s
    s.outbox.close()


def receive_and_put_away(site: Site) -> tuple[list[int], list[int]]:
    """Dock receiving 10:00-10:06 (one scan a minute), put-away 11:00-11:04, with readings
    in between (records the register must skip)."""
    dock = site.script("dock", DOCK_RECEIVING, at(10, 0))
    site.seal([reading(i) for i in range(3)])
    cold = site.script("cold", PUT_AWAY, at(11, 0))
    return dock, cold


def synced(site: Site, path: Path) -> LotRegister:
    register = LotRegister.open(path)
    register.sync(site.outbox)
    return register


def table(path: Path) -> list[tuple[Any, ...]]:
    """The register's whole state, for comparing two registers."""
    conn = sqlite3.connect(path)
    try:
        presence = conn.execute(
            "SELECT identifier, kind, zone, since, until, seq, until_seq FROM presence "
            "ORDER BY identifier, kind, since, zone"
        ).fetchall()
        members = conn.execute("SELECT item, lot FROM member ORDER BY item").fetchall()
        meta = conn.execute("SELECT key, value FROM meta ORDER BY key").fetchall()
    finally:
        conn.close()
    return [*presence, *members, *meta]


def spans(presences: list[Presence]) -> list[tuple[str, datetime, datetime | None]]:
    return [(p.zone, p.since, p.until) for p in presences]


# --------------------------------------------------------------------------- presence


def test_receiving_then_put_away(site: Site, tmp_path: Path) -> None:
    dock, cold = receive_and_put_away(site)
    register = synced(site, tmp_path / "lots.db")
    try:
        assert register.last_seq == site.outbox.last_seq
        lot_a = register.where(LOT_A)
        assert spans(lot_a) == [("dock", at(10, 1), at(11, 2)), ("cold-1", at(11, 0), None)]
        # started by case-a1-1001's receiving scan, ended by case-a1-1003's put-away scan
        assert [(p.seq, p.until_seq) for p in lot_a] == [(dock[1], cold[2]), (cold[0], None)]
        assert spans(register.where(LOT_B)) == [
            ("dock", at(10, 5), at(11, 4)),
            ("cold-1", at(11, 3), None),
        ]
        assert spans(register.where(A1002)) == [
            ("dock", at(10, 2), at(11, 1)),
            ("cold-1", at(11, 1), None),
        ]
        assert spans(register.where(PALLET_1)) == [("dock", at(10, 0), None)]

        now_dock = register.in_zone("dock")
        assert [(p.kind, p.identifier) for p in now_dock] == [
            ("sscc", PALLET_1),
            ("sscc", PALLET_2),
        ]
        now_cold = register.in_zone("cold-1")
        assert [(p.kind, p.identifier) for p in now_cold] == [
            ("item", A1001),
            ("item", A1002),
            ("item", A1003),
            ("item", B2001),
            ("item", B2002),
            ("lot", LOT_A),
            ("lot", LOT_B),
        ]
        at_1030 = {p.identifier for p in register.in_zone("dock", at(10, 30))}
        assert at_1030 == {PALLET_1, PALLET_2, LOT_A, LOT_B, A1001, A1002, A1003, B2001, B2002}
        # 11:01:30: two of lot A's cases are in the cold room, the third still at the dock
        mid = register.in_zone("dock", at(11, 1, 30))
        assert {p.identifier for p in mid if p.kind != "sscc"} == {
            LOT_A,
            A1003,
            LOT_B,
            B2001,
            B2002,
        }
        assert {p.identifier for p in register.in_zone("cold-1", at(11, 1, 30))} == {
            LOT_A,
            A1001,
            A1002,
        }
        assert register.in_zone("cold-1", at(10, 59)) == []

        assert register.present_between("cold-1", at(10, 0), at(10, 59)) == []
        assert register.present_between("cold-1", at(11, 0), at(12, 0)) == [LOT_A, LOT_B]
        # lot A left the dock at 11:02 (present up to then, not at it); lot B at 11:04
        assert register.present_between("dock", at(11, 2), at(11, 10)) == [
            PALLET_1,
            PALLET_2,
            LOT_B,
        ]
        assert register.present_between("dock", at(9, 0), at(10, 0)) == [PALLET_1]
        assert register.where("LOT-A1") == lot_a  # a bare lot number
        assert register.where("NO-SUCH-LOT") == []
    finally:
        register.close()


def test_shipping_ends_presence_and_the_lot_goes_with_its_last_case(
    site: Site, tmp_path: Path
) -> None:
    receive_and_put_away(site)
    ship = [site.scan("ship", line, at(12, i)) for i, line in enumerate(_case_lines("a1"))]
    register = synced(site, tmp_path / "lots.db")
    try:
        assert spans(register.where(A1001))[-1] == ("cold-1", at(11, 0), at(12, 0))
        assert register.where(A1001)[-1].until_seq == ship[0]
        lot_a = register.where(LOT_A)
        assert lot_a[-1].until == at(12, 2)  # the third case shipped
        assert all(p.until is not None for p in lot_a)
        assert {p.identifier for p in register.in_zone("cold-1")} == {LOT_B, B2001, B2002}
        assert register.present_between("cold-1", at(12, 3), at(13, 0)) == [LOT_B]
    finally:
        register.close()


def _case_lines(prefix: str) -> list[bytes]:
    return [
        (s.symbology or "").encode() + s.data
        for s in PUT_AWAY
        if s.name.startswith(f"case-{prefix}")
    ]


def test_rfid_reads_move_items_and_their_lots_once_a_barcode_told_the_lot(
    site: Site, tmp_path: Path
) -> None:
    receive_and_put_away(site)
    tags = {t.name: t.epc_hex for t in DOCK_PORTAL_TAGS}
    back = site.tag("portal", tags["case-b7-2001"], at(12, 0))
    unknown = REFERENCE_TAGS[0].epc_hex  # (01)80614141123458(21)6789, never barcode-scanned
    site.tag("portal", unknown, at(12, 1))
    site.tag("cold-portal", tags["pallet-1"], at(12, 2))
    register = synced(site, tmp_path / "lots.db")
    try:
        assert spans(register.where(B2001))[-1] == ("dock", at(12, 0), None)
        lot_b = register.where(LOT_B)
        assert spans(lot_b)[-1] == ("dock", at(12, 0), None)
        assert lot_b[-1].seq == back
        assert spans(lot_b)[1] == ("cold-1", at(11, 3), None)  # case 2002 is still there
        assert spans(register.where("urn:epc:id:sscc:0614141.3000000101")) == [
            ("dock", at(10, 0), at(12, 2)),
            ("cold-1", at(12, 2), None),
        ]
        item = "(01)80614141123458(21)6789"
        assert spans(register.where(item)) == [("dock", at(12, 1), None)]
        # an item of unknown lot is named by itself, so nothing present goes unnamed
        assert register.present_between("dock", at(12, 0), at(12, 5)) == [
            PALLET_1,
            PALLET_2,
            LOT_B,
            item,
        ]
    finally:
        register.close()


def test_lot_level_scans_move_the_lots_unserialised_stock(site: Site, tmp_path: Path) -> None:
    receive_and_put_away(site)
    site.scan("dock", b"]C1011061414100001910LOT-A1", at(13, 0))  # lot A stock at the dock
    site.scan("dock", b"]C1011061414100003310LOT-C3", at(13, 1))
    site.scan("cold", b"]C1011061414100003310LOT-C3", at(13, 2))  # all of lot C3 moves
    register = synced(site, tmp_path / "lots.db")
    try:
        lot_c = "(01)10614141000033(10)LOT-C3"
        assert spans(register.where(lot_c)) == [
            ("dock", at(13, 1), at(13, 2)),
            ("cold-1", at(13, 2), None),
        ]
        # lot A: at the dock again (stock) and still in the cold room (its three cases)
        open_a = [p.zone for p in register.where(LOT_A) if p.until is None]
        assert sorted(open_a) == ["cold-1", "dock"]
        # stock moving does not end the presence its cases keep up
        site.scan("cold", b"]C1011061414100001910LOT-A1", at(13, 3))
        register.sync(site.outbox)
        assert [p.zone for p in register.where(LOT_A) if p.until is None] == ["cold-1"]
        assert spans(register.where(LOT_A))[1] == ("cold-1", at(11, 0), None)
        assert all(p.kind != "stock" for p in register.in_zone("cold-1"))
    finally:
        register.close()


def test_rejected_and_unidentified_scans_change_nothing(site: Site, tmp_path: Path) -> None:
    site.scan("dock", b"]d20110614141000019172703311", at(10, 0))  # truncated: scan.error
    site.scan("dock", b"]C0PICK-TOTE-0042", at(10, 1))  # not GS1: no EPCIS event
    site.scan("dock", b"]C10110614141000019", at(10, 2))  # a GTIN alone: no lot, no item
    site.tag("portal", "E280117000000208A1B2C3D4", at(10, 3))  # unknown EPC header
    register = synced(site, tmp_path / "lots.db")
    try:
        assert register.in_zone("dock") == []
        assert register.last_seq == site.outbox.last_seq
    finally:
        register.close()


def test_a_clock_step_back_never_ends_a_presence_before_it_began(
    site: Site, tmp_path: Path
) -> None:
    case = (DOCK_RECEIVING[1].symbology or "").encode() + DOCK_RECEIVING[1].data
    site.scan("dock", case, at(10, 5))
    site.scan("cold", case, at(10, 3))  # sealed later, stamped earlier
    register = synced(site, tmp_path / "lots.db")
    try:
        assert spans(register.where(A1001)) == [
            ("dock", at(10, 5), at(10, 5)),
            ("cold-1", at(10, 3), None),
        ]
    finally:
        register.close()


# --------------------------------------------------------------------------- identifiers


@pytest.mark.parametrize(
    ("text", "kind", "canonical"),
    [
        (LOT_A, "lot", LOT_A),
        ("011061414100001910LOT-A1", "lot", LOT_A),
        ("(01)10614141000019(17)270331(10)LOT-A1", "lot", LOT_A),
        ("]d201106141410000191727033110LOT-A1", "lot", LOT_A),
        ("urn:epc:class:lgtin:0614141.100001.LOT-A1", "lot", LOT_A),
        ("https://id.gs1.org/01/10614141000019/10/LOT-A1", "lot", LOT_A),
        ("LOT-A1", "lot_number", "LOT-A1"),
        ("306141410000001010", "sscc", PALLET_1),
        ("(00)306141410000001010", "sscc", PALLET_1),
        ("00306141410000001010", "sscc", PALLET_1),
        ("urn:epc:id:sscc:0614141.3000000101", "sscc", PALLET_1),
        (A1001, "item", A1001),
        ("0110614141000019211001", "item", A1001),
        ("(01)10614141000019(10)LOT-A1(21)1001", "item", A1001),
        ("0110614141000019<GS>10LOT-A1<GS>211001", "item", A1001),
        ("urn:epc:id:sgtin:0614141.100001.1001", "item", A1001),
        ("urn:epc:id:sgtin:0614141.812345.32a%2Fb", "item", "(01)80614141123458(21)32a/b"),
        ("  (00)306141410000001010\n", "sscc", PALLET_1),
    ],
)
def test_identifier_forms(text: str, kind: str, canonical: str) -> None:
    identity = parse_identifier(text)
    assert (identity.kind, identity.id) == (kind, canonical)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("306141410000001011", "check digit"),
        ("(01)10614141000018(10)LOT-A1", "check digit"),
        ("(01)10614141000019", "GTIN alone"),
        ("(15)210526(10)0329", "names no GTIN or SSCC"),
        ("urn:epc:id:sgln:0614141.00001.0", "not an EPC URI"),
        ("urn:epc:id:sgtin:0614141.1000011.1001", "not an EPC URI"),
        ("LOT A1", "neither a GS1 identifier nor a lot number"),
        ("X" * 21, "neither a GS1 identifier nor a lot number"),
    ],
)
def test_bad_identifiers_say_why(text: str, why: str) -> None:
    with pytest.raises(BadIdentifier, match=why):
        parse_identifier(text)


# --------------------------------------------------------------------------- the chain is the truth


def test_replay_after_clean_stop_and_after_a_crash_equals_a_rebuild(
    site: Site, tmp_path: Path
) -> None:
    site.script("dock", DOCK_RECEIVING, at(10, 0))
    half = site.outbox.last_seq
    incremental = tmp_path / "incremental.db"
    register = synced(site, incremental)
    # A crash loses what the register committed after this moment: keep a copy of it.
    crashed = tmp_path / "crashed.db"
    with sqlite3.connect(crashed) as copy:
        register._db.backup(copy)
    site.script("cold", PUT_AWAY, at(11, 0))
    register.sync(site.outbox)
    site.seal([reading(i) for i in range(5)])  # the tail holds no custody record
    register.apply([], site.outbox.last_seq)  # what the agent writes at a clean stop
    register.close()

    reopened = LotRegister.open(incremental)
    assert reopened.last_seq == site.outbox.last_seq
    assert reopened.sync(site.outbox) == 0  # nothing to replay after a clean stop
    reopened.close()

    after_crash = LotRegister.open(crashed)
    assert after_crash.last_seq == half
    assert after_crash.sync(site.outbox) == len(PUT_AWAY)
    after_crash.close()

    rebuilt = synced(site, tmp_path / "rebuilt.db")
    rebuilt.close()
    assert table(incremental) == table(crashed) == table(tmp_path / "rebuilt.db")
    assert any(row[0] == LOT_A for row in table(incremental))


def test_applying_the_same_records_twice_changes_nothing(site: Site, tmp_path: Path) -> None:
    receive_and_put_away(site)
    register = synced(site, tmp_path / "lots.db")
    before = table(tmp_path / "lots.db")
    records = [orjson.loads(body) for _seq, body in site.outbox.pending(0, 1000)]
    assert register.apply(records, site.outbox.last_seq) == 0
    register.close()
    assert table(tmp_path / "lots.db") == before


def test_a_register_of_another_chain_or_ahead_of_the_buffer_is_rebuilt(
    tmp_path: Path, signing_key: tuple[Path, Ed25519PrivateKey], caplog: Any
) -> None:
    first = Site(tmp_path / "buffer.db", signing_key[1])
    first.script("dock", DOCK_RECEIVING[:3], at(10, 0))
    restored = tmp_path / "restored.db"  # a backup of the buffer taken now (same chain)
    with sqlite3.connect(restored) as copy:
        first.outbox._db.backup(copy)
    first.script("cold", PUT_AWAY[:1], at(11, 0))
    register = synced(first, tmp_path / "lots.db")
    assert spans(register.where(A1001))[-1][0] == "cold-1"
    first.outbox.close()

    backup = Outbox(restored, GW)
    try:
        with caplog.at_level(logging.WARNING, logger="gxpgate.agent.custody.lots"):
            register.sync(backup)
        assert "lots.rebuild" in caplog.text
        assert register.last_seq == backup.last_seq
        assert spans(register.where(A1001)) == [("dock", at(10, 1), None)]
    finally:
        backup.close()

    other = Site(tmp_path / "other.db", signing_key[1])  # a new buffer: a new chain
    try:
        other.script("cold", PUT_AWAY[3:4], at(14, 0))
        register.sync(other.outbox)
        assert register.chain == other.outbox.chain
        assert register.where(A1001) == []
        assert spans(register.where(B2001)) == [("cold-1", at(14, 0), None)]
    finally:
        register.close()
        other.outbox.close()


def test_a_rebuild_from_a_pruned_buffer_says_it_is_incomplete(
    site: Site, tmp_path: Path, caplog: Any
) -> None:
    receive_and_put_away(site)
    site.outbox.set_acked_through(5, now=0.0)
    assert site.outbox.prune(retention_secs=60, now=120.0) == 5
    with caplog.at_level(logging.WARNING, logger="gxpgate.agent.custody.lots"):
        register = synced(site, tmp_path / "lots.db")
    try:
        assert "lots.replay_incomplete" in caplog.text
        assert register.incomplete_before == 6
        assert register.where(PALLET_1) == []  # its record was pruned
        assert [p.zone for p in register.where(LOT_A) if p.until is None] == ["cold-1"]
    finally:
        register.close()


def test_operators_never_create_a_register(tmp_path: Path) -> None:
    with pytest.raises(RegisterMissing, match="no lot register yet"):
        LotRegister.open_existing(tmp_path / "lots.db")
    assert not (tmp_path / "lots.db").exists()
    assert lots_path_for(tmp_path / "var" / "buffer.db") == tmp_path / "var" / "lots.db"


def test_feed_applies_commits_off_the_loop_and_checkpoints_on_exit(
    site: Site, tmp_path: Path
) -> None:
    path = tmp_path / "lots.db"
    site.script("dock", DOCK_RECEIVING[:2], at(10, 0))  # before the agent starts: replayed

    async def main() -> None:
        register = LotRegister.open(path)
        async with LotFeed(register, site.outbox) as feed:
            assert spans(register.where(A1001)) == [("dock", at(10, 1), None)]
            recorder = Recorder(
                site.outbox, site.sealer, listeners=[feed.on_commit], commit_interval_secs=0.01
            )
            task = asyncio.create_task(recorder.run())
            builder = site.builders["cold"]
            line = (PUT_AWAY[0].symbology or "").encode() + PUT_AWAY[0].data
            for fact in builder.facts(BarcodeRead(at(11, 0), decode_scan(line, at(11, 0), None))):
                await recorder.put(fact)
            for i in range(20):
                await recorder.put(reading(i))
            recorder.close()
            await task
        assert feed.failed is None

    asyncio.run(main())
    reopened = LotRegister.open_existing(path)
    try:
        assert reopened.last_seq == site.outbox.last_seq  # the readings' tail, checkpointed
        assert spans(reopened.where(A1001)) == [
            ("dock", at(10, 1), at(11, 0)),
            ("cold-1", at(11, 0), None),
        ]
    finally:
        reopened.close()


def test_a_file_that_is_not_a_register_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "lots.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE records(seq INTEGER)")
    with pytest.raises(LotRegisterError, match="not a lot register"):
        LotRegister.open(other)
    with pytest.raises(LotRegisterError, match="not a lot register"):
        LotRegister.open_existing(other)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(LotRegisterError, match=r"garbage\.db"):
        LotRegister.open(garbage)
