"""A serial port on the event loop: pyserial opens and configures it, ``loop.add_reader`` waits.

The one place gxpgate reads a serial port for line-oriented devices (data loggers, barcode
scanners, RFID readers): a slow or silent device costs no thread. Incoming bytes are buffered up
to 1 MiB; beyond that the port is no longer watched until the consumer catches up, so the
device's own flow control (or the kernel's buffer) takes over instead of our memory. A
descriptor that reports end-of-file or an error is a failed port, never a busy loop.

Exceptions: :class:`ChannelError` (an ``OSError``) for a port that cannot be opened or fails;
``TimeoutError`` when no full line arrives in time.
"""

from __future__ import annotations

import asyncio
import os
import termios

import serial

from gxpgate.drivers.serial_model import PARITY_CODES, SerialLine

__all__ = ["ChannelError", "SerialChannel"]

READ_CHUNK = 4096
MAX_BUFFER = 1 << 20


class ChannelError(OSError):
    """The port cannot be opened, or failed while in use (adapter unplugged)."""


class SerialChannel:
    """One serial port. Not safe for concurrent readers: the caller serialises requests."""

    def __init__(self, line: SerialLine) -> None:
        self.line = line
        self._port: serial.Serial | None = None
        self._buffer = bytearray()
        self._arrived = asyncio.Event()
        self._failed: str | None = None
        self._watching = False

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def open(self) -> None:
        line = self.line
        try:
            port = serial.Serial(
                line.port,
                baudrate=line.baudrate,
                bytesize=line.data_bits,
                parity=PARITY_CODES[line.parity],
                stopbits=line.stop_bits,
                timeout=0,
                exclusive=True,
            )
        except (OSError, termios.error, ValueError) as exc:
            # pyserial's SerialException is an OSError; termios refusals pass through as is.
            errno = exc.errno if isinstance(exc, OSError) else None
            why = os.strerror(errno) if errno else str(exc)
            raise ChannelError(f"serial port {line.port} cannot be opened: {why}") from exc
        self._port, self._failed = port, None
        self._buffer.clear()
        self._watch()

    def close(self) -> None:
        port, self._port = self._port, None
        if port is None:
            return
        self._unwatch(port)
        port.close()
        self._failed = self._failed or f"serial port {self.line.port} closed"
        self._arrived.set()  # a reader still waiting ends now

    def _watch(self) -> None:
        if self._port is not None and not self._watching:
            asyncio.get_running_loop().add_reader(self._port.fileno(), self._on_readable)
            self._watching = True

    def _unwatch(self, port: serial.Serial) -> None:
        if self._watching:
            asyncio.get_running_loop().remove_reader(port.fileno())
            self._watching = False

    def _on_readable(self) -> None:
        port = self._port
        assert port is not None
        try:
            data = os.read(port.fileno(), READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            data, self._failed = b"", f"serial port {self.line.port} failed: {exc}"
        if not data:
            # A dead descriptor stays readable for ever: stop watching it.
            self._failed = self._failed or f"serial port {self.line.port} closed"
            self._unwatch(port)
        else:
            self._buffer += data
            if len(self._buffer) > MAX_BUFFER:
                self._unwatch(port)  # the consumer is behind: let the port's buffer fill
        self._arrived.set()

    def discard_input(self) -> None:
        """Forget what arrived unasked (a late answer, noise) before a new request."""
        self._buffer.clear()
        self._watch()

    async def send(self, data: bytes) -> None:
        port = self._require()
        try:
            port.write(data)
        except OSError as exc:
            raise ChannelError(f"serial port {self.line.port} failed: {exc}") from exc

    async def receive(self) -> bytes:
        """Whatever has arrived, waiting for at least one byte."""
        while not self._buffer:
            self._require()
            await self._wait()
        data = bytes(self._buffer)
        self._buffer.clear()
        self._watch()
        return data

    async def read_line(self, timeout_secs: float, terminator: bytes = b"\n") -> bytes:
        """The next line, terminator included; ``TimeoutError`` when none completes in time."""
        async with asyncio.timeout(timeout_secs):
            while True:
                self._require()
                end = self._buffer.find(terminator)
                if end >= 0:
                    end += len(terminator)
                    line = bytes(self._buffer[:end])
                    del self._buffer[:end]
                    self._watch()
                    return line
                if len(self._buffer) > MAX_BUFFER:
                    self._buffer.clear()  # noise without line ends: never grow without bound
                    self._watch()
                await self._wait()

    async def _wait(self) -> None:
        self._arrived.clear()
        await self._arrived.wait()

    def _require(self) -> serial.Serial:
        if self._failed is not None:
            raise ChannelError(self._failed)
        if self._port is None:
            raise ChannelError(f"serial port {self.line.port} is not open")
        return self._port
