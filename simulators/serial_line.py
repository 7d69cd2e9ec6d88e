"""A serial cable between two pseudo-terminals, for serial-device simulators without hardware.

The gateway opens :attr:`VirtualSerialLine.device_path` with pyserial, as it would open
``/dev/ttyUSB0``; the simulated device opens :attr:`VirtualSerialLine.peer_path`. Each is the
slave side of its own pty pair, and the line copies bytes between the two master sides::

    gateway ── device_path (slave A) │ master A ══ bridge ══ master B │ (slave B) peer_path ── sim

Why two pty pairs and not one: a single pair would give the device side only a master fd,
which pyserial cannot open by path, so a device simulator could not use an ordinary serial
server (pymodbus's ``ModbusSerialServer``, say) and no one could cut or slow the cable.

The bridge runs on the event loop that entered the line: ``loop.add_reader`` on both master
fds, non-blocking reads and writes, no threads. Both slave sides are set raw at creation (no
echo, no line editing, no CR/LF translation) so a byte goes through as it was written before
any pyserial has configured the port; pyserial sets raw mode again when it opens a path.
The line keeps its own fd on each slave side open for its whole life: when the last fd on a
slave closes, Linux hangs up the pty and the master reads EIO, so a gateway that closes and
reopens its port would otherwise break the line.

Pacing. With ``baudrate`` set, each direction is a wire of that rate: a chunk read from one
master is written to the other when its last character would have arrived, characters taking
``bits_per_char / baudrate`` seconds each (10 bits for 8N1; 11 for 8E1, 8O1 or 8N2), queued
behind whatever that direction is still sending. Deadlines follow the ideal schedule, not the
moment a timer actually fired, so loop latency (about 1 ms per timer on Linux) delays a chunk
but does not accumulate. The two directions are paced independently, as on RS-232 or 4-wire
RS-485; on 2-wire RS-485 they share one pair, which makes no difference for a master/slave
protocol whose ends never talk at once, and collisions are not modelled. Without ``baudrate``
bytes are forwarded as soon as they are read.

Unplugged (:meth:`VirtualSerialLine.unplug`), bytes in both directions are read and discarded,
and so is everything still in flight: the ends see silence, as with a pulled cable, and their
ports stay open. Bytes that do not fit into the receiving side's pty buffer (its reader is not
reading) are lost, as in a UART overrun; the counters count only bytes delivered.

Concurrency: everything runs on the event loop that entered the line; :meth:`unplug` and
:meth:`plug` must be called from that loop's thread. The pty paths are usable by other
processes (``gxpgate simulate modbus --rtu`` prints one).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections import deque
from types import TracebackType

__all__ = ["VirtualSerialLine"]

_READ_SIZE = 4096


class _Direction:
    """One direction of the cable: reads a master fd, writes the other, paced or not."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        source: int,
        sink: int,
        char_secs: float | None,
        line: VirtualSerialLine,
    ) -> None:
        self.delivered = 0
        self.discarded = 0
        self._loop = loop
        self._source = source
        self._sink = sink
        self._char_secs = char_secs
        self._line = line
        self._in_flight: deque[tuple[float, bytes]] = deque()  # (arrival deadline, chunk)
        self._wire_free_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._reading = False

    def start(self) -> None:
        self._loop.add_reader(self._source, self._readable)
        self._reading = True

    def stop(self) -> None:
        # Once only: after the fds are closed their numbers may belong to someone else's reader.
        if self._reading:
            self._loop.remove_reader(self._source)
            self._reading = False
        self._in_flight.clear()
        self._cancel_timer()

    def discard(self) -> None:
        """Drop everything in flight: the cable was pulled."""
        self.discarded += sum(len(chunk) for _, chunk in self._in_flight)
        self._in_flight.clear()
        self._wire_free_at = 0.0  # the wire is idle from now on
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _readable(self) -> None:
        try:
            data = os.read(self._source, _READ_SIZE)
        except BlockingIOError:
            return
        if not self._line.plugged:
            self.discarded += len(data)
            return
        if self._char_secs is None:
            self._write(data)
            return
        self._wire_free_at = max(self._loop.time(), self._wire_free_at)
        self._wire_free_at += len(data) * self._char_secs
        self._in_flight.append((self._wire_free_at, data))
        if self._timer is None:
            self._timer = self._loop.call_at(self._wire_free_at, self._arrive, self._wire_free_at)

    def _arrive(self, due: float) -> None:
        # asyncio may run a timer a hair before loop.time() reaches it, hence max(due, ...).
        self._timer = None
        now = max(due, self._loop.time())
        while self._in_flight and self._in_flight[0][0] <= now:
            self._write(self._in_flight.popleft()[1])
        if self._in_flight:
            due = self._in_flight[0][0]
            self._timer = self._loop.call_at(due, self._arrive, due)

    def _write(self, data: bytes) -> None:
        # A full buffer on the receiving pty (nobody reading) is an overrun: the bytes are lost.
        with contextlib.suppress(BlockingIOError):
            self.delivered += os.write(self._sink, data)


