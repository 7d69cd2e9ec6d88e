"""One shape for a committed record: what the recorder's listeners get live equals what a
replay from the outbox gives, field for field, and it reads as the record itself."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gxpgate.agent.recording.sealing import Committed, Fact, Sealer
from gxpgate.buffer import Outbox

from .sealed import T0, reading


def _facts() -> list[Fact]:
    odd = reading(1)
    odd.value = math.inf  # sealed as bad: the live view must say what the record says
    flagged = reading(2)
    flagged.src_at = T0 - timedelta(milliseconds=250)
    flagged.data = {"clock_unsynchronized": True}
    return [
        reading(0), odd, flagged,
        Fact("audit", T0, {"event": "device_offline", "error": "timeout"}, device="probe-1"),
        Fact("custody", T0, {"epcis": {"type": "ObjectEvent"}}, zone="cold-1"),
    ]  # fmt: skip


def test_live_and_replayed_views_are_the_same(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "buffer.db", "gw-test")
    sealer = Sealer(Ed25519PrivateKey.generate(), "gw-test", outbox.chain)
    facts = _facts()
    rows = sealer.seal(facts, outbox.last_seq, outbox.last_hash)
    outbox.append(rows)
    live = [Committed.live(fact, row) for fact, row in zip(facts, rows, strict=True)]
    replayed = [Committed.stored(seq, body) for seq, body in outbox.pending(0, 100)]
    assert live == replayed
    for view, row in zip(live, rows, strict=True):
        record = orjson.loads(row.body)
        assert dict(view) == {k: record[k] for k in view}  # it reads as the record
        assert view.record() == record
    assert (live[1].value, live[1].quality) == (None, "bad")
    assert live[2].src_secs == (T0 - timedelta(milliseconds=250)).timestamp()
    assert live[2]["src_at"] == "2026-11-21T09:59:59.750000Z"


def test_the_outbox_replays_one_kind_from_its_column(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "buffer.db", "gw-test")
    sealer = Sealer(Ed25519PrivateKey.generate(), "gw-test", outbox.chain)
    # A record whose data carries a "kind" of its own must not pass for a custody record (the
    # alarm replay used to sniff the bodies for '"kind":"custody"').
    decoy = Fact("audit", T0, {"event": "scan_invalid", "kind": "custody"}, device="dock-1")
    outbox.append(sealer.seal([*_facts(), decoy], 0, None))
    custody = [Committed.stored(seq, body) for seq, body in outbox.pending(0, 100, "custody")]
    assert [(c.seq, c.kind) for c in custody] == [(5, "custody")]
