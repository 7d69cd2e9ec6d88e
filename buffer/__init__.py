"""The SQLite outbox (see :mod:`buffer.outbox` for its invariants)."""

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
    "BufferMismatch",
    "BufferStatus",
    "BufferWriteError",
    "Outbox",
    "OutboxError",
    "Row",
]
