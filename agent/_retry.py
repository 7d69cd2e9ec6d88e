"""How the agent retries, and how it says so: :class:`Backoff` and :class:`Episode`.

Anything that can fail and be retried (a device, the uplink, a commit to a full disk, an alarm
output, the sd_notify socket) waits with a :class:`Backoff` between attempts and reports through
an :class:`Episode`: one line when the first attempt fails, one when an attempt succeeds again,
optionally each sealed as an ``audit`` record. The attempts between are not repeated in the log
(log state changes, not repeats).

Both are plain objects owned by one task or thread (the event loop, mostly); neither is
thread-safe.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping

__all__ = ["Audit", "Backoff", "Episode"]

Audit = Callable[[dict[str, object]], Awaitable[None]]
"""Seals the ``data`` of one ``audit`` record (``{"event": …, …}``)."""


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


class Episode:
    """Failing once, recovered once: a run of failures is said when it starts and when it ends.

    ``failed`` and ``recovered`` are the two log lines (``%``-format strings, the dotted event
    first: ``"device.offline device=%s error=%s"``). The failed line is formatted with
    ``(*subject, *args, error)``, the recovered one with ``(*subject, *args)``: ``subject`` is
    what the episode is about (a device, an output), ``args`` what a call adds (the error kind,
    the sequence number reached).

    :meth:`fail` and :meth:`recover` only log, and return True on the call that starts or ends
    an episode, so a caller with more to say (a callback, an audit fact of its own) says it
    then. :meth:`failed` and :meth:`recovered` also seal, through ``audit``, the records
    ``{"event": events[0], **fields, "error": error}`` and ``{"event": events[1], **fields}``.
    """

    def __init__(
        self,
        logger: logging.Logger,
        failed: str,
        recovered: str,
        *subject: object,
        levels: tuple[int, int] = (logging.WARNING, logging.WARNING),
        audit: Audit | None = None,
        events: tuple[str, str] | None = None,
        fields: Mapping[str, object] | None = None,
    ) -> None:
        if (audit is None) != (events is None):
            raise ValueError("Episode: audit and events go together")
        self._log = logger
        self._lines = (failed, recovered)
        self._subject = subject
        self._levels = levels
        self._audit = audit
        self._events = events
        self._fields = dict(fields or {})
        self.error: str | None = None
        """The last error of the episode under way; None while nothing fails."""

    @property
    def failing(self) -> bool:
        return self.error is not None

    def fail(self, error: str, *args: object) -> bool:
        """A failed attempt: logs the failed line when it starts an episode (and returns True
        then); the latest ``error`` is kept either way."""
        first = self.error is None
        self.error = error
        if first:
            self._log.log(self._levels[0], self._lines[0], *self._subject, *args, error)
        return first

    def recover(self, *args: object) -> bool:
        """A successful attempt: logs the recovered line when it ends an episode (and returns
        True then)."""
        if self.error is None:
            return False
        self.error = None
        self._log.log(self._levels[1], self._lines[1], *self._subject, *args)
        return True

    async def failed(self, error: str, *args: object) -> None:
        """:meth:`fail`, and seal the failed record when the episode starts."""
        if self.fail(error, *args) and self._audit is not None and self._events is not None:
            await self._audit({"event": self._events[0], **self._fields, "error": error})

    async def recovered(self, *args: object) -> None:
        """:meth:`recover`, and seal the recovered record when the episode ends."""
        if self.recover(*args) and self._audit is not None and self._events is not None:
            await self._audit({"event": self._events[1], **self._fields})
