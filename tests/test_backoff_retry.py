"""Backoff bounds and Retry-After parsing (pure logic)."""

from __future__ import annotations

import email.utils
import random
import time

import pytest

from gxpgate.agent._retry import Backoff
from gxpgate.agent.uplink.http import _retry_after


def test_backoff_doubles_with_jitter_up_to_cap() -> None:
    backoff = Backoff(1.0, 8.0, rng=random.Random(3))
    delays = [backoff.next_delay() for _ in range(8)]
    bases = [1, 2, 4, 8, 8, 8, 8, 8]
    for delay, base in zip(delays, bases, strict=True):
        assert base / 2 <= delay <= base
    assert len(set(delays)) == len(delays), "jittered, not identical"
    backoff.reset()
    assert backoff.next_delay() <= 1.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, 0.0), ("", 0.0), ("7", 7.0), ("0.25", 0.25), ("-3", 0.0), ("soon", 0.0)],
)
def test_retry_after_seconds(header: str | None, expected: float) -> None:
    assert _retry_after(header) == expected


def test_retry_after_http_date() -> None:
    header = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= _retry_after(header) <= 30
