"""The seam between drivers and the agent.

A *source* is an async context manager that owns its connection. A polled source offers
``read()``, which returns one :class:`Sample` per configured point; a pushed source offers
``stream()``, which yields samples as the device reports them. Sources start no tasks and own no
timers: the agent decides when to call ``read()`` or iterate ``stream()`` and never does either
concurrently on one source, so a source needs no locking of its own.

Each device's config model builds its source (``build(device_id, ctx)``), importing its driver
only then: validating a config loads no protocol library. The :class:`BuildContext` carries
what sources built from one config share (the Modbus RTU buses).

Exceptions::

    DriverError                 anything a driver reports; ``device`` names the device
    └── DeviceUnreachable       no answer at all: connect failure, timeout, dropped connection

A device that answers with an error (a Modbus exception response) is reachable: its points come
back as ``bad``-quality samples with the error in ``data``, and ``read()`` does not raise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeGuard

if TYPE_CHECKING:
    from gxpgate.drivers.modbus_model import ModbusRtuBus
    from gxpgate.drivers.modbus_rtu import RtuBus

__all__ = [
    "BuildContext",
    "DeviceEvent",
    "DeviceUnreachable",
    "DriverError",
    "PolledSource",
    "PushedSource",
    "Quality",
    "ResumableSource",
    "Sample",
    "is_pushed",
    "utc_now",
]

Quality = Literal["good", "uncertain", "bad"]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Sample:
    """One acquired value of one point. ``at`` is the gateway's acquisition time (UTC)."""

    point: str
    value: float | None
    unit: str | None
    quality: Quality
    at: datetime
    src_at: datetime | None = None
    data: dict[str, Any] = field(default_factory=dict)
    cursor: dict[str, Any] | None = None
    """Entries of the source's resume state (name → JSON-able value) to commit together with
    this sample (see :class:`ResumableSource`)."""


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """Something about the device itself that belongs on record as an ``audit`` entry: a clock
    offset measured, a back-fill started or finished, a file imported. ``data["event"]`` names
    it, one of the names in :mod:`gxpgate.drivers.events`."""

    data: dict[str, Any]
    at: datetime = field(default_factory=lambda: utc_now())
    cursor: dict[str, Any] | None = None
    """Resume state entries to commit with this event's record, as :attr:`Sample.cursor`."""


class DriverError(Exception):
    """A device-level failure, translated from the protocol library once, naming the device."""

    def __init__(self, device: str, message: str) -> None:
        super().__init__(f"{device}: {message}")
        self.device = device
        self.message = message


class DeviceUnreachable(DriverError):
    """The device did not answer (connection refused or dropped, timeout).

    ``samples`` holds one sample per point for the failed read: what was read before the failure
    and ``bad`` samples with the error for the rest, so the attempt itself is on record.
    """

    def __init__(self, device: str, message: str, samples: Sequence[Sample] = ()) -> None:
        super().__init__(device, message)
        self.samples = list(samples)


class PolledSource(Protocol):
    """A source the agent polls. ``read`` is never called concurrently on one source."""

    device_id: str
    poll_interval_secs: float

    async def __aenter__(self) -> PolledSource: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def read(self) -> list[Sample]:
        """Read every configured point once; raise :class:`DeviceUnreachable` on no answer."""
        ...

    def describe(self) -> list[str]:
        """Human-readable lines on what the source reads (for ``gxpgate devices test``)."""
        ...


class PushedSource(Protocol):
    """A source that reports on its own (an OPC UA subscription); the agent iterates
    :meth:`stream` and never polls it."""

    device_id: str
    poll_interval_secs: float

    async def __aenter__(self) -> PushedSource: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def stream(self) -> AsyncIterator[list[Sample]]:
        """Batches of samples as the device reports them; ``[]`` first, once subscribed.
        Raises :class:`DriverError` when the connection is lost."""
        ...


def is_pushed(source: object) -> TypeGuard[PushedSource]:
    """Whether the agent iterates the source's ``stream()`` rather than polling ``read()``: its
    ``pushed`` flag (an OPC UA source's mode decides it; sources that are only polled have none)."""
    return bool(getattr(source, "pushed", False))


@dataclass
class BuildContext:
    """What the sources built from one config share; one per build of the config's devices
    (an agent start, a ``gxpgate devices test``). Not thread-safe: build on one thread."""

    buses: Mapping[str, ModbusRtuBus] = field(default_factory=dict)
    """The config's ``[buses]``: serial lines with Modbus RTU slaves, by name."""
    rtu_buses: dict[str, RtuBus] = field(default_factory=dict)
    """The :class:`~gxpgate.drivers.modbus_rtu.RtuBus` of each line built so far: the slaves of one
    line share it, so their requests are serialised."""


class ResumableSource(Protocol):
    """Optional extras of a polled source that must not lose or repeat data across restarts
    (a data logger's memory, a folder of files).

    A source's resume state is a set of named entries. A sample's ``cursor`` holds the entries
    that change once the sample is kept, and they are committed in the same transaction as the
    sample. The agent calls :meth:`restore` once before entering the source, with every entry
    committed so far (empty the first time). :meth:`catch_up` is called between polls while the
    poll slot has time left: it returns the next chunk of old data (a logger's stored records),
    or ``None`` when there is nothing to catch up. :meth:`drain_events` returns the
    :class:`DeviceEvent` s that arose since the last call.
    """

    def restore(self, state: dict[str, Any]) -> None: ...

    async def catch_up(self) -> list[Sample] | None: ...

    def drain_events(self) -> list[DeviceEvent]: ...
