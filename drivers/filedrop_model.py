"""Configuration of a logger-file drop folder (CSV files read out of data loggers)."""

from __future__ import annotations

import zoneinfo
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gxpgate.drivers.units import Unit

if TYPE_CHECKING:
    from gxpgate.drivers.base import BuildContext
    from gxpgate.drivers.filedrop import CsvDropSource

__all__ = ["CsvColumn", "CsvDropDevice"]

Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]


class CsvColumn(BaseModel):
    """A CSV column that becomes a point."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field(min_length=1)
    """Header of the column in the file, exactly as written (e.g. ``Temperature [°C]``)."""
    unit: Unit = "1"
    """UCUM unit code of the value: ``Cel``, ``%``, ``hPa``, ``1``."""
    monitored: bool = True
    """``false``: no rule watches this point, deliberately (a door contact nobody alarms on).
    Otherwise a point in a zone whose profile has rules must be watched by one, or ``gxpgate
    config validate`` says which point is unmonitored and why."""
    calibration_offset: float = 0.0
    """Correction from the logger's calibration certificate, in engineering units."""
    zone: str | None = None
    """Zone of this point when it differs from the device's zone."""


class CsvDropDevice(BaseModel):
    """A folder where logger read-outs (CSV) are dropped: each new file is imported once.

    A file is claimed before it is read (moved into ``imported/`` or marked with a
    ``NAME.imported`` sidecar), and its progress is committed line by line with its readings,
    so a restart resumes inside a file without repeating or skipping a row. The same content
    dropped again (by SHA-256) is reported and not imported twice.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["csv_drop"]
    folder: Path
    """Folder to watch (a USB mount point or a network share)."""
    pattern: str = "*.csv"
    """Which files to import (shell pattern, matched case-sensitively)."""
    zone: str
    """Zone the logger's points are in, unless a column names its own."""
    poll_interval_secs: float = Field(default=30.0, gt=0, le=86400)
    """How often the folder is looked at."""
    settle_secs: float = Field(default=5.0, ge=0, le=3600)
    """A file is imported once it has not changed for this long (a copy may be in progress)."""
    after_import: Literal["move", "mark"] = "move"
    """``move`` into the ``imported/`` subfolder, or ``mark`` with a ``NAME.imported`` file
    beside it (for read-only shares that do not allow renames use ``mark``)."""
    encoding: str = "utf-8-sig"
    """Text encoding of the files (``utf-8-sig`` also accepts a byte-order mark; loggers on
    Windows often write ``cp1252``)."""
    delimiter: Literal[",", ";", "\t"] = ","
    decimal: Literal[".", ","] = "."
    """Decimal separator of the values."""
    skip_lines: int = Field(default=0, ge=0, le=1000)
    """Lines before the header row (logger preambles: model, serial, start time)."""
    time_column: str = Field(default="time", min_length=1)
    """Header of the column with each row's time (the logger's record time: ``src_at``)."""
    time_format: str = "iso8601"
    """``iso8601`` or a ``strptime`` format such as ``%d.%m.%Y %H:%M:%S``."""
    timezone: str = "UTC"
    """IANA zone of times written without an offset, e.g. ``Europe/Zurich``."""
    reconnect_max_secs: float = Field(default=300.0, gt=0, le=3600)
    """Cap of the backoff while the folder is unreachable."""
    points: dict[Identifier, CsvColumn] = Field(min_length=1)
    """Points by name (the record's ``point``), each read from one column."""

    @property
    def report_interval_secs(self) -> float:
        """How often the folder is looked at."""
        return self.poll_interval_secs

    @property
    def changes_only(self) -> bool:
        """Files arrive when someone brings one: silence is normal, and comm loss counts from
        the folder becoming unreachable."""
        return True

    def build(self, device_id: str, ctx: BuildContext) -> CsvDropSource:
        from gxpgate.drivers.filedrop import CsvDropSource

        return CsvDropSource(device_id, self)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from None
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}") from None
        return value
