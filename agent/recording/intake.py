"""Where producers hand facts to the recorder: a bounded queue, the filters, and what the recorder
reports back.

Devices, the alarm service, the clock and buffer watches, the uplinks and the policy holder are
built with the intake, before the recorder: the recorder is built last, with its listeners
(which are those same components), and then drains the intake. Producers ``await put(fact)``;
when the queue is full they wait (backpressure), nothing is dropped. The filters see every fact
as it is put, so that a filter judges a reading as taken (the clock flag, buffer thinning), not
as committed later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from gxpgate.agent.recording.sealing import Fact
from gxpgate.drivers.base import utc_now

__all__ = ["CHECKPOINT", "SAMPLE", "FactFilter", "Intake", "Stage"]

log = logging.getLogger(__name__)

CHECKPOINT = ""
"""The ``kind`` of a state-only fact: committed, never sealed."""
SAMPLE = "sample"
"""The ``kind`` of a reading a recording policy did not seal: never stored, shown in order to
the recorder's sample listeners (the alarm engine sees every sample)."""

Stage = Callable[[Fact], Sequence[Fact]]
"""Sees every fact before the filters; returns the facts to queue in its place, in order (the
recording policy: a reading, a held-back reading sealed before it, or an unsealed sample)."""

FactFilter = Callable[[Fact], "Fact | None"]
"""Sees every fact as it is put: returns it (possibly amended, e.g. a reading flagged while the
clock is unsynchronised) or None when a documented policy leaves it out (buffer thinning)."""


class Intake:
    def __init__(
        self,
        *,
        stage: Stage | None = None,
        filters: Sequence[FactFilter] = (),
        queue_size: int = 50_000,
    ) -> None:
        self.stage = stage
        self.filters = tuple(filters)
        self.queue: asyncio.Queue[Fact] = asyncio.Queue(queue_size)
        self.arrived = asyncio.Event()
        """Set when a fact is queued; the recorder clears it before waiting."""
        self.first_arrival = 0.0
        """Event-loop time at which the oldest queued fact arrived (the group's deadline)."""
        # Reported back by the recorder:
        self.committing = False
        self.caught_up_at = time.time()
        self.write_failing = False
        """The last commit failed (disk full, I/O error); its records wait in memory."""

    async def put(self, fact: Fact) -> None:
        for staged in (fact,) if self.stage is None else self.stage(fact):
            admitted = self._admit(staged)
            if admitted is not None:
                await self.queue.put(admitted)
                self.arrived.set()

    async def put_state(self, entries: dict[str, str | None]) -> None:
        """Commit ``entries`` to the buffer's state table, in order with the facts before it,
        without sealing a record (a checkpoint of derived state, such as the rules')."""
        await self.put(Fact(CHECKPOINT, utc_now(), state=entries))

    def put_nowait(self, fact: Fact) -> None:
        """Like :meth:`put`, for a task that is being cancelled: never waits. A full queue
        (the disk refuses commits) loses the fact, and says so."""
        for staged in (fact,) if self.stage is None else self.stage(fact):
            admitted = self._admit(staged)
            if admitted is None:
                continue
            try:
                self.queue.put_nowait(admitted)
            except asyncio.QueueFull:
                log.critical("buffer.unsaved records=1 event=%s: the queue is full", fact.data)
                continue
            self.arrived.set()

    def _admit(self, fact: Fact) -> Fact | None:
        """The fact as the filters leave it (None: left out); notes the group's first arrival."""
        for keep in self.filters:
            kept = keep(fact)
            if kept is None:
                return None
            fact = kept
        if self.queue.empty():
            self.first_arrival = asyncio.get_running_loop().time()
        return fact

    def evidence_until(self) -> float:
        """Wall-clock time up to which every fact put has been committed (and shown to the
        recorder's listeners): now while nothing waits, else when the recorder last caught up."""
        if self.queue.empty() and not self.committing:
            return time.time()
        return self.caught_up_at

    @property
    def queued(self) -> int:
        return self.queue.qsize()
