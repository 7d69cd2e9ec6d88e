"""A serial port as an asyncio line channel: pyserial for the port, the event loop for waiting.

The port is put in non-blocking mode and read through ``loop.add_reader``, so a slow or silent
device costs no thread. Used by line-oriented devices (data loggers; scanners could too).

Exceptions: :class:`ChannelError` (an ``OSError``) for a port that cannot be opened or fails;
``TimeoutError`` when no full line arrives in time.
"""

from __future__ import annotations

import asyncio
import termios

import serial

from .serial_model import PARITY_CODES, SerialLine

__all__ = ["ChannelError", "SerialChannel"]

MAX_BUFFER = 64 * 1024


class ChannelError(OSError):
    """The port cannot be opened, or failed while in use (adapter unplugged)."""


class SerialChannel:
    """One open serial port. Not safe for concurrent requests: the caller serialises them."""

    def __init__(self, line: SerialLine) -> None:
        self.line = line
        self._port: serial.Serial | None = None
        self._buffer = bytearray()
        self._arrived = asyncio.Event()
        self._failed: str | None = None

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
        except (OSError, termios.error) as exc:  # pyserial lets termios refusals through as is
            raise ChannelError(f"serial port {line.port} cannot be opened: {exc}") from exc
        self._port, self._failed = port, None
        self._buffer.clear()
        asyncio.get_running_loop().add_reader(port.fileno(), self._on_readable)

    def close(self) -> None:
        port, self._port = self._port, None
        if port is None:
            return
        asyncio.get_running_loop().remove_reader(port.fileno())
        port.close()

    def _on_readable(self) -> None:
        assert self._port is not None
        try:
            data = self._port.read(4096)
        except OSError as exc:  # the adapter went away: stop watching a dead descriptor
            self._failed = str(exc)
            asyncio.get_running_loop().remove_reader(self._port.fileno())
            data = b""
        if len(self._buffer) < MAX_BUFFER:
            self._buffer += data
        self._arrived.set()

    def discard_input(self) -> None:
        """Forget what arrived unasked (a late answer, noise) before a new request."""
        self._buffer.clear()

    async def send(self, data: bytes) -> None:
        port = self._require()
        try:
            port.write(data)
        except OSError as exc:
            raise ChannelError(f"serial port {self.line.port} failed: {exc}") from exc

    async def read_line(self, timeout_secs: float) -> bytes:
        """The next line, CR LF included; ``TimeoutError`` when none completes in time."""
        async with asyncio.timeout(timeout_secs):
            while True:
                self._require()
                end = self._buffer.find(b"\n")
                if end >= 0:
                    line = bytes(self._buffer[: end + 1])
                    del self._buffer[: end + 1]
                    return line
                if len(self._buffer) >= MAX_BUFFER:
                    self._buffer.clear()  # noise without line ends: never grow without bound
                self._arrived.clear()
                await self._arrived.wait()

    def _require(self) -> serial.Serial:
        if self._failed is not None:
            raise ChannelError(f"serial port {self.line.port} failed: {self._failed}")
        if self._port is None:
            raise ChannelError(f"serial port {self.line.port} is not open")
        return self._port
