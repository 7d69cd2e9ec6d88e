"""Helpers for tests that need real sealed records."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gxpgate.agent.recording.sealing import Fact, Sealer
from gxpgate.buffer import Outbox

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def reading(i: int, value: float = 5.0) -> Fact:
    return Fact(
        "reading", T0 + timedelta(seconds=i), zone="cold-1", device="probe-1",
        point="temperature", value=value + i / 100, unit="Cel", quality="good",
    )  # fmt: skip


def fill(path: Path, key: Ed25519PrivateKey, count: int, gw: str = "gw-test") -> Outbox:
    outbox = Outbox(path, gw)
    sealer = Sealer(key, gw, outbox.chain)
    batch = [reading(i) for i in range(count)]
    outbox.append(sealer.seal(batch, outbox.last_seq, outbox.last_hash))
    return outbox


def as_schema(path: Path, version: int) -> None:
    """Turn a closed buffer into what an agent of schema ``version`` (1 to 3) left behind:
    each record's body whole in its row, the layout before schema 4 packed them."""
    gw = _meta(path, "gw")
    outbox = Outbox(path, gw)
    rows = [(seq, body) for seq, body in outbox.pending(0, 10**9)]
    outbox.close()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("DROP TABLE records")
        conn.execute("DROP TABLE names")
        conn.execute(
            "CREATE TABLE [records] ([seq] INTEGER PRIMARY KEY, [at] TEXT NOT NULL, "
            "[kind] TEXT NOT NULL, [hash] TEXT NOT NULL, [body] BLOB NOT NULL)"
        )
        for seq, body in rows:
            record = orjson.loads(body)
            conn.execute(
                "INSERT INTO records VALUES (?, ?, ?, ?, ?)",
                (seq, record["at"], record["kind"], record["hash"], body),
            )
        if version < 3:
            conn.execute("DROP TRIGGER cursor_is_a_seq_insert")
            conn.execute("DROP TRIGGER cursor_is_a_seq_update")
        if version < 2:
            conn.execute("DROP TABLE state")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))


def _meta(path: Path, key: str) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return str(conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])
