"""Data loggers: live values every poll, and the logger's memory read back after any gap.

A logger numbers its records (1, 2, 3…, never reused). The source's resume state, committed
with every reading it produces (see :class:`gxpgate.drivers.base.ResumableSource`), is::

    {"serial": "L0042", "through": 1234, "gaps": [[1100, 1180]], "skip": 1, "at": "…Z"}

``through`` is the highest record index accounted for: covered by live readings while the
gateway was watching, or listed in ``gaps`` to be read back. ``gaps`` are index ranges still to
back-fill, oldest first; ``skip`` is how many points of the first gap's first record are already
kept (a record's readings may be split across two commits). ``at`` is the last contact.

On every (re)connect the source identifies the logger, measures its clock offset against the
gateway (an ``audit`` record; readings are never re-timed: ``src_at`` is the logger's own
stamp), then:

* same logger, new records since ``through``: they are a gap, appended to ``gaps``;
* a different logger (swapped): the old logger's gaps are abandoned (audited), and the new
  one's newest records since the last contact are read back (at most
  ``swap_backfill_max_records``);
* the first contact ever: nothing is read back (``logger_enrolled``); a logger's history from
  before gxpgate watched it is a file import (``csv_drop``), not a back-fill.

While connected, each live read moves ``through`` to the logger's newest index, but only once
no gap is pending: the agent gives the rest of each poll slot to :meth:`LoggerSource.catch_up`,
which reads one chunk of the oldest gap. Back-filled readings carry ``data: {"backfill": true,
"record": index, "logger": serial}``. Records overwritten before they could be read are an
``backfill_incomplete`` audit naming the lost indices.

Protocols: a session offers ``identify``, ``clock``, ``live`` and ``records``
(:class:`LoggerSession`); ``protocol = "gxl"`` is :mod:`gxpgate.drivers.logger_gxl`. Another
protocol is one more module and one more line in :func:`_session`.
"""

from __future__ import annotations

import copy
import logging
import math
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Protocol

from gxpgate.drivers.base import DeviceEvent, DeviceUnreachable, DriverError, Sample, utc_now
from gxpgate.drivers.events import (
    BACKFILL_ANSWER_REJECTED,
    BACKFILL_COMPLETED,
    BACKFILL_INCOMPLETE,
    BACKFILL_STARTED,
    LOGGER_CLOCK,
    LOGGER_ENROLLED,
    LOGGER_MEMORY_RESET,
    LOGGER_POINT_MISMATCH,
    LOGGER_SWAPPED,
)
from gxpgate.drivers.gxl import GxlDeviceError, GxlError, LoggerIdentity, LoggerRecord
from gxpgate.drivers.logger_model import SerialLoggerDevice
from gxpgate.drivers.serial_channel import ChannelError, SerialChannel

__all__ = ["LoggerSession", "LoggerSource"]

log = logging.getLogger(__name__)


class LoggerSession(Protocol):
    """One logger protocol over an open channel. Raises ``TimeoutError`` (no answer),
    :class:`~gxpgate.drivers.serial_channel.ChannelError` (port failed) or ``ValueError`` (an answer
    that is garbled or refused)."""

    async def identify(self) -> LoggerIdentity: ...

    async def clock(self) -> datetime: ...

    async def live(self, points: list[str]) -> LoggerRecord: ...

    async def records(self, start: int, count: int, points: list[str]) -> list[LoggerRecord]: ...


def _session(config: SerialLoggerDevice, channel: SerialChannel) -> LoggerSession:
    from gxpgate.drivers.logger_gxl import GxlSession

    return GxlSession(channel, config.timeout_ms / 1000)


