"""Keeps the lot register in step with the recorder (the agent's side of agent/custody/lots.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Protocol, Self

from gxpgate.agent.alarms.rules import Event, Judged
from gxpgate.agent.custody.exceptions import ExceptionJudge
from gxpgate.agent.custody.lots import LotRegister, LotRegisterError
from gxpgate.agent.recording.sealing import Committed
from gxpgate.buffer import Outbox

__all__ = ["FeedSink", "LotFeed"]

log = logging.getLogger(__name__)

REJUDGE_CHUNK = 5000


class LotFeed:
    """Keeps a :class:`LotRegister` in step with the recorder, off the event loop.

    Entering syncs the register with the outbox (before anything new is committed: enter it
    before the recorder runs), then starts one worker task. :meth:`on_commit` is a recorder
    listener: it only queues the committed custody rows (with a book attached, also good
    temperature readings and alarm records), and the worker applies them in a thread, in commit
    order. Batches with nothing to apply only advance the tail in memory; it is written with the
    next batch, every :attr:`CHECKPOINT_EVERY` records, and on exit, so a restart after a crash
    re-reads at most that much. Exiting applies what is queued (give it the recorder's last
    commit first) and closes the register. A write failure (disk full) is logged once and stops
    the feed: the register then lags, and the next start replays from the chain.

    With a ``judge`` (agent/custody/exceptions.py) each applied batch's custody records are judged
    right after, and with a book the exposure is checked every :attr:`CHECK_SECS`; what they
    find goes to the ``sink`` (the alarm service, given at construction), in the event loop.
    """

    CHECKPOINT_EVERY = 10_000
    CHECK_SECS = 1.0
    PERSIST_SECS = 60.0
    """Readings applied in memory only (statistics) are written at least this often."""

    def __init__(
        self,
        register: LotRegister,
        outbox: Outbox,
        *,
        judge: ExceptionJudge | None = None,
        points: frozenset[tuple[str, str]] = frozenset(),
        sink: FeedSink | None = None,
    ) -> None:
        self.register = register
        self.outbox = outbox
        self.judge = judge
        self.sink = sink
        self.failed: str | None = None
        self._points = points
        """Temperature points whose readings the book needs."""
        self._queue: deque[tuple[list[Committed], int]] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._tail = 0
        self._queued_through = 0
        self._task: asyncio.Task[None] | None = None
        self._persist_at = time.monotonic() + self.PERSIST_SECS

    async def __aenter__(self) -> Self:
        try:
            await asyncio.to_thread(self.register.sync, self.outbox)
        except BaseException:
            await asyncio.to_thread(self.register.close)
            raise
        self._tail = self._queued_through = self.register.last_seq
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lots")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        self._wake.set()
        try:
            if self._task is not None:
                await self._task
            register = self.register
            if self.failed is None and max(self._tail, register.last_seq) > register.persisted_seq:
                await asyncio.to_thread(register.apply, [], max(self._tail, register.last_seq))
        except LotRegisterError as exc:
            log.error("lots.write_failed error=%s", exc)
        finally:
            await asyncio.to_thread(self.register.close)

    def rejudge(self) -> None:
        """Judge again the custody records the sink has not seen judged (at start, off the event
        loop, before the recorder runs: nothing is added meanwhile); ``wrong_zone`` exceptions
        still active are watched again first."""
        judge, sink = self.judge, self.sink
        if judge is None or sink is None:
            return
        for rule, detail, zone in sink.watched_events("wrong_zone"):
            judge.watch(rule, detail, zone)
        after, through = sink.judged_through, self.outbox.last_seq
        while rows := self.outbox.pending(after, REJUDGE_CHUNK, kind="custody"):
            after = rows[-1][0]
            sink.exceptions(judge.judge([Committed.stored(s, b) for s, b in rows]), [], after)
        sink.exceptions(Judged(), [], through)  # judged through the tail, custody or not

    def on_commit(self, committed: Sequence[Committed]) -> None:
        if not committed:
            return
        self._tail = committed[-1].seq
        book = self.register.book
        points = self._points
        wanted = [
            record
            for record in committed
            if record.kind == "custody"
            or (book is not None and record.kind == "alarm")
            or (
                record.kind == "reading"
                and (record.device, record.point) in points
                and record.quality == "good"
                and not record.data.get("backfill")
            )
        ]
        if wanted or self._tail - self._queued_through >= self.CHECKPOINT_EVERY:
            self._queue.append((wanted, self._tail))
            self._queued_through = self._tail
            self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_check = loop.time() + self.CHECK_SECS
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                if self.register.book is not None:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, next_check - loop.time())):
                            await self._wake.wait()
                else:
                    await self._wake.wait()
            batch = list(self._queue)
            self._queue.clear()
            if self.failed is not None:
                continue
            check = self.register.book is not None and loop.time() >= next_check
            if check:
                next_check = loop.time() + self.CHECK_SECS
            if not batch and not check:
                continue
            try:
                found = await asyncio.to_thread(self._apply, batch, check)
            except LotRegisterError as exc:
                self.failed = str(exc)
                log.error("lots.write_failed error=%s; the next start replays from the chain", exc)
                continue
            self._deliver(found)

    def _apply(
        self, batch: list[tuple[list[Committed], int]], check: bool
    ) -> tuple[Judged | None, list[Event], int]:
        records = [record for wanted, _through in batch for record in wanted]
        through = batch[-1][1] if batch else self.register.last_seq
        if batch:
            self.register.apply(records, through)
        judged = self.judge.judge(records) if self.judge is not None and batch else None
        book = self.register.book
        events: list[Event] = []
        if book is not None and check:
            now = time.monotonic()
            due = now >= self._persist_at
            if due:
                self._persist_at = now + self.PERSIST_SECS
            self.register.flush_book(force=due)
            events = book.check()
        return judged, events, through

    def _deliver(self, found: tuple[Judged | None, list[Event], int]) -> None:
        if self.sink is not None:  # none: a register kept without alarms (a test, a tool)
            self.sink.exceptions(*found)


class FeedSink(Protocol):
    """Where the feed hands what it finds (the alarm service)."""

    def exceptions(self, judged: Judged | None, events: list[Event], through: int) -> None: ...
    def watched_events(self, kind: str) -> list[tuple[str, dict[str, Any], str]]: ...
    @property
    def judged_through(self) -> int: ...
