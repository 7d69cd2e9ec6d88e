"""One task per device: polled devices on a fixed rate, pushed devices (subscriptions) as they
report; every attempt and every value on record.

Polling is fixed-rate on the monotonic clock: a poll that overruns its slot skips the missed
slots instead of starting late ones back to back, so ``at`` never drifts behind while the data
looks fresh. A source with old data to catch up on (a data logger's memory after a gap) gets the
rest of each slot for it, chunk by chunk, so live values keep their rate during a long
back-fill; each chunk's resume point is committed with it. A device that cannot be reached is
retried with capped, jittered backoff; its offline and online transitions are each logged and
sealed once as ``audit`` records. A polled device that answers, but with nothing except ``bad``
values (a Modbus exception for every request: a wrong unit id or address; malformed answers),
is *failing*: reachable, yet monitoring nothing. That episode is logged and sealed once too
(``device_failing`` with the error, ``device_recovered``).

Each task keeps its health for metrics and ``gxpgate status`` (:mod:`gxpgate.agent.health.metrics`):
whether the device is up (``None`` until the first attempt), the last error while it is down, and
when (monotonic clock) it last delivered live data: a ``good`` reading (not one caught up from a
logger's memory) or a scan. These attributes belong to the event loop; other threads read
them only through a snapshot taken on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from gxpgate.agent._retry import Backoff, Episode
from gxpgate.agent.devices.zones import ZoneMap
from gxpgate.agent.recording.audit import (
    DEVICE_FAILING,
    DEVICE_OFFLINE,
    DEVICE_ONLINE,
    DEVICE_RECOVERED,
)
from gxpgate.agent.recording.intake import Intake
from gxpgate.agent.recording.sealing import Fact
from gxpgate.drivers.base import (
    DeviceUnreachable,
    DriverError,
    PolledSource,
    PushedSource,
    Sample,
    utc_now,
)

__all__ = ["DevicePoller", "DeviceStreamer", "cursor_prefix"]

log = logging.getLogger(__name__)


class _Device:
    """What both kinds of device task share: sealing samples, health transitions, backoff."""

    def __init__(self, device: str, zones: ZoneMap, intake: Intake, backoff: Backoff) -> None:
        self.device = device
        self.zones = zones
        self.intake = intake
        self.up: bool | None = None
        """Health as last seen: None until the first attempt, then as :attr:`online`."""
        self.last_error: str | None = None
        self.last_data: float | None = None
        """``time.monotonic()`` of the last live good reading (or scan); None: none yet."""
        self.readings = 0
        """Readings handed on since start, live and back-filled, whatever the recording policy
        then seals: the metrics' count of what was taken, not of what was kept."""
        self._backoff = backoff
        self._offline = Episode(
            log,
            "device.offline device=%s error=%s",
            "device.online device=%s",
            device,
            audit=self._audit,
            events=(DEVICE_OFFLINE, DEVICE_ONLINE),
        )
        self._failing = Episode(
            log,
            "device.failing device=%s error=%s",
            "device.recovered device=%s",
            device,
            audit=self._audit,
            events=(DEVICE_FAILING, DEVICE_RECOVERED),
        )

    @property
    def online(self) -> bool:
        """False from the first failed attempt of an episode to the next that succeeds."""
        return not self._offline.failing

    @property
    def failing(self) -> str | None:
        """The error while the device answers with nothing but ``bad`` values; None: not."""
        return self._failing.error

    def saw_data(self) -> None:
        """Live data arrived (a good reading, a scan): for the last-data age in metrics."""
        self.last_data = time.monotonic()

    def _state(self, cursor: dict[str, Any] | None) -> dict[str, str] | None:
        if not cursor:
            return None
        prefix = cursor_prefix(self.device)
        return {prefix + k: orjson.dumps(v).decode() for k, v in cursor.items()}

    async def record(self, samples: list[Sample], *, live: bool = True) -> None:
        """Seal ``samples``; ``live=False`` for old data caught up (it says nothing of now)."""
        if live and any(s.quality == "good" for s in samples):
            self.saw_data()
        self.readings += len(samples)
        for sample in samples:
            state = self._state(sample.cursor)
            await self.intake.put(
                Fact(
                    kind="reading",
                    at=sample.at,
                    src_at=sample.src_at,
                    zone=self.zones.zone_of(self.device, sample.point),
                    device=self.device,
                    point=sample.point,
                    value=sample.value,
                    unit=sample.unit,
                    quality=sample.quality,
                    data=sample.data,
                    state=state,
                )
            )

    async def record_events(self, source: object) -> None:
        drain = getattr(source, "drain_events", None)
        if drain is None:
            return
        for event in drain():
            log.info("device.%s device=%s", event.data.get("event", "event"), self.device)
            zone = self.zones.zone_of(self.device)
            fact = Fact(
                "audit",
                event.at,
                event.data,
                zone=zone,
                device=self.device,
                state=self._state(event.cursor),
            )
            await self.intake.put(fact)

    async def went_offline(self, failure: DriverError) -> float:
        """Record the failure (once per episode); return how long to wait before retrying."""
        self.last_error = failure.message
        self.up = False
        await self._offline.failed(failure.message)
        return self._backoff.next_delay()

    async def came_online(self) -> None:
        self.last_error = None
        self.up = True
        self._backoff.reset()
        await self._offline.recovered()

    async def judge_answers(self, samples: list[Sample]) -> None:
        """A poll that was answered: failing while every value is ``bad``, recovered once one
        is not (an empty poll says nothing either way)."""
        if not samples:
            return
        if all(s.quality == "bad" for s in samples):
            error = str(samples[0].data.get("error") or "every value bad")
            self.last_error = error
            await self._failing.failed(error)
        elif self._failing.failing:
            self.last_error = None
            await self._failing.recovered()

    async def _audit(self, data: dict[str, object]) -> None:
        zone = self.zones.zone_of(self.device)
        await self.intake.put(Fact("audit", utc_now(), data, zone=zone, device=self.device))