class LoggerSource:
    """A polled, resumable source for one serial data logger. Not safe for concurrent calls."""

    def __init__(self, device_id: str, config: SerialLoggerDevice) -> None:
        self.device_id = device_id
        self.config = config
        self.poll_interval_secs = config.poll_interval_secs
        self._channel = SerialChannel(config.serial)
        self._session = _session(config, self._channel)
        self._state: dict[str, Any] | None = None
        self._identity: LoggerIdentity | None = None
        self._events: list[DeviceEvent] = []
        self._rejected_streak = 0

    # -- ResumableSource ----------------------------------------------------------------------

    def restore(self, state: dict[str, Any]) -> None:
        saved = state.get("logger")
        self._state = copy.deepcopy(saved) if isinstance(saved, dict) else None

    def drain_events(self) -> list[DeviceEvent]:
        events, self._events = self._events, []
        return events

    async def __aenter__(self) -> LoggerSource:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._disconnect()

    def describe(self) -> list[str]:
        cfg = self.config
        line = cfg.serial
        points = ", ".join(f"{name} <- {cfg.channel_of(name)}" for name in cfg.points)
        return [
            f"serial_logger ({cfg.protocol}) on {line.port} {line.baudrate} baud: {points}",
        ]

    # -- live polling -------------------------------------------------------------------------

    async def read(self) -> list[Sample]:
        try:
            if self._identity is None:
                await self._connect()
            identity = await self._session.identify()
            if self._identity is not None and identity.serial != self._identity.serial:
                self._disconnect()  # swapped while connected: go through a full connect
                await self._connect()
                identity = await self._session.identify()
            record = await self._session.live(self._channels(identity))
        except (TimeoutError, ChannelError) as exc:
            self._disconnect()
            raise self._unreachable(exc) from exc
        except (GxlDeviceError, GxlError) as exc:
            return self._bad_live(f"unparsable logger answer: {exc}")
        self._identity = identity
        at = utc_now()
        cursor = None
        if self._state is not None and not self._state["gaps"]:
            self._state["through"] = max(self._state["through"], identity.last)
            self._state["at"] = _iso(at)
            cursor = {"logger": self._snapshot()}
        return self._samples(record, at, {}, cursor, 0)

    async def _connect(self) -> None:
        if not self._channel.is_open:
            self._channel.open()
        identity = await self._session.identify()
        logger_time = await self._session.clock()
        now = utc_now()
        offset = (logger_time - now).total_seconds()
        self._event(
            LOGGER_CLOCK,
            serial=identity.serial,
            logger_time=_iso(logger_time),
            gateway_time=_iso(now),
            offset_secs=round(offset, 3),
        )
        self._check_points(identity)
        self._plan_backfill(identity, offset, now)
        self._identity = identity

    def _plan_backfill(self, identity: LoggerIdentity, offset: float, now: datetime) -> None:
        state = self._state
        if state is None:
            self._state = {"serial": identity.serial, "through": identity.last, "gaps": [],
                           "skip": 0, "at": _iso(now)}  # fmt: skip
            self._event(
                LOGGER_ENROLLED,
                serial=identity.serial,
                model=identity.model,
                first=identity.first,
                last=identity.last,
            )
            return
        if identity.serial != state["serial"]:
            self._event(
                LOGGER_SWAPPED,
                previous=state["serial"],
                serial=identity.serial,
                abandoned_gaps=state["gaps"],
            )
            last_contact = datetime.fromisoformat(state["at"].replace("Z", "+00:00"))
            missed = math.ceil((now - last_contact).total_seconds() / identity.interval_secs) + 1
            count = min(missed, self.config.swap_backfill_max_records)
            start = max(identity.first, identity.last - count + 1)
            gaps = [[start, identity.last]] if count and identity.last >= start else []
            self._state = state = {"serial": identity.serial, "through": identity.last,
                                   "gaps": gaps, "skip": 0, "at": state["at"],
                                   "not_before": state["at"], "offset": offset}  # fmt: skip
        elif identity.last > state["through"]:
            state["gaps"].append([state["through"] + 1, identity.last])
            state["through"] = identity.last
        elif identity.last < state["through"]:
            self._event(
                LOGGER_MEMORY_RESET,
                serial=identity.serial,
                last=identity.last,
                expected_at_least=state["through"],
            )
            state["through"] = identity.last
        if state["gaps"]:
            first, last = state["gaps"][0][0], state["gaps"][-1][1]
            self._event(BACKFILL_STARTED, serial=identity.serial, first=first, last=last)

    # -- back-fill ----------------------------------------------------------------------------

    async def catch_up(self) -> list[Sample] | None:
        state, identity = self._state, self._identity
        if state is None or identity is None or not state["gaps"]:
            return None
        start, end = state["gaps"][0]
        count = min(self.config.backfill_chunk_records, end - start + 1)
        try:
            records = await self._session.records(start, count, self._channels(identity))
        except (TimeoutError, ChannelError) as exc:
            self._disconnect()
            raise self._unreachable(exc) from exc
        except (GxlDeviceError, GxlError) as exc:
            self._rejected_streak += 1
            if self._rejected_streak == 1:
                self._event(BACKFILL_ANSWER_REJECTED, serial=identity.serial, start=start,
                            error=str(exc))  # fmt: skip
            return None  # tried again in the next poll slot
        self._rejected_streak = 0
        records = [r for r in records if r.index is not None and start <= r.index <= end]
        if not records or records[0].index != start:
            lost_to = (records[0].index - 1) if records and records[0].index else end
            self._event(BACKFILL_INCOMPLETE, serial=identity.serial, lost_first=start,
                        lost_last=lost_to, reason="overwritten in the logger's memory")  # fmt: skip
            self._advance(lost_to, drop_skip=True)
            if not records:
                return []
        samples: list[Sample] = []
        for record in records:
            assert record.index is not None
            skip = state["skip"] if record.index == state["gaps"][0][0] else 0
            if self._before_cutoff(record):
                self._advance(record.index, drop_skip=True)
                continue
            data = {"backfill": True, "record": record.index, "logger": identity.serial}
            samples.extend(self._samples(record, utc_now(), data, None, skip, backfill=True))
        if not state["gaps"]:
            self._event(BACKFILL_COMPLETED, serial=identity.serial, through=state["through"])
        return samples

    def _before_cutoff(self, record: LoggerRecord) -> bool:
        """A swapped-in logger's records from before the last contact are not this zone's."""
        state = self._state
        assert state is not None
        if "not_before" not in state:
            return False
        not_before = datetime.fromisoformat(state["not_before"].replace("Z", "+00:00"))
        return record.at - timedelta(seconds=state.get("offset", 0.0)) <= not_before

    def _advance(self, index: int, *, drop_skip: bool = False, skip: int = 0) -> None:
        """Everything up to record ``index`` (and ``skip`` points of the next) is kept."""
        state = self._state
        assert state is not None
        gaps = state["gaps"]
        while gaps and gaps[0][1] <= index:
            gaps.pop(0)
        if gaps and gaps[0][0] <= index:
            gaps[0][0] = index + 1
        state["skip"] = 0 if drop_skip else skip
        if not gaps:
            state.pop("not_before", None)
            state.pop("offset", None)

    def _snapshot(self) -> dict[str, Any]:
        """The resume state as it stands after this sample. Taken per back-filled reading, so
        only the one mutable part (the gap list) is copied, not the whole state deeply."""
        state = self._state
        assert state is not None
        return {**state, "gaps": [[first, last] for first, last in state["gaps"]]}

    # -- samples ------------------------------------------------------------------------------

    def _channels(self, identity: LoggerIdentity) -> list[str]:
        return list(identity.points)

    def _check_points(self, identity: LoggerIdentity) -> None:
        for point, cfg in self.config.points.items():
            channel = cfg.channel or point
            unit = identity.points.get(channel)
            if unit != cfg.unit:
                why = "has no such channel" if unit is None else f"reports unit {unit!r}"
                self._event(LOGGER_POINT_MISMATCH, serial=identity.serial, point=point,
                            channel=channel, expected_unit=cfg.unit, problem=why)  # fmt: skip

    def _samples(
        self,
        record: LoggerRecord,
        at: datetime,
        data: dict[str, Any],
        cursor: dict[str, Any] | None,
        skip: int,
        *,
        backfill: bool = False,
    ) -> list[Sample]:
        samples = []
        points = list(self.config.points.items())
        for position, (point, cfg) in enumerate(points):
            if position < skip:
                continue
            channel = cfg.channel or point
            if backfill:
                assert record.index is not None
                done_all = position == len(points) - 1
                self._advance(
                    record.index if done_all else record.index - 1,
                    skip=0 if done_all else position + 1,
                )
                cursor = {"logger": self._snapshot()}
            if channel not in record.values:
                error = f"the logger has no channel {channel!r}"
                samples.append(self._bad(point, cfg.unit, at, record.at, data, error, cursor))
            elif record.values[channel] is None:
                error = "the logger reports a sensor fault (ERR)"
                samples.append(self._bad(point, cfg.unit, at, record.at, data, error, cursor))
            else:
                value = float(record.values[channel] or 0.0) + cfg.calibration_offset
                samples.append(
                    Sample(point, value, cfg.unit, "good", at, record.at, dict(data), cursor)
                )
        return samples

    def _bad(
        self,
        point: str,
        unit: str,
        at: datetime,
        src_at: datetime | None,
        data: dict[str, Any],
        error: str,
        cursor: dict[str, Any] | None,
    ) -> Sample:
        return Sample(point, None, unit, "bad", at, src_at, {**data, "error": error}, cursor)

    def _bad_live(self, error: str) -> list[Sample]:
        at = utc_now()
        points = self.config.points.items()
        return [self._bad(p, c.unit, at, None, {}, error, None) for p, c in points]

    # -- plumbing -----------------------------------------------------------------------------

    def _unreachable(self, exc: BaseException) -> DriverError:
        if isinstance(exc, TimeoutError):
            error = f"no answer within {self.config.timeout_ms} ms"
        else:
            error = str(exc)
        at = utc_now()
        points = self.config.points.items()
        bad = [self._bad(p, c.unit, at, None, {}, error, None) for p, c in points]
        return DeviceUnreachable(self.device_id, error, bad)

    def _disconnect(self) -> None:
        self._identity = None
        self._channel.close()

    def _event(self, name: str, **data: Any) -> None:
        self._events.append(DeviceEvent({"event": name, **data}))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
