"""The systemd notify protocol (sd_notify(3)), spoken directly over ``$NOTIFY_SOCKET``.

A message is one datagram of newline-separated ``NAME=value`` assignments sent to the Unix
datagram socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace).
The agent sends:

- ``READY=1`` (with ``STATUS=`` and ``MAINPID=``) once the key is loaded, the buffer is open and
  its chain tail verified, and the devices are being polled;
- ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` (the interval sd_watchdog_enabled(3) advises),
  from a task on the event loop: when the loop is stuck, the keep-alives stop and systemd
  restarts the service. They are also withheld once the recorder (the single writer) has
  stopped, because a gateway that seals nothing is not alive;
- ``STATUS=`` a one-line summary (devices up, backlog, uplink), whenever it changes;
- ``STOPPING=1`` as soon as shutdown begins (systemd then disarms the watchdog and waits for
  the final flush under ``TimeoutStopSec``).

Without ``$NOTIFY_SOCKET`` every call is a no-op: the agent runs the same without systemd. A
failed send never stops the agent; it is logged once per episode. ``$WATCHDOG_PID``, when set
to another process, means the watchdog is not ours to feed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

from gxpgate.agent._retry import Episode

__all__ = ["STATUS_EVERY_SECS", "Notifier"]

log = logging.getLogger(__name__)

STATUS_EVERY_SECS = 2.0
"""How often the status summary is rebuilt; it is sent only when it differs from the last."""

_STATUS_MAX_CHARS = 200


class Notifier:
    """Sends sd_notify messages to ``address``; every method is a no-op when it is ``None``.

    Not thread-safe: call it from the event loop. Sends never block (the socket is
    non-blocking; a full queue at systemd's end counts as a failed send).
    """

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_interval_secs = (
            None if address is None or not watchdog_usec else watchdog_usec / 2 / 1e6
        )
        """Seconds between keep-alives: half the watchdog timeout, or ``None`` (no watchdog)."""
        self._socket: socket.socket | None = None
        self._sending = Episode(
            log,
            "sdnotify.send_failed socket=%s error=%s",
            "sdnotify.recovered socket=%s",
            _printable(address or ""),
            levels=(logging.WARNING, logging.INFO),
        )
        self._status: str | None = None
        self._stopping = False

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, pid: int | None = None
    ) -> Notifier:
        """The notifier systemd asked for through ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and
        ``WATCHDOG_PID``; a disabled one when there is none (or it is unusable, said once)."""
        env = os.environ if environ is None else environ
        pid = os.getpid() if pid is None else pid
        raw = env.get("NOTIFY_SOCKET", "")
        if not raw:
            return cls(None)
        if raw.startswith("@"):
            address = "\0" + raw[1:]  # Linux abstract namespace
        elif raw.startswith("/"):
            address = raw
        else:  # e.g. vsock:CID:PORT, for a service inside a VM: not supported here
            log.warning("sdnotify.unsupported_socket socket=%s", raw)
            return cls(None)
        return cls(address, watchdog_usec=_watchdog_usec(env, pid))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``assignments`` as one message; True when it was sent."""
        if self.address is None:
            return False
        message = "\n".join(assignments).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(message, self.address)
        except OSError as exc:
            self._sending.fail(str(exc.strerror or exc))
            return False
        self._sending.recover()
        return True

    def ready(self, status: str) -> None:
        self._status = _one_line(status)
        self.notify("READY=1", f"STATUS={self._status}", f"MAINPID={os.getpid()}")

    def status(self, text: str) -> None:
        """Send ``STATUS=text`` unless it is what systemd already shows."""
        text = _one_line(text)
        if text != self._status and self.notify(f"STATUS={text}"):
            self._status = text

    def watchdog(self) -> None:
        # Not after STOPPING: the keep-alive task is cancelled right after it, but a child of a
        # task group whose sleep ended in the same loop turn still runs once before it sees that.
        if not self._stopping:
            self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        """Say shutdown has begun (once; later calls do nothing)."""
        if not self._stopping:
            self._stopping = True
            self.notify("STOPPING=1")

    async def run(
        self,
        status: Callable[[], str],
        alive: Callable[[], bool],
        *,
        status_every_secs: float = STATUS_EVERY_SECS,
    ) -> None:
        """Feed the watchdog while ``alive()`` and keep ``STATUS=`` current, until cancelled.

        Runs on the event loop on purpose: a keep-alive sent from a thread would carry on
        while the loop is blocked and hide exactly the failure the watchdog exists for.
        """
        if self.address is None:
            return
        async with asyncio.TaskGroup() as group:
            if self.watchdog_interval_secs is not None:
                group.create_task(self._keep_alive(alive, self.watchdog_interval_secs))
            group.create_task(self._report(status, status_every_secs))

    async def _keep_alive(self, alive: Callable[[], bool], interval: float) -> None:
        withheld = False
        while True:
            if alive():
                self.watchdog()
            elif not withheld:
                withheld = True
                log.error("sdnotify.watchdog_withheld reason=%s", "the recorder has stopped")
            await asyncio.sleep(interval)

    async def _report(self, status: Callable[[], str], every: float) -> None:
        while True:
            await asyncio.sleep(every)
            self.status(status())

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _watchdog_usec(env: Mapping[str, str], pid: int) -> int | None:
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None  # inherited from a parent that systemd watches
    raw = env.get("WATCHDOG_USEC", "")
    if not raw:
        return None
    try:
        usec = int(raw)
    except ValueError:
        usec = 0
    if usec <= 0:
        log.warning("sdnotify.bad_watchdog_usec value=%s", raw)
        return None
    return usec


def _one_line(text: str) -> str:
    """A newline would end the assignment and start another: flatten control characters."""
    flat = "".join(" " if ord(c) < 32 or c == "\x7f" else c for c in text)
    if len(flat) > _STATUS_MAX_CHARS:
        flat = flat[: _STATUS_MAX_CHARS - 1] + "…"
    return flat


def _printable(address: str) -> str:
    return "@" + address[1:] if address.startswith("\0") else address
