"""The SQLite outbox: durability across kill -9, refusal of damaged files, retention, a model."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gxpgate.agent.evidence import ChainVerifier, generate_key_file, verify_lines
from gxpgate.agent.recording.sealing import Sealer
from gxpgate.buffer import BufferCorrupt, BufferMismatch, Outbox

from .sealed import as_schema, fill, reading

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from gxpgate.agent.evidence import load_private_key
    from gxpgate.agent.recording.sealing import Sealer
    from buffer import Outbox
    from tests.sealed import reading

    outbox = Outbox(Path(sys.argv[1]), "gw-test")
    sealer = Sealer(load_private_key(Path(sys.argv[2])), "gw-test", outbox.chain)
    i = outbox.last_seq
    while True:
        batch = [reading(i + n) for n in range(50)]
        outbox.append(sealer.seal(batch, outbox.last_seq, outbox.last_hash))
        i += 50
        print(outbox.last_seq, flush=True)
    """
)


def test_kill_9_at_any_instant_loses_no_committed_record(tmp_path: Path) -> None:
    db, key_path = tmp_path / "b.db", tmp_path / "k.pem"
    key = generate_key_file(key_path)
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    reported = 0
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), str(key_path)],
            stdout=subprocess.PIPE, env=env, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        for _ in range(rng.randint(1, 40)):
            line = proc.stdout.readline()
            if line:
                reported = int(line)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        outbox = Outbox(db, "gw-test")  # opens: integrity and sequence checks pass
        assert outbox.last_seq >= reported, "a record reported as committed was lost"
        outbox.close()
    outbox = Outbox(db, "gw-test")
    verdict = verify_lines(outbox.export(), [key.public_key()])
    outbox.close()
    assert verdict.ok, verdict.summary()
    assert verdict.first_seq == 1
    assert verdict.records >= reported


def test_damaged_file_is_refused_not_restarted(tmp_path: Path, signing_key) -> None:
    db = tmp_path / "b.db"
    fill(db, signing_key[1], 500).close()
    data = bytearray(db.read_bytes())
    for offset in range(4096, len(data), 4096):  # scribble over every page but the header
        data[offset + 100 : offset + 400] = os.urandom(300)
    db.write_bytes(bytes(data))
    with pytest.raises(BufferCorrupt, match=str(db)):
        Outbox(db, "gw-test")
    assert db.read_bytes() == bytes(data), "a damaged buffer must be left as it was"

    not_db = tmp_path / "x.db"
    not_db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BufferCorrupt, match=r"cannot open|damaged"):
        Outbox(not_db, "gw-test")

    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t(x)").connection.close()
    with pytest.raises(BufferCorrupt, match="not a gxpgate buffer"):
        Outbox(other, "gw-test")


def test_gap_in_sequence_is_refused(tmp_path: Path, signing_key) -> None:
    db = tmp_path / "b.db"
    fill(db, signing_key[1], 10).close()
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM records WHERE seq = 5")
    with pytest.raises(BufferCorrupt, match="gap"):
        Outbox(db, "gw-test")


def test_buffer_of_another_gateway_is_refused(tmp_path: Path, signing_key) -> None:
    db = tmp_path / "b.db"
    fill(db, signing_key[1], 3).close()
    with pytest.raises(BufferMismatch, match="gw-test"):
        Outbox(db, "gw-other")


def test_chain_id_minted_once_and_kept(tmp_path: Path, signing_key) -> None:
    db = tmp_path / "b.db"
    first = fill(db, signing_key[1], 3)
    chain = first.chain
    first.close()
    again = Outbox(db, "gw-test")
    assert again.chain == chain
    assert again.last_seq == 3
    again.close()
    assert Outbox(tmp_path / "new.db", "gw-test").chain != chain


def test_append_refuses_a_sequence_that_does_not_continue(tmp_path: Path, signing_key) -> None:
    outbox = fill(tmp_path / "b.db", signing_key[1], 3)
    sealer = Sealer(signing_key[1], "gw-test", outbox.chain)
    rows = sealer.seal([reading(1)], 1, None)
    with pytest.raises(ValueError, match="does not continue"):
        outbox.append(rows)
    outbox.close()


def test_retention_counts_from_delivery_and_spares_undelivered(tmp_path: Path, signing_key) -> None:
    outbox = fill(tmp_path / "b.db", signing_key[1], 100)
    outbox.set_acked_through(40, now=1000.0)
    outbox.set_acked_through(70, now=2000.0)
    assert outbox.prune(retention_secs=500, now=1400.0) == 0  # nothing delivered long enough
    assert outbox.prune(retention_secs=500, now=1600.0) == 40
    assert outbox.prune(retention_secs=500, now=2600.0) == 30
    status = outbox.status()
    assert (status.records, status.pending, status.acked_through) == (30, 30, 70)
    outbox.set_acked_through(100, now=3000.0)
    assert outbox.prune(retention_secs=0, now=3000.0) == 29  # the newest record always stays
    assert outbox.status().records == 1
    outbox.close()


