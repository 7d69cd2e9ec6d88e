"""Hostile peers for robustness tests and the chaos benchmark: a quality service that answers
nonsense, and a Modbus TCP server that answers with malformed frames. Raw asyncio sockets, so
they can say what no well-behaved library would let them."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

__all__ = ["Answer", "HostileService", "RogueModbus"]


class _Listener:
    """A TCP server on 127.0.0.1 while entered (``port`` 0 picks one); ``_client`` serves."""

    port: int
    _server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: ``body`` as given, or ``size`` bytes of padding (a huge answer, with
    or without Content-Length), or dripped one byte every ``drip_secs``."""

    body: bytes = b'{"acked_through": 0}'
    status: int = 200
    size: int = 0
    chunked: bool = False
    drip_secs: float = 0.0


class HostileService(_Listener):
    """Answers request *n* with ``answers[n]``; the last answer repeats. Records the
    ``Idempotency-Key`` of each POST, so a test knows what was really sent."""

    def __init__(self, answers: Sequence[Answer], port: int = 0, *, cycle: bool = False) -> None:
        """``cycle``: after the last answer start again with the first (else the last
        repeats)."""
        self.answers = list(answers)
        self.cycle = cycle
        self.port = port
        self.requests: list[str] = []
        self.keys: list[str] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def sent_through(self) -> int:
        """The highest seq any POST carried (0: none)."""
        return max((int(k.rsplit("-", 1)[1]) for k in self.keys), default=0)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, ValueError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                length = 0
                for line in head.split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    elif name.lower() == "idempotency-key":
                        self.keys.append(value.strip())
                await reader.readexactly(length)
                self.requests.append(head.split(" ", 2)[1])
                turn = len(self.requests) - 1
                if self.cycle:
                    answer = self.answers[turn % len(self.answers)]
                else:
                    answer = self.answers[min(turn, len(self.answers) - 1)]
                await self._answer(writer, answer)
        writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, answer: Answer) -> None:
        status = f"HTTP/1.1 {answer.status} Whatever\r\nContent-Type: application/json\r\n"
        if answer.size:
            framing = (
                "Transfer-Encoding: chunked" if answer.chunked else f"Content-Length: {answer.size}"
            )
            writer.write(f"{status}{framing}\r\n\r\n".encode())
            chunk = b" " * 65536
            for _ in range(answer.size // len(chunk)):
                writer.write(b"10000\r\n" + chunk + b"\r\n" if answer.chunked else chunk)
                await writer.drain()
            return
        writer.write(f"{status}Content-Length: {len(answer.body)}\r\n\r\n".encode())
        if answer.drip_secs:
            for byte in answer.body:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(answer.drip_secs)
        else:
            writer.write(answer.body)
        await writer.drain()


class RogueModbus(_Listener):
    """A Modbus TCP server that answers register reads wrongly, one way after another
    (``modes`` in turn): too few registers, the wrong function code, the wrong transaction id,
    a truncated frame, a huge MBAP length, a stall mid-frame, the wrong unit id."""

    MODES = ("short", "wrong_fc", "wrong_tid", "truncated", "huge_length", "stall", "wrong_unit")

    def __init__(self, modes: Sequence[str] = MODES, stall_secs: float = 2.0) -> None:
        self.modes = list(modes)
        self.stall_secs = stall_secs
        self.port = 0
        self.served = Counter[str]()
        self._server: asyncio.Server | None = None
        self._turn = 0

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, struct.error):
            while True:
                tid, _proto, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                pdu = await reader.readexactly(length - 1)
                fc, _address, count = struct.unpack(">BHH", pdu[:5])
                mode = self.modes[self._turn % len(self.modes)]
                self._turn += 1
                self.served[mode] += 1
                await self._answer(writer, mode, tid, unit, fc, count)
        writer.close()

    async def _answer(
        self, writer: asyncio.StreamWriter, mode: str, tid: int, unit: int, fc: int, count: int
    ) -> None:
        bits = fc in (1, 2)  # coils and discrete inputs: one bit each
        data = b"\x00" * ((count + 7) // 8) if bits else b"\x00\x01" * count
        if mode == "short":
            data = data[:-2] if len(data) > 1 else b""
        pdu = bytes([fc ^ 0x07 if mode == "wrong_fc" else fc, len(data)]) + data
        tid = tid ^ 0x5A5A if mode == "wrong_tid" else tid
        unit = unit ^ 0x11 if mode == "wrong_unit" else unit
        length = 0xFFFF if mode == "huge_length" else len(pdu) + 1
        frame = struct.pack(">HHHB", tid, 0, length, unit) + pdu
        if mode == "truncated":
            frame = frame[:-3]
        if mode == "stall":
            writer.write(frame[:5])
            await writer.drain()
            await asyncio.sleep(self.stall_secs)
            frame = frame[5:]
        writer.write(frame)
        await writer.drain()
