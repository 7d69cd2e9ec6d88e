"""Capped exponential backoff with jitter, shared by device reconnects and the uplink."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays that double from ``initial`` up to ``cap``, each drawn from [d/2, d].

    Jitter spreads the retries of many gateways (or devices) that failed together.
    """

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.cap = max(cap, initial)
        self._rng = rng or random.Random()
        self._next = initial

    def next_delay(self) -> float:
        base = self._next
        self._next = min(self._next * 2, self.cap)
        return self._rng.uniform(base / 2, base)

    def reset(self) -> None:
        self._next = self.initial