def cursor_prefix(device: str) -> str:
    """Prefix of a device's resume state entries in the buffer's ``state`` table."""
    return f"source:{device}:"


def _raise_if_cancelled(task: asyncio.Task[object] | None) -> None:
    # Python 3.11's wait_for (inside pymodbus and asyncua) can swallow a cancellation that
    # races with the answer; re-raise it so shutdown never hangs on a device task.
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class DevicePoller(_Device):
    """A polled source on fixed slots of the monotonic clock.

    ``clock`` (default: the event loop's clock) and ``sleep`` (default :func:`asyncio.sleep`)
    are what the slots, overruns and backoff waits are counted on; tests inject both.
    """

    def __init__(
        self,
        source: PolledSource,
        zones: ZoneMap,
        intake: Intake,
        reconnect_max_secs: float,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        interval = source.poll_interval_secs
        backoff = Backoff(min(1.0, interval), max(reconnect_max_secs, interval))
        super().__init__(source.device_id, zones, intake, backoff)
        self.source = source
        self.polls = 0
        self.overruns = 0
        self.caught_up = 0
        self._clock = clock
        self._sleep = sleep

    def _now(self) -> Callable[[], float]:
        return self._clock or asyncio.get_running_loop().time

    async def run(self) -> None:
        now = self._now()
        sleep = self._sleep
        interval = self.source.poll_interval_secs
        task = asyncio.current_task()
        async with self.source:
            next_slot = now()
            while True:
                failure: DriverError | None = None
                try:
                    samples = await self.source.read()
                except DeviceUnreachable as exc:
                    samples, failure = exc.samples, exc
                except DriverError as exc:
                    samples, failure = [], exc
                _raise_if_cancelled(task)
                self.polls += 1
                # Offline is on record before the bad readings it explains, so the rules call
                # them a communication loss, not a sensor fault.
                delay = await self.went_offline(failure) if failure is not None else 0.0
                await self.record(samples)
                await self.record_events(self.source)
                if failure is not None:
                    await sleep(delay)
                    next_slot = now()
                    continue
                await self.came_online()
                await self.judge_answers(samples)
                next_slot += interval
                ended = now()
                if next_slot < ended:
                    missed = int((ended - next_slot) // interval) + 1
                    self.overruns += missed
                    log.warning("device.overrun device=%s skipped_polls=%d", self.device, missed)
                    next_slot += missed * interval
                if not await self._catch_up(next_slot):
                    next_slot = now()  # a failed catch-up: retry after the backoff
                    continue
                await sleep(next_slot - now())

    async def _catch_up(self, until: float) -> bool:
        """Use the rest of the poll slot for old data (a logger's memory); False on failure."""
        catch_up = getattr(self.source, "catch_up", None)
        if catch_up is None:
            return True
        now = self._now()
        while now() < until:
            try:
                samples = await catch_up()
            except DeviceUnreachable as exc:
                delay = await self.went_offline(exc)
                await self.record(exc.samples, live=False)
                await self.record_events(self.source)
                await self._sleep(delay)
                return False
            except DriverError as exc:
                await self.record_events(self.source)
                await self._sleep(await self.went_offline(exc))
                return False
            await self.record_events(self.source)
            if samples is None:
                return True
            self.caught_up += len(samples)
            await self.record(samples, live=False)
            # Queue puts do not yield while there is room, and a file import awaits no I/O:
            # give the loop a turn so a catch-up never starves the other devices.
            await asyncio.sleep(0)
        return True


class DeviceStreamer(_Device):
    """A pushed source (OPC UA subscription): values as the device reports them."""

    def __init__(
        self, source: PushedSource, zones: ZoneMap, intake: Intake, reconnect_max_secs: float
    ) -> None:
        super().__init__(source.device_id, zones, intake, Backoff(0.5, reconnect_max_secs))
        self.source = source
        self.batches = 0

    async def run(self) -> None:
        task = asyncio.current_task()
        async with self.source:
            while True:
                try:
                    async for samples in self.source.stream():
                        _raise_if_cancelled(task)
                        self.batches += 1
                        await self.came_online()  # the first (possibly empty) batch: subscribed
                        await self.record(samples)
                        await self.record_events(self.source)
                except DriverError as exc:
                    _raise_if_cancelled(task)
                    await asyncio.sleep(await self.went_offline(exc))
