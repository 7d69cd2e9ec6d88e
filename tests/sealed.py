"""Helpers for tests that need real sealed records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

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
