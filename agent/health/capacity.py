"""The buffer's quota: a high-water alarm before it is reached, a documented policy at it.

Nothing undelivered is ever deleted: a missing record would leave a hole in the chain that the
quality service could never get past, and alarm, custody and audit records are the evidence a
reviewer needs most. So the policy acts on what is sealed next, never on what is stored:

* At ``buffer.high_water_pct`` of the quota: a ``buffer_high_water`` audit record and the local
  alarm ``gateway.buffer.high_water``; both clear 5 points below.
* At the quota: delivered records are pruned at once, whatever ``retention_days`` says (the
  service holds them), and the ``gateway.buffer.full`` alarm is raised. If that does not bring
  use below the quota, ``buffer.at_quota`` decides:

  ``thin_readings``
      Every alarm, custody and audit record is sealed, and so is every reading that is not
      good, carries data (a back-fill, a file drop), or could start or end an alarm (any rule of
      its point not normal, or a limit crossed). Other readings of a point are sealed at most
      one per ``thin_interval_secs``; the ones left out still tell the rules engine that the
      device is alive, so no false communication-loss alarm follows. When use falls below the
      quota again, a ``buffer_thinning_ended`` audit record says how many readings of which
      points were left out, and between which times.
  ``keep_sealing``
      Everything is sealed until the disk itself is full (the recorder then keeps the records
      in memory and retries, see agent/recording/recorder.py).

Use is measured every second (three PRAGMA reads) as the database's content
(``Outbox.used_bytes``), not the file size, which never shrinks. The high-water mark is judged
on the share of it that is *undelivered* (pending records over records held): delivered records
are the service's already and are pruned at the quota, so a buffer full of them is not evidence
at risk.

The disk itself: while the buffer's reserve is given back (``buffer.reserve_mb``, see
buffer/outbox.py) or commits fail, the local alarm ``gateway.buffer.disk_full`` is active; it
is announced on the outputs at once, before it can be sealed, and sealed once the disk takes
it. Every second the guard tries to set the reserve aside again; the alarm clears when it can.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gxpgate.agent.alarms.rules import Engine
from gxpgate.agent.alarms.service import AlarmService
from gxpgate.agent.evidence import format_time
from gxpgate.agent.recording.audit import (
    BUFFER_BELOW_HIGH_WATER,
    BUFFER_FULL,
    BUFFER_HIGH_WATER,
    BUFFER_PRUNED_EARLY,
    BUFFER_THINNING_ENDED,
)
from gxpgate.agent.recording.sealing import Fact
from gxpgate.buffer import BufferWriteError, Outbox
from gxpgate.config.model import BufferConfig
from gxpgate.drivers.base import utc_now

__all__ = ["BufferGuard", "Thinning"]

log = logging.getLogger(__name__)

CHECK_SECS = 1.0
HYSTERESIS_PCT = 5.0


class Thinning:
    """The intake filter of ``thin_readings`` (module docstring). Built before the intake, with
    the alarm engine that says whether a reading is quiet; the :class:`BufferGuard` switches it
    on at the quota and off below it."""

    def __init__(self, config: BufferConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.active = False
        self.thinned: dict[str, int] = {}
        self.since: str | None = None
        self._last_kept: dict[tuple[str, str], float] = {}

    def thin(self, fact: Fact) -> Fact | None:
        if not self.active or fact.kind != "reading":
            return fact
        device, point, value = fact.device, fact.point, fact.value
        if (
            device is None
            or point is None
            or value is None
            or fact.quality != "good"
            or fact.data
            or fact.state
        ):
            return fact
        t = fact.at.timestamp()
        key = (device, point)
        last = self._last_kept.get(key)
        engine = self.engine
        if last is None or t - last >= self.config.thin_interval_secs:
            self._last_kept[key] = t
            return fact
        if not engine.quiet(device, point, value):
            self._last_kept[key] = t
            return fact
        engine.alive(device, point, t)
        name = f"{device}.{point}"
        self.thinned[name] = self.thinned.get(name, 0) + 1
        if self.since is None:
            self.since = format_time(fact.at)
        return None

    def reset(self) -> None:
        self.thinned = {}
        self.since = None
        self._last_kept.clear()


class BufferGuard:
    def __init__(
        self,
        outbox: Outbox,
        config: BufferConfig,
        alarms: AlarmService,
        record: Callable[[Fact], Awaitable[None]],
        *,
        thinning: Thinning | None = None,
        write_failing: Callable[[], bool] = lambda: False,
        check_secs: float = CHECK_SECS,
    ) -> None:
        self.outbox = outbox
        self.config = config
        self.alarms = alarms
        self.record = record
        self.check_secs = check_secs
        self.write_failing = write_failing
        self.disk_full = False
        self.used_pct = 0.0
        self.high = False
        self.full = False
        self.thinner = thinning if thinning is not None else Thinning(config, alarms.engine)

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.check_secs)

    async def check(self) -> None:
        await self._check_disk()
        used = await asyncio.to_thread(self.outbox.used_bytes)
        if self._pct(used) >= 100 or self.full:
            try:
                pruned = await asyncio.to_thread(self.outbox.prune, 0.0)
            except BufferWriteError:
                pruned = 0  # the disk is full: the disk_full alarm says so; try next time
            if pruned:
                after = await asyncio.to_thread(self.outbox.used_bytes)
                log.warning("buffer.pruned_early records=%d used_bytes=%d", pruned, after)
                await self._audit(BUFFER_PRUNED_EARLY, used, records=pruned, used_after=after)
                used = after
        pct = self.used_pct = self._pct(used)
        mark = self.config.high_water_pct
        at_risk = pct * self._undelivered_share()
        high = at_risk >= mark or (self.high and at_risk >= mark - HYSTERESIS_PCT)
        if high != self.high:
            self.high = high
            event = BUFFER_HIGH_WATER if high else BUFFER_BELOW_HIGH_WATER
            log.warning("buffer.%s used_pct=%.1f", event.removeprefix("buffer_"), pct)
            await self._audit(event, used)
        value = round(pct, 1)
        self.alarms.condition(
            "buffer", "high_water", active=high, clear=not high, value=round(at_risk, 1),
            limit=mark,
        )  # fmt: skip
        full = pct >= 100 or (self.full and pct >= 100 - HYSTERESIS_PCT)
        if full != self.full:
            self.full = full
            self.thinner.active = full and self.config.at_quota == "thin_readings"
            log.warning("buffer.%s used_pct=%.1f", "full" if full else "below_quota", pct)
            if full:
                await self._audit(BUFFER_FULL, used, policy=self.config.at_quota)
            else:
                await self._end_thinning(used)
        self.alarms.condition("buffer", "full", active=full, clear=not full, value=value, limit=100)

    def _undelivered_share(self) -> float:
        outbox = self.outbox
        pending = outbox.last_seq - outbox.acked_through
        held = outbox.last_seq - outbox.first_seq + 1 if outbox.last_seq else 0
        return pending / held if held > 0 else 0.0

    async def _check_disk(self) -> None:
        failing = self.write_failing()
        if self.outbox.disk_full and not failing:
            await asyncio.to_thread(self.outbox.restore_reserve)
        full = failing or self.outbox.disk_full
        if full != self.disk_full:
            self.disk_full = full
            if full:
                log.error("buffer.disk_full path=%s", self.outbox.path)
            else:
                log.warning("buffer.disk_space_back path=%s", self.outbox.path)
        self.alarms.condition(
            "buffer", "disk_full", active=full, clear=not full, value=None, limit=None,
            announce=failing,
        )  # fmt: skip

    @property
    def thinning(self) -> bool:
        return self.thinner.active

    @property
    def thinned(self) -> dict[str, int]:
        """Readings left out per ``device.point`` since thinning began."""
        return self.thinner.thinned

    async def _end_thinning(self, used: int) -> None:
        if not self.thinned:
            return
        total = sum(self.thinned.values())
        log.warning("buffer.thinning_ended readings_left_out=%d", total)
        await self._audit(
            BUFFER_THINNING_ENDED,
            used,
            readings_left_out=total,
            by_point=dict(sorted(self.thinned.items())),
            since=self.thinner.since,
            until=format_time(utc_now()),
            interval_secs=self.config.thin_interval_secs,
        )
        self.thinner.reset()

    def _pct(self, used: int) -> float:
        return used * 100.0 / self.outbox.quota_bytes

    async def _audit(self, event: str, used: int, **extra: Any) -> None:
        data: dict[str, Any] = {
            "event": event,
            "used_bytes": used,
            "quota_bytes": self.outbox.quota_bytes,
            "used_pct": round(self._pct(used), 2),
            "high_water_pct": self.config.high_water_pct,
            "pending": self.outbox.last_seq - self.outbox.acked_through,
        }
        data.update(extra)
        await self.record(Fact("audit", utc_now(), data))
