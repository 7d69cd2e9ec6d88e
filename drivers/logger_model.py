"""Configuration of a serial data logger (live values, plus its memory read back after gaps)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import ConfigDict, Field

from gxpgate.drivers.record_model import PointRecording, RecordingOptions
from gxpgate.drivers.serial_model import SerialLine
from gxpgate.drivers.units import Unit

if TYPE_CHECKING:
    from gxpgate.drivers.base import BuildContext
    from gxpgate.drivers.logger import LoggerSource

__all__ = ["LoggerPoint", "SerialLoggerDevice"]

Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]


class LoggerPoint(PointRecording):
    """A logger channel that becomes a point."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: str | None = None
    """The logger's own name of the channel; default: the point's name."""
    unit: Unit
    """UCUM unit the logger must report for this channel (checked on every connect)."""
    monitored: bool = True
    """``false``: no rule watches this point, deliberately (a door contact nobody alarms on).
    Otherwise a point in a zone whose profile has rules must be watched by one, or ``gxpgate
    config validate`` says which point is unmonitored and why."""
    calibration_offset: float = 0.0
    """Correction from the logger's calibration certificate, in engineering units."""
    zone: str | None = None
    """Zone of this point when it differs from the device's zone."""


class SerialLoggerDevice(RecordingOptions):
    """A data logger on a serial port: measures on its own and keeps numbered records.

    The gateway reads live values every poll; after any gap (gateway down, cable pulled,
    logger swapped) it reads the logger's stored records for the gap back, in the rest of each
    poll slot, so the central record has no hole. See README "Data loggers".
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["serial_logger"]
    protocol: Literal["gxl"] = "gxl"
    """Line protocol of the logger (``gxl``: GXL/1, see drivers/gxl.py)."""
    serial: SerialLine
    """The serial port, e.g. ``{ port = "/dev/ttyUSB1", baudrate = 9600 }``."""
    zone: str
    """Zone the logger's points are in, unless a point names its own."""
    poll_interval_secs: float = Field(default=60.0, gt=0, le=86400)
    """How often live values are read."""
    timeout_ms: int = Field(default=1000, ge=10, le=60000)
    """How long to wait for each answer line."""
    reconnect_max_secs: float = Field(default=300.0, gt=0, le=3600)
    """Cap of the jittered exponential backoff between reconnect attempts."""
    backfill_chunk_records: int = Field(default=100, ge=1, le=1000)
    """Stored records asked for per request while back-filling."""
    swap_backfill_max_records: int = Field(default=10_000, ge=0, le=1_000_000)
    """When a different logger appears (swapped), how many of its newest records at most are
    read back (those stamped after the last contact with the previous logger are kept)."""
    points: dict[Identifier, LoggerPoint] = Field(min_length=1)
    """Points by name (the record's ``point``)."""

    def channel_of(self, point: str) -> str:
        return self.points[point].channel or point

    @property
    def report_interval_secs(self) -> float:
        """How often the device reports: every poll of live values."""
        return self.poll_interval_secs

    @property
    def changes_only(self) -> bool:
        """Polled: silence is a communication loss."""
        return False

    def build(self, device_id: str, ctx: BuildContext) -> LoggerSource:
        from gxpgate.drivers.logger import (
            LoggerSource,  # pyserial is imported only where it is used
        )

        return LoggerSource(device_id, self)
