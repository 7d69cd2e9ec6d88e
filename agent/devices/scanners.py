"""The :class:`CustodyStreamer` runs one custody device (barcode scanner, RFID reader) the way
``DeviceStreamer`` runs an OPC UA subscription: ``stream()`` batches as they come, each
observation turned into records by :class:`gxpgate.agent.custody.epcis.CustodyBuilder`,
offline/online audit records once per episode, capped jittered backoff between reconnects, and what
the device's read budget refused counted in ``scan_overflow`` records.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import tzinfo
from types import TracebackType
from typing import Any, Protocol

from gxpgate.agent._retry import Backoff
from gxpgate.agent.custody.epcis import CustodyBuilder
from gxpgate.agent.devices.supervisor import _Device, _raise_if_cancelled
from gxpgate.agent.devices.zones import ZoneMap
from gxpgate.agent.evidence import format_time
from gxpgate.agent.recording.audit import SCAN_OVERFLOW
from gxpgate.agent.recording.intake import Intake
from gxpgate.agent.recording.sealing import Fact
from gxpgate.drivers.base import DriverError, utc_now
from gxpgate.drivers.scanner import Observation, Overflow
from gxpgate.drivers.scanner_model import BarcodeScannerDevice, RfidReaderDevice

__all__ = ["CustodySource", "CustodyStreamer"]

log = logging.getLogger(__name__)


class CustodySource(Protocol):
    """A pushed source of observations (:mod:`gxpgate.drivers.scanner`)."""

    device_id: str

    @property
    def config(self) -> BarcodeScannerDevice | RfidReaderDevice: ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def stream(self) -> AsyncIterator[list[Observation]]:
        """``[]`` once connected, then observations; raises DriverError when the link is lost."""
        ...

    def take_overflow(self, *, force: bool = False) -> Overflow | None:
        """Reads refused by the device's read budget, when a report is due."""
        ...


class CustodyStreamer(_Device):
    """Runs one barcode scanner or RFID reader: each observation sealed as it arrives."""

    def __init__(
        self,
        source: CustodySource,
        zones: ZoneMap,
        intake: Intake,
        gw: str,
        *,
        tz: tzinfo | None = None,
        site_gln: str | None = None,
    ) -> None:
        config = source.config
        super().__init__(source.device_id, zones, intake, Backoff(0.5, config.reconnect_max_secs))
        self.source = source
        self.builder = CustodyBuilder(gw, source.device_id, config, tz=tz, site_gln=site_gln)
        self.batches = 0
        """Batches received; the first (empty) one of each connection says it is up."""
        self.listening = asyncio.Event()
        """Set once the first connection is up: from then on a scan reaches the gateway."""
        self.observations = 0
        self.rejected = 0

    async def run(self) -> None:
        task = asyncio.current_task()
        async with self.source:
            try:
                while True:
                    try:
                        async for observations in self.source.stream():
                            _raise_if_cancelled(task)
                            self.batches += 1
                            self.listening.set()
                            await self.came_online()
                            for observation in observations:
                                await self._record(observation)
                            await self._report_overflow()
                    except DriverError as exc:
                        _raise_if_cancelled(task)
                        await self._report_overflow(force=True)
                        await asyncio.sleep(await self.went_offline(exc))
            finally:
                # At a stop too: what the budget refused is on record, counted. The recorder's
                # queue takes it without waiting (the producers are stopping).
                overflow = self.source.take_overflow(force=True)
                if overflow is not None:
                    self.intake.put_nowait(self._overflow_fact(overflow))

    async def _report_overflow(self, *, force: bool = False) -> None:
        overflow = self.source.take_overflow(force=force)
        if overflow is not None:
            await self.intake.put(self._overflow_fact(overflow))

    def _overflow_fact(self, overflow: Overflow) -> Fact:
        config = self.source.config
        log.warning(
            "custody.overflow device=%s refused=%d max_reads_per_sec=%g",
            self.device, overflow.count, config.max_reads_per_sec,
        )  # fmt: skip
        data = {
            "event": SCAN_OVERFLOW, "count": overflow.count,
            "first_at": format_time(overflow.first), "last_at": format_time(overflow.last),
            "max_reads_per_sec": config.max_reads_per_sec, "burst_reads": config.burst_reads,
        }  # fmt: skip
        zone = self.zones.zone_of(self.device)
        return Fact("audit", utc_now(), data, zone=zone, device=self.device)

    async def _record(self, observation: Observation) -> None:
        self.observations += 1
        self.saw_data()
        facts = self.builder.facts(observation)
        if len(facts) > 1:
            self.rejected += 1
            log.warning(
                "custody.scan_invalid device=%s reason=%s",
                self.device,
                facts[0].data["scan"].get("error"),
            )
        for fact in facts:
            await self.intake.put(fact)
