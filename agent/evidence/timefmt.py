"""The time text of records (CONTRACT §1): RFC 3339 UTC with microseconds and a ``Z``."""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = ["format_time", "parse_time"]

_ZERO = timedelta(0)


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2026-11-21T10:00:00.123456Z``."""
    if moment.utcoffset() != _ZERO:
        raise ValueError(f"{moment!r} is not an aware UTC time")
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"  # drop "+00:00"


def parse_time(text: str) -> datetime:
    """The moment a record's time names (the inverse of :func:`format_time`)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
