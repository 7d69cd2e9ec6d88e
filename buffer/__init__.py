"""The SQLite outbox (see :mod:`gxpgate.buffer.outbox` for its invariants)."""

from gxpgate.buffer.lock import BufferLock, BufferLocked, lock_holder
from gxpgate.buffer.outbox import (
    MIGRATION_KEY,
    BufferCorrupt,
    BufferMismatch,
    BufferStatus,
    BufferWriteError,
    Outbox,
    OutboxError,
    Row,
)

__all__ = [
    "MIGRATION_KEY",
    "BufferCorrupt",
    "BufferLock",
    "BufferLocked",
    "BufferMismatch",
    "BufferStatus",
    "BufferWriteError",
    "Outbox",
    "OutboxError",
    "Row",
    "lock_holder",
]
