"""Wall-clock integrity: steps against the monotonic clock, and NTP synchronisation.

Every record's ``at`` comes from the wall clock, which an operator, a bad RTC after a power cut
or a late NTP correction can move. The monotonic clock cannot be set, so the offset between the
two is constant while nobody steps the wall clock; :class:`StepDetector` seals any change of
that offset beyond the configured threshold as a ``clock_step`` audit record, with the time the
wall clock should have shown and the time it shows, so a reviewer can place the records around
it. Slewing (NTP's gradual correction) stays far below any sensible threshold.

Whether the clock is synchronised comes from the kernel (``adjtimex`` with no modes set, a
read-only call; ``TIME_ERROR`` means unsynchronised) and, where the kernel call is refused (a
seccomp filter), from ``timedatectl``. Unknown is reported as such, never guessed. Readings taken
while the clock is known to be unsynchronised are flagged (``clock.unsynced_readings``).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gxpgate.agent.evidence import format_time
from gxpgate.agent.recording.audit import CLOCK_STEP, CLOCK_SYNC
from gxpgate.agent.recording.sealing import Fact
from gxpgate.config.model import ClockConfig
from gxpgate.drivers.base import utc_now

__all__ = [
    "ClockMonitor",
    "ClockStep",
    "StepDetector",
    "SyncProbe",
    "UnsyncedFlag",
    "ntp_synchronized",
]

log = logging.getLogger(__name__)

STEP_CHECK_SECS = 1.0
_TIME_ERROR = 5
_TIMEX_BYTES = 512
"""``struct timex`` is 208 bytes on 64-bit Linux; a larger zeroed buffer is safe for any ABI."""

SyncProbe = Callable[[], tuple[bool | None, str]]
"""Returns (synchronised, how it was learnt); None when it cannot be told."""


@dataclass(frozen=True, slots=True)
class ClockStep:
    expected: float
    """What the wall clock should show (epoch seconds) had nobody stepped it."""
    actual: float
    step_secs: float


class StepDetector:
    """Compares the wall clock with the monotonic clock; pure apart from the injected clocks."""

    def __init__(
        self,
        threshold_secs: float,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold_secs = threshold_secs
        self._wall = wall
        self._monotonic = monotonic
        self._offset = wall() - monotonic()

    def check(self) -> ClockStep | None:
        mono = self._monotonic()
        actual = self._wall()
        expected = mono + self._offset
        step = actual - expected
        if abs(step) <= self.threshold_secs:
            return None
        self._offset = actual - mono
        return ClockStep(expected, actual, step)


def ntp_synchronized() -> tuple[bool | None, str]:
    """Whether the kernel clock is NTP-synchronised; see the module docstring."""
    state = _adjtimex_state()
    if state is not None:
        return state != _TIME_ERROR, "adjtimex"
    try:
        done = subprocess.run(
            ["timedatectl", "show", "--property=NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None, "unknown"
    answer = done.stdout.strip()
    if done.returncode != 0 or answer not in ("yes", "no"):
        return None, "unknown"
    return answer == "yes", "timedatectl"


def _adjtimex_state() -> int | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    buffer = ctypes.create_string_buffer(_TIMEX_BYTES)  # modes = 0: read only
    result = int(adjtimex(buffer))
    return None if result < 0 else result


class UnsyncedFlag:
    """The intake filter of the clock watch: marks readings taken while the clock is known
    unsynchronised. Built before the intake (which applies it as each fact is put); the
    :class:`ClockMonitor` tells it what it learns."""

    def __init__(self, config: ClockConfig) -> None:
        self.config = config
        self.synchronized: bool | None = None

    def flag(self, fact: Fact) -> Fact:
        if (
            fact.kind == "reading"
            and self.synchronized is False
            and self.config.unsynced_readings == "flag"
        ):
            # A new dict: a driver may hand the same ``data`` object to several facts.
            fact.data = {**fact.data, "clock_unsynced": True}
        return fact


class ClockMonitor:
    """The agent's clock watch: steps every second, synchronisation every
    ``sync_check_secs``, each sealed once per change; what it learns of synchronisation goes
    to the :class:`UnsyncedFlag` that flags readings."""

    def __init__(
        self,
        config: ClockConfig,
        record: Callable[[Fact], Awaitable[None]],
        *,
        flag: UnsyncedFlag | None = None,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        probe: SyncProbe = ntp_synchronized,
    ) -> None:
        self.config = config
        self.record = record
        self.unsynced = flag if flag is not None else UnsyncedFlag(config)
        self.detector = StepDetector(config.step_threshold_secs, wall=wall, monotonic=monotonic)
        self.probe = probe
        self.source = "unknown"
        self.steps = 0
        self._checked = False

    @property
    def synchronized(self) -> bool | None:
        return self.unsynced.synchronized

    @synchronized.setter
    def synchronized(self, value: bool | None) -> None:
        self.unsynced.synchronized = value

    async def check_sync(self) -> None:
        synchronized, source = await asyncio.to_thread(self.probe)
        if self._checked and synchronized == self.synchronized:
            return
        first = not self._checked
        self._checked = True
        self.synchronized, self.source = synchronized, source
        log.warning(
            "clock.sync synchronized=%s source=%s",
            "unknown" if synchronized is None else str(synchronized).lower(),
            source,
        )
        data = {
            "event": CLOCK_SYNC,
            "synchronized": synchronized,
            "source": source,
            "at_start": first,
        }
        await self.record(Fact("audit", utc_now(), data))

    async def check_step(self) -> None:
        step = self.detector.check()
        if step is None:
            return
        self.steps += 1
        before = format_time(datetime.fromtimestamp(step.expected, UTC))
        after = format_time(datetime.fromtimestamp(step.actual, UTC))
        log.warning("clock.step step_secs=%.3f before=%s after=%s", step.step_secs, before, after)
        data = {
            "event": CLOCK_STEP,
            "before": before,
            "after": after,
            "step_secs": round(step.step_secs, 6),
            "threshold_secs": self.config.step_threshold_secs,
        }
        await self.record(Fact("audit", utc_now(), data))

    async def run(self) -> None:
        if not self._checked:
            await self.check_sync()
        loop = asyncio.get_running_loop()
        next_sync = loop.time() + self.config.sync_check_secs
        while True:
            await asyncio.sleep(STEP_CHECK_SECS)
            await self.check_step()
            if loop.time() >= next_sync:
                next_sync = loop.time() + self.config.sync_check_secs
                await self.check_sync()
