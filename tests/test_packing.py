"""Schema 4: records packed into columns at rest, and every export the exact sealed bytes."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gxpgate.agent.evidence import RECORD_FIELDS, generate_key_file, verify_lines
from gxpgate.agent.recording.sealing import Fact, Sealer
from gxpgate.buffer import Outbox, Row, packing
from gxpgate.buffer.packing import Names
from gxpgate.simulators.modbus_sim import ModbusSimulator

from .running import Running, exported, until
from .sealed import as_schema, fill, reading

GW = "gw-test"


def whole_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        (count,) = conn.execute("SELECT count(*) FROM records WHERE body IS NOT NULL").fetchone()
    conn.close()
    return int(count)


def test_the_layout_knows_the_contract_s_fields_in_the_sealer_s_order() -> None:
    assert packing.RECORD_FIELDS == RECORD_FIELDS


texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.floats(allow_nan=False,
        allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
moments = st.datetimes(
    min_value=datetime(1999, 1, 1), max_value=datetime(2199, 1, 1), timezones=st.just(UTC)
)
facts = st.builds(
    Fact,
    kind=st.sampled_from(["reading", "custody", "alarm", "audit"]),
    at=moments,
    data=st.dictionaries(texts, json_values, max_size=4),
    zone=st.none() | texts,
    device=st.none() | texts,
    point=st.none() | texts,
    value=st.none() | st.integers(-(2**53) + 1, 2**53 - 1) | st.floats(allow_nan=False, width=64),
    unit=st.none() | st.sampled_from(["Cel", "%", "1"]),
    quality=st.none() | st.sampled_from(["good", "uncertain", "bad"]),
    src_at=st.none() | moments,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(facts, min_size=1, max_size=6), min_size=1, max_size=4))
def test_every_record_exports_as_the_exact_bytes_sealed(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[Fact]]
) -> None:
    folder = tmp_path_factory.mktemp("b")
    key = generate_key_file(folder / "k.pem")
    outbox = Outbox(folder / "b.db", GW)
    sealer = Sealer(key, GW, outbox.chain)
    sealed: list[bytes] = []
    try:
        for batch in batches:
            rows = sealer.seal(batch, outbox.last_seq, outbox.last_hash)
            outbox.append(rows)
            sealed += [row.body for row in rows]
        assert list(outbox.export()) == sealed
        assert [body for _, body in outbox.pending(0, 1000)] == sealed
    finally:
        outbox.close()
    reopened = Outbox(folder / "b.db", GW)  # names read back from the file, not the cache
    try:
        assert list(reopened.export()) == sealed
        assert verify_lines(reopened.export(), [key.public_key()]).ok
    finally:
        reopened.close()


def test_readings_are_packed_and_take_a_fifth_of_the_bytes(tmp_path: Path) -> None:
    key = generate_key_file(tmp_path / "k.pem")
    outbox = fill(tmp_path / "b.db", key, 5000)
    used = outbox.used_bytes()
    outbox.close()
    assert whole_rows(tmp_path / "b.db") == 0
    # Kept whole, each was ~700 B (bench_footprint); packed, the signature and hash (96 B raw)
    # are most of what is left.
    assert used / 5000 < 180


def test_a_record_the_layout_does_not_know_is_kept_whole_and_exported_as_sealed(
    tmp_path: Path,
) -> None:
    key = generate_key_file(tmp_path / "k.pem")
    outbox = fill(tmp_path / "b.db", key, 2)
    sealer = Sealer(key, GW, outbox.chain)
    (row,) = sealer.seal([reading(2)], outbox.last_seq, outbox.last_hash)
    # A newer format's field, or bytes another serialiser wrote: nothing packs it exactly.
    record: dict[str, Any] = {**orjson.loads(row.body), "extra": [1, 2]}
    odd = [Row(row.seq, row.at, row.kind, row.hash, orjson.dumps(record))]
    spaced = sealer.seal([reading(3)], 3, row.hash)
    spaced = [Row(r.seq, r.at, r.kind, r.hash, r.body.replace(b",", b", ")) for r in spaced]
    outbox.append(odd)
    outbox.append(spaced)
    exported = list(outbox.export())
    outbox.close()
    assert exported[2:] == [odd[0].body, spaced[0].body]
    assert whole_rows(tmp_path / "b.db") == 2


def test_the_oldest_record_kept_after_pruning_still_names_its_predecessor(
    tmp_path: Path,
) -> None:
    key = generate_key_file(tmp_path / "k.pem")
    outbox = fill(tmp_path / "b.db", key, 10)
    sealed = list(outbox.export())
    outbox.set_acked_through(6, now=0)
    assert outbox.prune(0, now=1) == 6
    outbox.close()
    reopened = Outbox(tmp_path / "b.db", GW)
    kept = list(reopened.export())
    assert [s for _, s in reopened.pending(0, 100)] == kept
    reopened.close()
    assert kept == sealed[6:]
    assert orjson.loads(kept[0])["prev"] == orjson.loads(sealed[5])["hash"]


def test_a_schema_3_buffer_is_packed_when_opened_and_exports_the_same_bytes(
    tmp_path: Path,
) -> None:
    key = generate_key_file(tmp_path / "k.pem")
    outbox = fill(tmp_path / "b.db", key, 50)
    outbox.set_acked_through(20, now=0)
    outbox.prune(0, now=1)  # a file pruned before the upgrade: its first record is not seq 1
    sealed = list(outbox.export())
    outbox.close()
    as_schema(tmp_path / "b.db", 3)
    with sqlite3.connect(tmp_path / "b.db") as conn:  # and one body damaged on the old layout
        conn.execute("UPDATE records SET body = CAST('not json' AS BLOB) WHERE seq = 30")
    conn.close()
    sealed[30 - 21] = b"not json"
    migrated = Outbox(tmp_path / "b.db", GW)
    assert list(migrated.export()) == sealed
    assert migrated.last_hash == orjson.loads(sealed[-1])["hash"]
    migrated.close()
    assert whole_rows(tmp_path / "b.db") == 1  # the damaged one, as it was
    with sqlite3.connect(tmp_path / "b.db") as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    conn.close()
    assert version == ("4",)
    assert "records_v3" not in tables


def test_a_row_that_cannot_be_rebuilt_exports_as_a_line_that_says_so(tmp_path: Path) -> None:
    key = generate_key_file(tmp_path / "k.pem")
    fill(tmp_path / "b.db", key, 6).close()
    with sqlite3.connect(tmp_path / "b.db") as conn:
        conn.execute("UPDATE records SET zone = 999 WHERE seq = 3")  # no such name
        conn.execute("UPDATE records SET data = x'05ff' WHERE seq = 4")  # no such dictionary
    conn.close()
    outbox = Outbox(tmp_path / "b.db", GW)
    lines = list(outbox.export())
    pending = [body for _, body in outbox.pending(0, 100)]
    outbox.close()
    assert pending == lines
    assert len(lines) == 6
    assert orjson.loads(lines[2]) == {"seq": 3, "damaged": "name 999 is not in the names table"}
    assert orjson.loads(lines[3])["damaged"].startswith("data is packed with dictionary 5")
    verdict = verify_lines(lines, [key.public_key()])
    assert not verdict.ok
    assert verdict.bad_seq == 3, verdict.summary()


def test_a_new_name_from_a_write_that_failed_is_not_kept() -> None:
    names = Names([(1, "reading"), (2, "Cel")])
    assert names.id_for("Cel") == 2
    assert names.id_for("zone-a") == 3
    assert names.new() == [(3, "zone-a")]
    names.forget()  # the transaction rolled back
    assert names.known("zone-a") is None
    assert names.id_for("zone-b") == 3
    names.commit()
    assert names.known("zone-b") == 3
    assert names.id_for("zone-c") == 4


def test_times_come_back_to_the_microsecond_across_seconds_and_centuries() -> None:
    start = datetime(1999, 12, 31, 23, 59, 59, 999_998, tzinfo=UTC)
    for step in range(6):
        moment = start + timedelta(microseconds=step)
        text = moment.isoformat(timespec="microseconds")[:-6] + "Z"
        assert packing.time_text(packing.micros(text)) == text
    moment = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    assert packing.micros("2026-11-21T10:00:00.123456Z") == int(moment.timestamp()) * 10**6 + 123456


def test_the_agent_seals_the_migration_once_whoever_opened_the_buffer_first(
    tmp_path: Path, write_config, signing_key
) -> None:
    async def main() -> None:
        async with ModbusSimulator() as sim:
            config = write_config(sim.port)
            async with Running(config) as agent:
                await until(lambda: agent.outbox.last_seq >= 20, what="records before")
            before = [orjson.dumps(r) for r in exported(config)]
            as_schema(tmp_path / "buffer.db", 3)
            assert [orjson.dumps(r) for r in exported(config)] == before  # migrates it
            for _ in (1, 2):
                async with Running(config) as agent:
                    goal = agent.outbox.last_seq + 20
                    await until(lambda goal=goal: agent.outbox.last_seq >= goal, what="records")
        records = exported(config)
        assert [orjson.dumps(r) for r in records[: len(before)]] == before
        migrated = [r["data"] for r in records if r["data"].get("event") == "buffer_migrated"]
        assert migrated == [
            {"event": "buffer_migrated", "from_schema": 3, "to_schema": 4,
             "records": len(before), "kept_whole": 0},
        ]  # fmt: skip
        lines = [orjson.dumps(r) for r in records]
        assert verify_lines(lines, [signing_key[1].public_key()]).ok

    asyncio.run(main())


def test_an_operator_command_shows_the_migration_on_stderr_and_exports_unchanged(
    tmp_path: Path, write_config, signing_key
) -> None:
    config = write_config()
    outbox = fill(tmp_path / "buffer.db", signing_key[1], 30)
    sealed = list(outbox.export())
    outbox.close()
    as_schema(tmp_path / "buffer.db", 3)
    # A process of its own, as an operator runs it: no logging set up by other tests.
    result = subprocess.run(
        [sys.executable, "-m", "gxpgate", "export", "--config", str(config), "--out", "-"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == sealed
    assert b"buffer.migrating" in result.stderr
    assert b"buffer.migrated records=30 kept_whole=0" in result.stderr
