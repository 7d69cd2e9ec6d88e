"""The single writer: facts in, sealed and durably committed records out, in arrival order.

The recorder drains an :class:`~gxpgate.agent.recording.intake.Intake` (the producers' side).
It waits up to the commit interval to gather a group, seals the group from the outbox's tail and
commits it in one transaction, off the event loop (the fsync releases the GIL), then shows the
committed records to its listeners, given when it is built. A fact may carry a source's resume
point, committed in the same transaction, so a source never resumes ahead of or behind what is
stored. A failed commit (disk full) keeps the group, adds one ``audit`` fact saying so, and
retries with backoff until the disk accepts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from gxpgate.agent._retry import Backoff, Episode
from gxpgate.agent.recording.audit import BUFFER_WRITE_FAILED
from gxpgate.agent.recording.intake import CHECKPOINT, SAMPLE, FactFilter, Intake
from gxpgate.agent.recording.sealing import Committed, Fact, Sealer
from gxpgate.buffer import BufferWriteError, Outbox, Row
from gxpgate.drivers.base import utc_now

__all__ = ["CHECKPOINT", "CommitListener", "FactFilter", "Intake", "Recorder", "SampleListener"]

log = logging.getLogger(__name__)

QUIET_SECS = 0.01
COMMIT_RETRY_MAX_SECS = 2.0

CommitListener = Callable[[Sequence[Committed]], None]
"""Called after each commit with what it committed, in seq order."""

SampleListener = Callable[[Sequence[Committed | Fact]], None]
"""Called after each commit with every reading and record in arrival order: what was
committed, and between them the samples a recording policy did not seal (as their facts)."""

_UNSEALED = frozenset({CHECKPOINT, SAMPLE})


class Recorder:
    def __init__(
        self,
        outbox: Outbox,
        sealer: Sealer,
        intake: Intake | None = None,
        *,
        listeners: Sequence[CommitListener] = (),
        sample_listeners: Sequence[SampleListener] = (),
        commit_interval_secs: float = 0.2,
        max_batch: int = 5000,
    ) -> None:
        self.outbox = outbox
        self.sealer = sealer
        self.intake = intake if intake is not None else Intake()
        self.listeners = tuple(listeners)
        self.sample_listeners = tuple(sample_listeners)
        self.commit_interval_secs = commit_interval_secs
        self.max_batch = max_batch
        self.sealed = 0
        self._queue = self.intake.queue
        self._closing = asyncio.Event()
        self._write = Episode(
            log,
            "buffer.write_failed error=%s; records are kept in memory",
            "buffer.write_recovered",
            levels=(logging.ERROR, logging.WARNING),
        )
        self._give_up_at: float | None = None
        self.unsaved = 0
        """Facts given up at a stop deadline because the disk refused them (see close)."""
        # A recorder built alone (tests, benchmarks) is put to directly:
        self.put = self.intake.put
        self.put_nowait = self.intake.put_nowait
        self.put_state = self.intake.put_state
        self.evidence_until = self.intake.evidence_until

    def close(self, deadline_secs: float | None = None) -> None:
        """Ask :meth:`run` to commit what is queued and return. With ``deadline_secs``, a
        commit still failing that long from now (a full disk at shutdown) is given up: what is
        left is counted in :attr:`unsaved` and logged, so a stop never waits for the disk."""
        if deadline_secs is not None:
            self._give_up_at = asyncio.get_running_loop().time() + deadline_secs
        self._closing.set()
        self.intake.arrived.set()

    @property
    def write_failing(self) -> bool:
        """The last commit failed (disk full, I/O error); its records wait in memory."""
        return self.intake.write_failing

    @property
    def queued(self) -> int:
        return self.intake.queued

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        intake = self.intake
        while True:
            if self._queue.empty():
                if self._closing.is_set():
                    return
                intake.arrived.clear()
                await intake.arrived.wait()
                continue
            await self._gather(loop.time, intake.first_arrival + self.commit_interval_secs)
            batch = [self._queue.get_nowait() for _ in range(min(self.max_batch, self.queued))]
            intake.first_arrival = loop.time()  # facts still queued arrived at the latest now
            taken_at = time.time()
            took_all = self._queue.empty()  # then every fact put before taken_at is in batch
            intake.committing = True
            try:
                await self._commit(batch)
            finally:
                intake.committing = False
            if took_all:
                intake.caught_up_at = taken_at

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
                self.intake.write_failing = True
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
        self.intake.write_failing = False
        self.sealed += len(rows)
        if not self.listeners and not self.sample_listeners:
            return
        facts = [fact for fact in batch if fact.kind not in _UNSEALED]
        committed = [Committed.live(fact, row) for fact, row in zip(facts, rows, strict=True)]
        for listener in self.listeners:
            listener(committed)
        if self.sample_listeners:
            views = iter(committed)
            mixed = [
                fact if fact.kind == SAMPLE else next(views)
                for fact in batch
                if fact.kind != CHECKPOINT
            ]
            for sample_listener in self.sample_listeners:
                sample_listener(mixed)

    def _give_up(self, batch: list[Fact], exc: BufferWriteError) -> None:
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        self.unsaved = sum(1 for fact in batch if fact.kind not in _UNSEALED)
        log.critical(
            "buffer.unsaved records=%d error=%s; the disk did not take them before the stop "
            "deadline: they are lost",
            self.unsaved, exc,
        )  # fmt: skip

    def _seal_and_append(self, batch: list[Fact]) -> list[Row]:
        facts = [fact for fact in batch if fact.kind not in _UNSEALED]
        state: dict[str, str | None] = {}
        for fact in batch:
            if fact.state:
                state.update(fact.state)  # in arrival order: the latest value of a key wins
        if not facts and not state:
            return []  # unsealed samples only: nothing to store, no transaction
        rows = self.sealer.seal(facts, self.outbox.last_seq, self.outbox.last_hash)
        self.outbox.append(rows, state)
        return rows
