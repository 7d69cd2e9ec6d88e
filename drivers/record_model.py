"""How much of a point's sampling is sealed: the recording policy's config (issue 17).

``record = "every_sample"`` (the default) seals every reading. ``record = "interval"`` seals a
reading when it matters and at least once per ``record_interval_secs``; every reading is still
judged by the rules (see :mod:`gxpgate.agent.alarms.sampling` for when a reading is sealed and
what the sealed record says about the ones in between). Set on a device; a point may override
any of the three.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["PointRecording", "RecordMode", "RecordingOptions", "point_recording"]

RecordMode = Literal["every_sample", "interval"]


class RecordingOptions(BaseModel):
    """A device's recording policy (the default of its points)."""

    record: RecordMode = "every_sample"
    """``every_sample``: each reading is sealed. ``interval``: sealed when it matters, else once
    per ``record_interval_secs`` with the interval's ``min``/``max``/``mean``/``count``."""
    record_interval_secs: float = Field(default=60.0, gt=0, le=86400)
    """The longest a point goes without a sealed reading while it answers (``interval``)."""
    record_deadband: float = Field(default=0.0, ge=0)
    """A reading further than this from the last sealed one (in the point's unit) is sealed."""


class PointRecording(BaseModel):
    """A point's override of its device's recording policy (unset: the device's)."""

    record: RecordMode | None = None
    record_interval_secs: float | None = Field(default=None, gt=0, le=86400)
    record_deadband: float | None = Field(default=None, ge=0)


def point_recording(device: object, point: object) -> tuple[RecordMode, float, float]:
    """The policy in force for ``point`` of ``device``: (mode, interval, deadband); every
    sample for a device kind without a recording policy (scanners, file drops)."""
    if not isinstance(device, RecordingOptions):
        return "every_sample", 0.0, 0.0
    mode, interval, deadband = device.record, device.record_interval_secs, device.record_deadband
    if isinstance(point, PointRecording):
        mode = point.record or mode
        interval = point.record_interval_secs or interval
        deadband = deadband if point.record_deadband is None else point.record_deadband
    return mode, interval, deadband
