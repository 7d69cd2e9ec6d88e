"""The agent's health at one moment, copied from its components on the event loop.

:func:`take_snapshot` reads the components it is given (device tasks, recorder, uplink
statistics, alarm engine, clock monitor, buffer guard) and never the ``Agent`` itself, so the
readers of health (the metrics endpoint, the sd_notify status line) depend on the components,
not on the process that composes them. A :class:`Snapshot` is immutable: any thread may read it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from gxpgate.config.model import GatewayConfig

if TYPE_CHECKING:
    from gxpgate.agent.alarms.rules import Engine
    from gxpgate.agent.health.capacity import BufferGuard
    from gxpgate.agent.health.clock import ClockMonitor
    from gxpgate.agent.recording.recorder import Recorder
    from gxpgate.agent.uplink.base import UplinkStats
    from gxpgate.buffer import Outbox

__all__ = [
    "SEVERITIES",
    "DeviceHealth",
    "DeviceState",
    "Snapshot",
    "UplinkHealth",
    "status_line",
    "take_snapshot",
]

SEVERITIES = ("warning", "alarm")


class DeviceState(Protocol):
    """What a device task (poller or streamer) shows of its health."""

    @property
    def device(self) -> str: ...
    @property
    def up(self) -> bool | None: ...
    @property
    def last_data(self) -> float | None: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def readings(self) -> int: ...
    @property
    def failing(self) -> object | None: ...


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    device: str
    type: str
    zone: str
    up: bool | None
    last_data: float | None
    """``time.monotonic()`` of the last live good reading or scan."""
    last_error: str | None
    failing: bool = False
    """Answering with nothing but bad values (see :mod:`gxpgate.agent.devices.supervisor`)."""
    readings: int = 0
    """Readings taken since start, sealed or not (see the recording policy)."""


@dataclass(frozen=True, slots=True)
class UplinkHealth:
    errors_by_kind: tuple[tuple[str, int], ...]
    last_error: str | None
    last_success: float | None
    """Unix time."""
    batches: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The loop-owned part of the agent's health at one moment; immutable, so any thread may
    read it."""

    taken: float
    """``time.monotonic()`` when taken."""
    devices: tuple[DeviceHealth, ...]
    sealed: int
    uplink: UplinkHealth | None
    alarms_active: tuple[tuple[str, bool, int], ...]
    """(severity, acknowledged, count) for every severity, both states."""
    alarms_pending: int
    alarms_cleared_unacked: int
    clock_synchronized: bool | None = None
    clock_steps: int = 0
    buffer_thinning: bool = False
    readings_thinned: int = 0
    backlog: int | None = None
    """Records sealed but not acknowledged, with an uplink; None without one."""


def take_snapshot(
    *,
    devices: Sequence[DeviceState],
    config: GatewayConfig,
    recorder: Recorder | None = None,
    uplink: UplinkStats | None = None,
    alarms: Engine | None = None,
    clock: ClockMonitor | None = None,
    guard: BufferGuard | None = None,
    outbox: Outbox | None = None,
) -> Snapshot:
    """Copy what health reporting needs out of the components' loop-owned state (call on the
    loop). ``outbox`` gives the backlog when there is an ``uplink``."""
    health = tuple(
        DeviceHealth(
            task.device,
            config.devices[task.device].type,
            config.devices[task.device].zone,
            task.up,
            task.last_data,
            task.last_error,
            task.failing is not None,
            task.readings,
        )
        for task in devices
    )
    uplink_health = backlog = None
    if uplink is not None:
        uplink_health = UplinkHealth(
            tuple(uplink.errors_by_kind.items()), uplink.last_error, uplink.last_success,
            uplink.batches,
        )  # fmt: skip
        if outbox is not None:
            backlog = outbox.last_seq - outbox.acked_through
    active = {(s, a): 0 for s in SEVERITIES for a in (False, True)}
    pending = cleared = 0
    if alarms is not None:
        for view in alarms.alarms():
            if view.state == "pending":
                pending += 1
            elif view.state == "cleared":
                cleared += 1
            else:
                key = (view.severity, view.state == "acknowledged")
                active[key] = active.get(key, 0) + 1
    return Snapshot(
        taken=time.monotonic(),
        devices=health,
        sealed=recorder.sealed if recorder is not None else 0,
        uplink=uplink_health,
        alarms_active=tuple((s, a, n) for (s, a), n in active.items()),
        alarms_pending=pending,
        alarms_cleared_unacked=cleared,
        clock_synchronized=clock.synchronized if clock is not None else None,
        clock_steps=clock.steps if clock is not None else 0,
        buffer_thinning=guard is not None and guard.thinning,
        readings_thinned=sum(guard.thinned.values()) if guard is not None else 0,
        backlog=backlog,
    )


def status_line(snapshot: Snapshot) -> str:
    """A short human summary for systemd, e.g. ``5/6 devices up, backlog 12 records, uplink
    ok``. A device counts as up until it has failed (as the device tasks count it)."""
    up = sum(1 for d in snapshot.devices if d.up is not False)
    parts = [f"{up}/{len(snapshot.devices)} devices up"]
    if snapshot.uplink is None:
        parts.append("no uplink")
    else:
        if snapshot.backlog is not None:
            parts.append(f"backlog {snapshot.backlog} records")
        error = snapshot.uplink.last_error
        parts.append("uplink ok" if error is None else f"uplink failing: {error}")
    return ", ".join(parts)
