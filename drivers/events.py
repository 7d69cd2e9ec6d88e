"""The audit events drivers report: the names a :class:`~gxpgate.drivers.base.DeviceEvent` puts in
``data["event"]``, each with what it means and the fields of ``data`` beside it.

The agent seals each as an ``audit`` record of the device (zone and device set). The drivers
never import the agent, so their names live here; ``agent/recording/audit.py`` lists them with the
agent's own in one vocabulary, and README.md ("Audit records") documents all of them (a test keeps
the three in step).

The names are plain ``str`` constants, not an enum: record data is canonicalised on a fast path
that accepts exact ``str`` only (agent/evidence/record.py), so an enum member would send every
audit record to the slow reference serialiser (the bytes would be the same).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = [
    "BACKFILL_ANSWER_REJECTED",
    "BACKFILL_COMPLETED",
    "BACKFILL_INCOMPLETE",
    "BACKFILL_STARTED",
    "DRIVER_EVENTS",
    "FILE_DUPLICATE",
    "FILE_IMPORTED",
    "FILE_REJECTED",
    "FILE_ROW_MALFORMED",
    "LOGGER_CLOCK",
    "LOGGER_ENROLLED",
    "LOGGER_MEMORY_RESET",
    "LOGGER_POINT_MISMATCH",
    "LOGGER_SWAPPED",
    "MODBUS_PLAN_SPLIT",
    "EventInfo",
]


@dataclass(frozen=True, slots=True)
class EventInfo:
    """What an audit event means (one line: when it is sealed), and the fields its ``data``
    can carry beside ``event``."""

    meaning: str
    fields: tuple[str, ...] = ()


# Modbus (drivers/modbus_common.py)
MODBUS_PLAN_SPLIT: Final = "modbus_plan_split"
# Serial data loggers (drivers/logger.py)
LOGGER_CLOCK: Final = "logger_clock"
LOGGER_ENROLLED: Final = "logger_enrolled"
LOGGER_SWAPPED: Final = "logger_swapped"
LOGGER_MEMORY_RESET: Final = "logger_memory_reset"
LOGGER_POINT_MISMATCH: Final = "logger_point_mismatch"
BACKFILL_STARTED: Final = "backfill_started"
BACKFILL_ANSWER_REJECTED: Final = "backfill_answer_rejected"
BACKFILL_INCOMPLETE: Final = "backfill_incomplete"
BACKFILL_COMPLETED: Final = "backfill_completed"
# Logger files dropped in a folder (drivers/filedrop.py)
FILE_IMPORTED: Final = "file_imported"
FILE_DUPLICATE: Final = "file_duplicate"
FILE_REJECTED: Final = "file_rejected"
FILE_ROW_MALFORMED: Final = "file_row_malformed"

DRIVER_EVENTS: Final[Mapping[str, EventInfo]] = MappingProxyType(
    {
        MODBUS_PLAN_SPLIT: EventInfo(
            "a merged Modbus request the device refused was split in halves down to what it "
            "accepts; the device is read with that plan from now on",
            ("table", "block", "into", "error"),
        ),
        LOGGER_CLOCK: EventInfo(
            "a data logger connected: its clock against the gateway's",
            ("serial", "logger_time", "gateway_time", "offset_secs"),
        ),
        LOGGER_ENROLLED: EventInfo(
            "first contact with a data logger: its serial and the records in its memory",
            ("serial", "model", "first", "last"),
        ),
        LOGGER_SWAPPED: EventInfo(
            "another logger (serial) answers: the previous one's unread gaps are abandoned",
            ("previous", "serial", "abandoned_gaps"),
        ),
        LOGGER_MEMORY_RESET: EventInfo(
            "the logger's record index went backwards (its memory was cleared)",
            ("serial", "last", "expected_at_least"),
        ),
        LOGGER_POINT_MISMATCH: EventInfo(
            "a configured point has no channel on the logger, or the channel reports another unit",
            ("serial", "point", "channel", "expected_unit", "problem"),
        ),
        BACKFILL_STARTED: EventInfo(
            "records missed while the logger was out of reach are read back from its memory",
            ("serial", "first", "last"),
        ),
        BACKFILL_ANSWER_REJECTED: EventInfo(
            "the logger's answer to a back-fill request was refused (tried again next poll; once "
            "per streak)",
            ("serial", "start", "error"),
        ),
        BACKFILL_INCOMPLETE: EventInfo(
            "records were overwritten in the logger's memory before they could be read back",
            ("serial", "lost_first", "lost_last", "reason"),
        ),
        BACKFILL_COMPLETED: EventInfo(
            "every gap is read back from the logger's memory",
            ("serial", "through"),
        ),
        FILE_IMPORTED: EventInfo(
            "a dropped logger file was imported to its end",
            (
                "file",
                "sha256",
                "readings",
                "malformed_rows",
                "first_src_at",
                "last_src_at",
                "kept_at",
            ),
        ),
        FILE_DUPLICATE: EventInfo(
            "a dropped file has the content of one already imported or queued: not imported again",
            ("file", "sha256", "first_imported_as", "kept_at"),
        ),
        FILE_REJECTED: EventInfo(
            "a dropped file cannot be imported at all (set aside)",
            ("file", "sha256", "error", "kept_at"),
        ),
        FILE_ROW_MALFORMED: EventInfo(
            "a row of a dropped file cannot be read (the first 20 of a file)",
            ("file", "sha256", "line", "error"),
        ),
    }
)
