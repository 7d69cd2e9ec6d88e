"""The single writer: facts in, sealed and durably committed records out, in arrival order.

Producers ``await put(fact)``; when the queue is full they wait (backpressure), nothing is
dropped. The recorder waits up to the commit interval to gather a group, seals the group from
the outbox's tail and commits it in one transaction, off the event loop (the fsync releases the
GIL). A fact may carry a source's resume point, committed in the same transaction, so a
source never resumes ahead of or behind what is stored. A failed commit (disk full) keeps the
group, adds one ``audit`` fact saying so, and retries with backoff until the disk accepts it
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from gxpgate.agent._retry import Backoff, Episode
from gxpgate.agent.recording.audit import BUFFER_WRITE_FAILED
from gxpgate.agent.recording.sealing import Committed, Fact, Sealer
from gxpgate.buffer import BufferWriteError, Outbox, Row
from gxpgate.drivers.base import utc_now

__all__ = ["Recorder"]

log = logging.getLogger(__name__)

QUIET_SECS = 0.01
COMMIT_RETRY_MAX_SECS = 2.0

CommitListener = Callable[[Sequence[Committed]], None]
"""Called after each commit with what it committed, in seq order."""

CHECKPOINT = ""
"""The ``kind`` of a state-only fact: committed, never sealed."""

FactFilter = Callable[[Fact], "Fact | None"]
"""Sees every fact as it is put: returns it (possibly amended, e.g. a reading flagged while the
clock is unsynchronised) or None when a documented policy leaves it out (buffer thinning)."""


class Recorder:
    def __init__(
        self,
        outbox: Outbox,
        sealer: Sealer,
        *,
        commit_interval_secs: float = 0.2,
        max_batch: int = 5000,
        queue_size: int = 50_000,
    ) -> None:
        self.outbox = outbox
        self.sealer = sealer
        self.commit_interval_secs = commit_interval_secs
        self.max_batch = max_batch
        self.sealed = 0
        self.listeners: list[CommitListener] = []
        self.filters: list[FactFilter] = []
        self._queue: asyncio.Queue[Fact] = asyncio.Queue(queue_size)
        self._arrived = asyncio.Event()
        self._closing = asyncio.Event()
        self._write = Episode(
            log,
            "buffer.write_failed error=%s; records are kept in memory",
            "buffer.write_recovered",
            levels=(logging.ERROR, logging.WARNING),
        )
        self._first_arrival = 0.0
        self._caught_up_at = time.time()
        self._committing = False
        self._give_up_at: float | None = None
        self.unsaved = 0
        """Facts given up at a stop deadline because the disk refused them (see close)."""

    async def put_state(self, entries: dict[str, str]) -> None:
        """Commit ``entries`` to the buffer's state table, in order with the facts before it,
        without sealing a record (a checkpoint of derived state, such as the rules')."""
        await self.put(Fact(CHECKPOINT, utc_now(), state=entries))

    async def put(self, fact: Fact) -> None:
        admitted = self._admit(fact)
        if admitted is not None:
            await self._queue.put(admitted)
            self._arrived.set()

    def _admit(self, fact: Fact) -> Fact | None:
        """The fact as the filters leave it (None: left out); notes the group's first arrival."""
        for keep in self.filters:
            kept = keep(fact)
            if kept is None:
                return None
            fact = kept
        if self._queue.empty():
            self._first_arrival = asyncio.get_running_loop().time()
        return fact

    def put_nowait(self, fact: Fact) -> None:
        """Like :meth:`put`, for a task that is being cancelled: never waits. A full queue
        (the disk refuses commits) loses the fact, and says so."""
        admitted = self._admit(fact)
        if admitted is None:
            return
        try:
            self._queue.put_nowait(admitted)
        except asyncio.QueueFull:
            log.critical("buffer.unsaved records=1 event=%s: the queue is full", fact.data)
            return
        self._arrived.set()

    def close(self, deadline_secs: float | None = None) -> None:
        """Ask :meth:`run` to commit what is queued and return. With ``deadline_secs``, a
        commit still failing that long from now (a full disk at shutdown) is given up: what is
        left is counted in :attr:`unsaved` and logged, so a stop never waits for the disk."""
        if deadline_secs is not None:
            self._give_up_at = asyncio.get_running_loop().time() + deadline_secs
        self._closing.set()
        self._arrived.set()

    def evidence_until(self) -> float:
        """Wall-clock time up to which every fact put has been committed (and shown to the
        listeners): now while nothing waits, else when the recorder last caught up."""
        if self._queue.empty() and not self._committing:
            return time.time()
        return self._caught_up_at

    @property
    def write_failing(self) -> bool:
        """The last commit failed (disk full, I/O error); its records wait in memory."""
        return self._write.failing

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._queue.empty():
                if self._closing.is_set():
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._gather(loop.time, self._first_arrival + self.commit_interval_secs)
            batch = [self._queue.get_nowait() for _ in range(min(self.max_batch, self.queued))]
            self._first_arrival = loop.time()  # facts still queued arrived at the latest now
            taken_at = time.time()
            took_all = self._queue.empty()  # then every fact put before taken_at is in batch
            self._committing = True
            try:
                await self._commit(batch)
            finally:
                self._committing = False
            if took_all:
                self._caught_up_at = taken_at

    async def _gather(self, now: Callable[[], float], deadline: float) -> None:
        """Group commit: wait for more facts until the producers go quiet for ``QUIET_SECS``,
        the oldest queued fact has waited the commit interval, or a full group is queued.

        A burst (an OPC UA publish, a poll of several devices) is committed as soon as it has
        arrived instead of after the whole interval; a steady trickle still shares one fsync
        per interval; under heavy load the queue is full after each commit and nothing waits.
        """
        while self.queued < self.max_batch and not self._closing.is_set():
            remaining = deadline - now()
            if remaining <= 0:
                return
            size = self.queued
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(QUIET_SECS, remaining)):
                    await self._closing.wait()
            if self.queued == size:
                return

    async def _commit(self, batch: list[Fact]) -> None:
        # A failed commit is cheap to try again; the disk may take it as soon as space is freed.
        backoff = Backoff(0.5, COMMIT_RETRY_MAX_SECS)
        while True:
            try:
                rows = await asyncio.to_thread(self._seal_and_append, batch)
            except BufferWriteError as exc:
                if self._write.fail(str(exc)):
                    event = {"event": BUFFER_WRITE_FAILED, "error": str(exc)}
                    batch.append(Fact("audit", utc_now(), event))
                delay = backoff.next_delay()
                if self._give_up_at is not None:
                    left = self._give_up_at - asyncio.get_running_loop().time()
                    if left <= 0:
                        self._give_up(batch, exc)
                        return
                    delay = min(delay, left)
                await asyncio.sleep(delay)
                continue
            break
        self._write.recover()
        self.sealed += len(rows)
        if not self.listeners:
            return
        facts = [fact for fact in batch if fact.kind != CHECKPOINT]
        committed = [Committed.live(fact, row) for fact, row in zip(facts, rows, strict=True)]
        for listener in self.listeners:
            listener(committed)

    def _give_up(self, batch: list[Fact], exc: BufferWriteError) -> None:
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        self.unsaved = sum(1 for fact in batch if fact.kind != CHECKPOINT)
        log.critical(
            "buffer.unsaved records=%d error=%s; the disk did not take them before the stop "
            "deadline: they are lost",
            self.unsaved, exc,
        )  # fmt: skip

    def _seal_and_append(self, batch: list[Fact]) -> list[Row]:
        facts = [fact for fact in batch if fact.kind != CHECKPOINT]
        rows = self.sealer.seal(facts, self.outbox.last_seq, self.outbox.last_hash)
        state: dict[str, str] = {}
        for fact in batch:
            if fact.state:
                state.update(fact.state)  # in arrival order: the latest value of a key wins
        self.outbox.append(rows, state)
        return rows
