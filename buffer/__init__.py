"""The SQLite outbox (see :mod:`buffer.outbox` for its invariants)."""

from .lock import BufferLock, BufferLocked, lock_holder
from .outbox import (
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
