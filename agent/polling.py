"""One task per polled device: execute the plan on a fixed rate, record every attempt.

The schedule is fixed-rate on the monotonic clock: a poll that overruns its slot skips the
missed slots instead of starting late ones back to back, so ``at`` never drifts behind while
the data looks fresh. An unreachable device is retried with capped, jittered backoff; its
offline and online transitions are each logged and sealed once as ``audit`` records.
"""

from __future__ import annotations

import asyncio
import logging

from drivers.base import DeviceUnreachable, DriverError, PolledSource, Sample, utc_now

from .backoff import Backoff
from .identity import ZoneMap
from .recorder import Recorder
from .sealing import Fact

__all__ = ["DevicePoller"]

log = logging.getLogger(__name__)


class DevicePoller:
    def __init__(
        self, source: PolledSource, zones: ZoneMap, recorder: Recorder, reconnect_max_secs: float
    ) -> None:
        self.source = source
        self.device = source.device_id
        self.zones = zones
        self.recorder = recorder
        self.online = True
        self.last_error: str | None = None
        self.polls = 0
        self.overruns = 0
        interval = source.poll_interval_secs
        self._backoff = Backoff(min(1.0, interval), max(reconnect_max_secs, interval))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.source.poll_interval_secs
        task = asyncio.current_task()
        async with self.source:
            next_slot = loop.time()
            while True:
                failure: DriverError | None = None
                try:
                    samples = await self.source.read()
                except DeviceUnreachable as exc:
                    samples, failure = exc.samples, exc
                except DriverError as exc:
                    samples, failure = [], exc
                if task is not None and task.cancelling():
                    # Python 3.11's wait_for (inside pymodbus) can swallow a cancellation that
                    # races with the answer; re-raise it so shutdown never hangs on a poller.
                    raise asyncio.CancelledError
                self.polls += 1
                for sample in samples:
                    await self.recorder.put(self._fact(sample))
                if failure is not None:
                    await self._went_offline(failure)
                    await asyncio.sleep(self._backoff.next_delay())
                    next_slot = loop.time()
                    continue
                if not self.online:
                    await self._came_online()
                next_slot += interval
                now = loop.time()
                if next_slot < now:
                    missed = int((now - next_slot) // interval) + 1
                    self.overruns += missed
                    log.warning("device.overrun device=%s skipped_polls=%d", self.device, missed)
                    next_slot += missed * interval
                await asyncio.sleep(next_slot - now)

    def _fact(self, sample: Sample) -> Fact:
        return Fact(
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
        )

    async def _went_offline(self, failure: DriverError) -> None:
        self.last_error = failure.message
        if not self.online:
            return
        self.online = False
        log.warning("device.offline device=%s error=%s", self.device, failure.message)
        await self.recorder.put(
            Fact(
                "audit",
                utc_now(),
                {"event": "device_offline", "error": failure.message},
                zone=self.zones.zone_of(self.device),
                device=self.device,
            )
        )

    async def _came_online(self) -> None:
        self.online = True
        self.last_error = None
        self._backoff.reset()
        log.warning("device.online device=%s", self.device)
        await self.recorder.put(
            Fact(
                "audit",
                utc_now(),
                {"event": "device_online"},
                zone=self.zones.zone_of(self.device),
                device=self.device,
            )
        )