class VirtualSerialLine:
    """A serial cable between two ptys; an async context manager that exists while entered.

    ``baudrate=None`` forwards bytes at once; an int paces them at that line rate with
    ``bits_per_char`` bits per character (10 for 8N1, 11 with parity or two stop bits). The
    pty paths exist only while the line is entered; the byte counters start from zero each
    time it is entered.
    """

    def __init__(self, baudrate: int | None = None, *, bits_per_char: int = 10) -> None:
        if baudrate is not None and baudrate <= 0:
            raise ValueError(f"baudrate must be positive, got {baudrate}")
        if not 7 <= bits_per_char <= 12:
            raise ValueError(f"bits_per_char {bits_per_char} is not in 7..12")
        self.baudrate = baudrate
        self.bits_per_char = bits_per_char
        self._plugged = True
        self._fds: list[int] = []
        self._paths: tuple[str, str] | None = None
        self._to_device: _Direction | None = None
        self._to_gateway: _Direction | None = None

    @property
    def device_path(self) -> str:
        """The pty the gateway opens (with pyserial), e.g. ``/dev/pts/7``."""
        return self._open_paths()[0]

    @property
    def peer_path(self) -> str:
        """The pty the simulated device opens."""
        return self._open_paths()[1]

    @property
    def char_time_secs(self) -> float | None:
        """Time on the wire of one character, ``None`` when unpaced."""
        return None if self.baudrate is None else self.bits_per_char / self.baudrate

    @property
    def bytes_to_device(self) -> int:
        """Bytes delivered from the gateway's side to the device's side."""
        return self._to_device.delivered if self._to_device else 0

    @property
    def bytes_to_gateway(self) -> int:
        """Bytes delivered from the device's side to the gateway's side."""
        return self._to_gateway.delivered if self._to_gateway else 0

    @property
    def bytes_discarded(self) -> int:
        """Bytes lost to :meth:`unplug`, both directions: sent while unplugged, or in flight."""
        return sum(d.discarded for d in (self._to_device, self._to_gateway) if d is not None)

    @property
    def plugged(self) -> bool:
        """False between :meth:`unplug` and :meth:`plug`."""
        return self._plugged

    def unplug(self) -> None:
        """Pull the cable: discard bytes in flight and every byte sent until :meth:`plug`."""
        self._plugged = False
        for direction in (self._to_device, self._to_gateway):
            if direction is not None:
                direction.discard()

    def plug(self) -> None:
        """Put the cable back: bytes sent from now on go through."""
        self._plugged = True

    async def __aenter__(self) -> VirtualSerialLine:
        if self._paths is not None:
            raise RuntimeError("the serial line is already open")
        loop = asyncio.get_running_loop()
        with contextlib.ExitStack() as on_error:
            on_error.callback(self._close_fds)
            master_a, slave_a = self._openpty()
            master_b, slave_b = self._openpty()
            paths = (os.ttyname(slave_a), os.ttyname(slave_b))
            on_error.pop_all()
        char_secs = self.char_time_secs
        self._to_device = _Direction(loop, master_a, master_b, char_secs, self)
        self._to_gateway = _Direction(loop, master_b, master_a, char_secs, self)
        self._to_device.start()
        self._to_gateway.start()
        self._paths = paths
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Remove the readers, cancel deliveries in flight and close every fd. Idempotent.

        A gateway that still has the device path open reads EIO from then on.
        """
        for direction in (self._to_device, self._to_gateway):
            if direction is not None:
                direction.stop()
        self._paths = None
        self._close_fds()

    def _openpty(self) -> tuple[int, int]:
        master, slave = os.openpty()
        self._fds += [master, slave]
        tty.setraw(slave)
        os.set_blocking(master, False)
        return master, slave

    def _close_fds(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)

    def _open_paths(self) -> tuple[str, str]:
        if self._paths is None:
            raise RuntimeError("the serial line is not open; enter it with 'async with'")
        return self._paths