class OutboxModel(RuleBasedStateMachine):
    """Random appends, acknowledgements (also backwards), prunes and reopens keep the rules."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "b.db"
        self.key = generate_key_file(Path(self.dir.name) / "k.pem")
        self.now = 0.0
        self.acked = 0
        self.ever_acked = 0
        self.delivered_at: dict[int, float] = {}

    @initialize()
    def open(self) -> None:
        self.outbox = Outbox(self.path, "gw-test")
        self.sealer = Sealer(self.key, "gw-test", self.outbox.chain)

    @rule(n=st.integers(1, 30))
    def append(self, n: int) -> None:
        facts = [reading(self.outbox.last_seq + i) for i in range(n)]
        self.outbox.append(self.sealer.seal(facts, self.outbox.last_seq, self.outbox.last_hash))

    @rule(fraction=st.floats(0, 1))
    def ack(self, fraction: float) -> None:
        through = int(self.outbox.last_seq * fraction)
        self.now += 10
        self.outbox.set_acked_through(through, now=self.now)
        self.acked = through
        self.ever_acked = max(self.ever_acked, through)

    @rule(retention=st.sampled_from([0.0, 15.0, 1e9]))
    def prune(self, retention: float) -> None:
        self.now += 5
        self.outbox.prune(retention, now=self.now)

    @rule()
    def reopen(self) -> None:
        self.outbox.close()
        self.open()

    @invariant()
    def nothing_undelivered_is_lost_and_chain_is_whole(self) -> None:
        if not hasattr(self, "outbox"):
            return
        bodies = list(self.outbox.export())
        st_ = self.outbox.status()
        assert st_.acked_through == self.acked
        if st_.last_seq:
            # every record the service never acknowledged, and the newest, are present (a
            # cursor moved back below pruned records is the service's loss, not the buffer's)
            first_kept = st_.last_seq - len(bodies) + 1
            assert first_kept <= self.ever_acked + 1
            assert first_kept <= st_.last_seq
            verifier = ChainVerifier.for_public_keys([self.key.public_key()])
            for line in bodies:
                record = orjson.loads(line)
                if verifier.checked == 0:
                    verifier.last_seq, verifier.last_hash = record["seq"] - 1, record["prev"]
                verifier.check(record)
            assert verifier.last_seq == st_.last_seq

    def teardown(self) -> None:
        if hasattr(self, "outbox"):
            self.outbox.close()
        self.dir.cleanup()


TestOutboxModel = OutboxModel.TestCase
TestOutboxModel.settings = settings(max_examples=15, stateful_step_count=12, deadline=None)


def test_state_commits_with_its_records_or_alone_never_with_a_failed_append(
    tmp_path: Path,
) -> None:
    key = generate_key_file(tmp_path / "k.pem")
    outbox = Outbox(tmp_path / "b.db", "gw-test")
    sealer = Sealer(key, "gw-test", outbox.chain)
    rows = sealer.seal([reading(1)], outbox.last_seq, outbox.last_hash)
    outbox.append(rows, {"source:logger-1": '{"index": 7}'})
    assert outbox.state("source:logger-1") == '{"index": 7}'
    outbox.append([], {"rules:through": "1"})  # a checkpoint of derived state, alone
    assert outbox.state("rules:through") == "1"
    outbox.append([], {"rules:w:a.b:3": "x", "rules:w:a.b:2": None})  # None deletes
    outbox.append([], {"rules:w:a.b:3": None, "rules:w:a.b:4": "y"})
    assert outbox.states("rules:w:") == {"rules:w:a.b:4": "y"}
    assert outbox.last_seq == 1
    stale = sealer.seal([reading(2)], outbox.last_seq - 1, None)  # does not continue the chain
    with pytest.raises(ValueError, match="does not continue"):
        outbox.append(stale, {"source:logger-1": '{"index": 9}'})
    outbox.close()
    reopened = Outbox(tmp_path / "b.db", "gw-test")
    assert reopened.state("source:logger-1") == '{"index": 7}'
    assert reopened.state("source:other") is None
    reopened.close()


def test_schema_1_buffer_gains_the_state_table(tmp_path: Path) -> None:
    key = generate_key_file(tmp_path / "k.pem")
    fill(tmp_path / "b.db", key, 3).close()
    as_schema(tmp_path / "b.db", 1)  # what a 0.1 agent left behind
    migrated = Outbox(tmp_path / "b.db", "gw-test")
    assert migrated.last_seq == 3
    assert migrated.state("anything") is None
    migrated.close()
    with sqlite3.connect(tmp_path / "b.db") as conn:
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    conn.close()
    assert version == ("4",)  # on through every migration
