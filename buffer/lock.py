"""One agent per buffer: an exclusive ``flock`` on ``<buffer>.lock``, held while the agent runs.

Two agents sealing into one chain would each assign the same ``seq``; the second's commits fail
and both drive the same outputs. The lock is taken before anything else opens the buffer, and
the file holds the last holder's pid so the refusal can say who it is. ``flock`` locks are released
by the kernel when the process dies, so a ``kill -9`` never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from gxpgate.buffer.outbox import OutboxError

__all__ = ["BufferLock", "BufferLocked", "lock_holder"]


class BufferLocked(OutboxError):
    """Another process holds the buffer's lock; the message names its pid."""

    def __init__(self, message: str, pid: str) -> None:
        super().__init__(message)
        self.pid = pid


class BufferLock:
    """A context manager holding the exclusive lock beside ``buffer``."""

    def __init__(self, buffer: Path) -> None:
        self.path = buffer.with_name(buffer.name + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> BufferLock:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise BufferLocked(
                f"another gxpgate (pid {holder}) is running on {self.path.with_suffix('')}; "
                "stop it first (systemctl stop gxpgate)",
                holder,
            ) from None
        # Best effort: on a full disk the pid may not fit, and the lock is what matters. The
        # file is never emptied, so rewriting its first block needs no new space.
        with contextlib.suppress(OSError):
            os.pwrite(fd, f"{os.getpid():<10}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def lock_holder(buffer: Path) -> str | None:
    """The pid of the agent running on ``buffer`` (as its lock file says), or None when no
    process holds the lock. Creates nothing."""
    lock = BufferLock(buffer)
    if not lock.path.exists():
        return None
    try:
        with lock:
            return None
    except BufferLocked as exc:
        return exc.pid
    except OSError:
        return None
