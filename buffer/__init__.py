"""The SQLite outbox (see :mod:`gxpgate.buffer.outbox` for its invariants)."""

from gxpgate.buffer.lock import BufferLock, BufferLocked, lock_holder
from gxpgate.buffer.outbox import (
    BufferCorrupt,
    BufferMismatch,
    BufferStatus,
    BufferWriteError,
    Outbox,
    OutboxError,
    Row,
)

__all__ = [
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
