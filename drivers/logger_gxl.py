"""GXL/1 spoken over a :class:`~gxpgate.drivers.serial_channel.SerialChannel`: one request, its
answer.

A logger protocol module offers the four operations of
:class:`gxpgate.drivers.logger.LoggerSession`; this one builds requests and parses answers with the
codec in :mod:`gxpgate.drivers.gxl`. Another protocol is another module like this one.
"""

from __future__ import annotations

from datetime import datetime

from gxpgate.drivers import gxl
from gxpgate.drivers.serial_channel import SerialChannel

__all__ = ["GxlSession"]


class GxlSession:
    """GXL/1 requests over one channel. ``GxlError`` for a garbled or refused answer,
    ``TimeoutError`` for none, ``ChannelError`` for a failed port."""

    def __init__(self, channel: SerialChannel, timeout_secs: float) -> None:
        self.channel = channel
        self.timeout_secs = timeout_secs

    async def _ask(self, request: bytes) -> str:
        self.channel.discard_input()
        await self.channel.send(request)
        return await self._line()

    async def _line(self) -> str:
        while True:
            raw = await self.channel.read_line(self.timeout_secs)
            if raw.strip(b"\r\n"):  # a bare CR LF is not a line (GXL/1)
                return gxl.decode_line(raw)  # the parse_* functions raise on an ERR answer

    async def identify(self) -> gxl.LoggerIdentity:
        return gxl.parse_identity(await self._ask(gxl.request_identity()))

    async def clock(self) -> datetime:
        return gxl.parse_clock(await self._ask(gxl.request_clock()))

    async def live(self, points: list[str]) -> gxl.LoggerRecord:
        return gxl.parse_live(await self._ask(gxl.request_live()), points=points)

    async def records(self, start: int, count: int, points: list[str]) -> list[gxl.LoggerRecord]:
        text = await self._ask(gxl.request_records(start, count))
        records: list[gxl.LoggerRecord] = []
        while not text.startswith("END"):
            records.append(gxl.parse_record(text, points=points))
            text = await self._line()
        if gxl.parse_end(text) != len(records):
            raise gxl.GxlError(f"END {gxl.parse_end(text)} after {len(records)} records")
        return records
