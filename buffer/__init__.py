"""The SQLite outbox (see :mod:`buffer.outbox` for its invariants)."""

from .lock import BufferLock, BufferLocked
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
]
