"""Barcode scanners and RFID readers: one read per line, over a serial port or TCP.

Both are *pushed* sources: the device speaks when something is read, so the agent iterates
:meth:`~_LineSource.stream`, which connects, yields ``[]`` once the link is up (the device is
online), then lists of observations as lines arrive. A lost link raises
:class:`~gxpgate.drivers.base.DeviceUnreachable`; the agent waits its backoff and calls ``stream()``
again, which connects afresh. The source owns no timers and starts no tasks.

Transports
    ``serial``: pyserial opens and configures the port, non-blocking; the event loop watches
    its descriptor (``loop.add_reader``), so a silent scanner costs no thread. A read error
    (adapter unplugged, the pty's other side gone) ends the link.
    ``tcp``: the device is the server (fixed-mount scanners are), the gateway connects with
    asyncio streams. TCP keepalive is switched on (about a minute to notice a peer that lost
    power without closing the connection); a silent scanner is not a dead one, so there is no
    read timeout.

Lines
    Split at the configured terminator. A line is decoded as ISO 8859-1 (Code 128's character
    set: every byte maps to one character, nothing is lost; control characters are escaped when
    recorded). Blank lines are not reads. A line with no terminator within
    :data:`MAX_LINE_BYTES`, and a partial line when the link drops, are still observations,
    with the reason as their error: nothing the device sent is dropped silently.

Decoding (pure, never raises for bad data)
    Barcodes: :func:`gxpgate.drivers.gs1.parse_scan` with the acquisition date as reference date. On
    top of it, a non-GS1 scan is an error when it is the scanner's "no read" message or contains
    control characters (line noise, a wrong baud rate): a real non-GS1 code is printable.
    RFID: :func:`gxpgate.drivers.epc.decode_epc`, stripping the PC word when configured.

Repeated reads
    :class:`ReadFilter`: a code or tag read again within ``dedupe_window_secs`` of its previous
    read is not a new observation (a sliding window: a tag that stays in the portal's field is
    one observation however long it stays, and a new one once it has been out of the field for
    the window). It runs on the monotonic clock, injectable for tests.

EPC URIs of barcode keys
    An EPC URI splits a GTIN or SSCC where its GS1 Company Prefix ends, which a barcode does not
    show (an RFID tag does: its partition value). :class:`CompanyPrefixes` takes the prefix from
    the configured list (longest match), else from GS1's prefix-length table bundled with biip,
    and only prefixes of 6-12 digits (EPC's range). Without one, the URI builders return the
    canonical GS1 Digital Link URI (``https://id.gs1.org/01/<gtin>/21/<serial>``), which EPCIS
    2.0 accepts wherever an EPC URI goes.

Concurrency: ``stream()`` (or ``read()``, for ``gxpgate devices test``) is used by one task at a
time; nothing here is thread-safe or needs to be.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Final, Protocol, Self
from urllib.parse import quote

from gxpgate.drivers.base import DeviceUnreachable, Sample, utc_now
from gxpgate.drivers.epc import EpcResult, decode_epc
from gxpgate.drivers.gs1 import ScanResult, escape_text, parse_scan
from gxpgate.drivers.scanner_model import TERMINATORS, BarcodeScannerDevice, RfidReaderDevice
from gxpgate.drivers.serial_channel import ChannelError, SerialChannel
from gxpgate.drivers.serial_model import SerialLine

__all__ = [
    "DIGITAL_LINK",
    "MAX_LINE_BYTES",
    "OVERFLOW_REPORT_SECS",
    "BarcodeRead",
    "BarcodeScannerSource",
    "CompanyPrefixes",
    "LineFramer",
    "Observation",
    "Overflow",
    "ReadBudget",
    "ReadFilter",
    "RfidReaderSource",
    "TagRead",
    "decode_scan",
    "gtin_class_uri",
    "lgtin_uri",
    "sgln_uri",
    "sgtin_uri",
    "sscc_uri",
]

log = logging.getLogger(__name__)

MAX_LINE_BYTES: Final = 4096
"""Longest line kept whole; a GS1 DataMatrix holds at most 2335 characters."""
_READ_CHUNK: Final = 4096
_CLOSE_TIMEOUT_SECS: Final = 2.0
# TCP keepalive: first probe after 30 s idle, then every 10 s, 3 unanswered probes end the link.
_KEEPALIVE: Final = (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))
_BLANK: Final = b" \t\r\n"
_EDGE: Final = " \t\r\n\x1d"


@dataclass(frozen=True, slots=True)
class BarcodeRead:
    """One barcode observation. ``scan.problem`` says why it is unusable, if it is (invalid or
    ambiguous GS1, a "no read", line noise, a torn line)."""

    at: datetime
    scan: ScanResult


@dataclass(frozen=True, slots=True)
class TagRead:
    """One RFID tag observation. ``tag.error`` says why it is unusable, if it is."""

    at: datetime
    tag: EpcResult


Observation = BarcodeRead | TagRead


class LineFramer:
    """Bytes in, lines out, split at ``terminator`` (removed). Bounded: see :meth:`feed`."""

    def __init__(self, terminator: bytes, max_line: int = MAX_LINE_BYTES) -> None:
        if not terminator:
            raise ValueError("the terminator must not be empty")
        self.terminator = terminator
        self.max_line = max_line
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, str | None]]:
        """Complete lines in ``data`` (with what came before), each with a problem or ``None``.

        Blank lines are skipped. When more than ``max_line`` bytes arrive without a terminator,
        they come out as one line with the problem said, so a wrong terminator setting shows up
        on record instead of growing the buffer.
        """
        self._buffer += data
        lines: list[tuple[bytes, str | None]] = []
        while True:
            end = self._buffer.find(self.terminator)
            if end < 0:
                break
            line = bytes(self._buffer[:end])
            del self._buffer[: end + len(self.terminator)]
            if line.strip(_BLANK):
                lines.append((line, None))
        if len(self._buffer) > self.max_line:
            line = bytes(self._buffer)
            self._buffer.clear()
            lines.append(
                (line, f"no line terminator within {self.max_line} bytes (wrong terminator?)")
            )
        return lines

    def flush(self) -> bytes | None:
        """What arrived after the last terminator (a partial line), if not blank; then empty."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest if rest.strip(_BLANK) else None


OVERFLOW_REPORT_SECS = 1.0
"""A flood's refused reads are reported at most this often (one audit record each)."""


class ReadFilter:
    """Admits a key unless it was seen less than ``window_secs`` ago (sliding: every sighting
    restarts its window). Memory holds only the keys seen within the window."""

    def __init__(self, window_secs: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_secs = window_secs
        self._clock = clock
        self._seen: dict[str, float] = {}  # insertion order = last-seen order
        self.suppressed = 0

    def admit(self, key: str) -> bool:
        if self.window_secs <= 0:
            return True
        now = self._clock()
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if now - at < self.window_secs:
                break
            del self._seen[oldest]
        fresh = self._seen.pop(key, None) is None
        self._seen[key] = now
        if not fresh:
            self.suppressed += 1
        return fresh


class ReadBudget:
    """A token bucket: ``rate`` reads a second, ``burst`` at once; counts what it refuses."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def admit(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class Overflow:
    """Reads refused by the :class:`ReadBudget` between ``first`` and ``last``."""

    count: int
    first: datetime
    last: datetime


# --------------------------------------------------------------------------- links


class _Link(Protocol):
    """A connected byte stream from the device. ``receive`` raises DeviceUnreachable on loss."""

    async def receive(self) -> bytes: ...

    async def close(self) -> None: ...


class _SerialLink:
    """The scanner's serial port (:class:`~gxpgate.drivers.serial_channel.SerialChannel`), its
    errors as
    :class:`DeviceUnreachable`. Opened in the constructor."""

    def __init__(self, device_id: str, line: SerialLine) -> None:
        self.device_id = device_id
        self._channel = SerialChannel(line)
        try:
            self._channel.open()
        except ChannelError as exc:
            raise DeviceUnreachable(device_id, str(exc)) from exc

    async def receive(self) -> bytes:
        try:
            return await self._channel.receive()
        except ChannelError as exc:
            raise DeviceUnreachable(self.device_id, str(exc)) from exc

    async def close(self) -> None:
        self._channel.close()


class _TcpLink:
    """A TCP connection to a device that serves its reads. Use :meth:`connect`."""

    def __init__(
        self, device_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.device_id = device_id
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, device_id: str, host: str, port: int, timeout_secs: float) -> _TcpLink:
        try:
            async with asyncio.timeout(timeout_secs):
                reader, writer = await asyncio.open_connection(host, port)
        except TimeoutError as exc:
            raise DeviceUnreachable(
                device_id, f"connect to {host}:{port}: no answer within {timeout_secs:g} s"
            ) from exc
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise DeviceUnreachable(device_id, f"connect to {host}:{port}: {why}") from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for name, value in _KEEPALIVE:
                if hasattr(socket, name):  # Linux names; elsewhere the system defaults apply
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
        return cls(device_id, reader, writer)

    async def receive(self) -> bytes:
        try:
            data = await self._reader.read(_READ_CHUNK)
        except OSError as exc:
            raise DeviceUnreachable(self.device_id, f"connection lost: {exc}") from exc
        if not data:
            raise DeviceUnreachable(self.device_id, "the device closed the connection")
        return data

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(_CLOSE_TIMEOUT_SECS):
                await self._writer.wait_closed()


# --------------------------------------------------------------------------- sources


class _LineSource:
    """What both sources share: the link, line framing, the repeated-read filter."""

    pushed = True
    """Read by the agent: iterate :meth:`stream` instead of polling :meth:`read`."""
    poll_interval_secs = 1.0
    """Part of the source seam; a pushed source is not polled, so it is not used."""
    _LABEL = "device"

    def __init__(
        self,
        device_id: str,
        config: BarcodeScannerDevice | RfidReaderDevice,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self.device_id = device_id
        self.config = config
        self.lines = 0
        """Lines received (before the repeated-read filter)."""
        self.filter = ReadFilter(config.dedupe_window_secs, clock)
        self.budget = ReadBudget(config.max_reads_per_sec, config.burst_reads, clock)
        self._clock = clock
        self._now = now
        self._overflow: list[datetime] = []  # first and last refused read
        self._overflow_count = 0
        self.overflowed = 0
        """Reads refused by the budget since start (each reported in an Overflow)."""
        self._framer = LineFramer(TERMINATORS[config.terminator])
        self._link: _Link | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    @property
    def address(self) -> str:
        cfg = self.config
        if cfg.serial is not None:
            return f"serial {cfg.serial.port} {cfg.serial.baudrate} baud"
        return f"tcp {cfg.host}:{cfg.port}"

    def describe(self) -> list[str]:
        cfg = self.config
        return [
            f"{self._LABEL} on {self.address}, terminator {cfg.terminator}",
            f"zone {cfg.zone}, bizStep {cfg.biz_step}, disposition {cfg.disposition or '-'}",
        ]

    async def _open(self) -> _Link:
        if self._link is None:
            cfg = self.config
            self._framer.flush()  # a partial line from before a reconnect is not continued
            if cfg.serial is not None:
                self._link = _SerialLink(self.device_id, cfg.serial)
            else:
                # The model guarantees both for transport 'tcp'.
                assert cfg.host is not None
                assert cfg.port is not None
                timeout = cfg.connect_timeout_ms / 1000
                self._link = await _TcpLink.connect(self.device_id, cfg.host, cfg.port, timeout)
            log.info("scanner.connected device=%s address=%s", self.device_id, self.address)
        return self._link

    async def _close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close()

    async def read(self) -> list[Sample]:
        """Connect (``gxpgate devices test``): a scanner has nothing to read on demand, so this
        returns ``[]`` once the link is up and raises DeviceUnreachable when it cannot be."""
        await self._open()
        return []

    async def stream(self) -> AsyncIterator[list[Observation]]:
        """``[]`` once connected, then observations as the device sends them; raises
        :class:`DeviceUnreachable` when the link cannot be made or is lost."""
        await self._close()
        link = await self._open()
        yield []
        while True:
            try:
                if self._overflow_count:
                    # Quiet after a flood: wake up to let its count be reported.
                    try:
                        async with asyncio.timeout(OVERFLOW_REPORT_SECS):
                            data = await link.receive()
                    except TimeoutError:
                        yield []
                        continue
                else:
                    data = await link.receive()
            except DeviceUnreachable:
                await self._close()
                rest = self._framer.flush()
                if rest is not None:
                    why = "incomplete: the link was lost before the line terminator"
                    yield [self._observe(rest, why)]
                raise
            observations: list[Observation] = []
            for line, problem in self._framer.feed(data):
                self.lines += 1
                # Repeats and the budget are judged on the raw line, before decoding: a flood
                # costs a counter, not a GS1 or EPC parse per line.
                if not self.filter.admit(self._key(line)):
                    continue
                if self.budget.admit():
                    observations.append(self._observe(line, problem))
                else:
                    self._refused(self._now())
            if observations or self._overflow_count:
                yield observations
            # Data already buffered is read without a pause: give the other devices a turn.
            await asyncio.sleep(0)

    def _refused(self, at: datetime) -> None:
        self._overflow_count += 1
        self.overflowed += 1
        if not self._overflow:
            self._overflow = [at, at]
        self._overflow[1] = at

    def take_overflow(self, *, force: bool = False) -> Overflow | None:
        """The reads refused since the last report, once they span ``OVERFLOW_REPORT_SECS``
        (or at once with ``force``, e.g. at a disconnect); None when there is nothing due."""
        if not self._overflow_count:
            return None
        first, last = self._overflow
        due = (self._now() - first).total_seconds() >= OVERFLOW_REPORT_SECS
        if not (force or due):
            return None
        report = Overflow(self._overflow_count, first, last)
        self._overflow_count, self._overflow = 0, []
        return report

    def _observe(self, line: bytes, problem: str | None) -> Observation:
        raise NotImplementedError

    def _key(self, line: bytes) -> str:
        """What makes two lines the same read (for ``dedupe_window_secs``)."""
        raise NotImplementedError


class BarcodeScannerSource(_LineSource):
    """A barcode scanner: each line is one scan (see the module docstring)."""

    _LABEL = "barcode scanner"
    config: BarcodeScannerDevice

    def __init__(
        self,
        device_id: str,
        config: BarcodeScannerDevice,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(device_id, config, clock=clock, now=now)

    def _observe(self, line: bytes, problem: str | None) -> BarcodeRead:
        at = self._now()
        return BarcodeRead(at, decode_scan(line, at, self.config.no_read_text, problem))

    def _key(self, line: bytes) -> str:
        return line.decode("latin-1")


class RfidReaderSource(_LineSource):
    """An RFID reader: each line is one tag report, EPC hex (see the module docstring)."""

    _LABEL = "RFID reader"
    config: RfidReaderDevice

    def __init__(
        self,
        device_id: str,
        config: RfidReaderDevice,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(device_id, config, clock=clock, now=now)

    def describe(self) -> list[str]:
        lines = super().describe()
        lines.append(
            f"PC word {'stripped' if self.config.strip_pc_word else 'absent'}, repeated reads "
            f"within {self.config.dedupe_window_secs:g} s are one observation"
        )
        return lines

    def _observe(self, line: bytes, problem: str | None) -> TagRead:
        at = self._now()
        text = line.decode("latin-1")
        if problem is not None:
            return TagRead(at, EpcResult(hex=escape_text(text.strip()), error=problem))
        return TagRead(at, decode_epc(text, strip_pc=self.config.strip_pc_word))

    def _key(self, line: bytes) -> str:
        return "".join(line.decode("latin-1").split()).upper()  # as decode_epc reads it


def decode_scan(
    line: bytes, at: datetime, no_read_text: str | None, problem: str | None = None
) -> ScanResult:
    """One scanner line as a :class:`ScanResult`; ``error`` set when it is unusable.

    ``problem`` is a framing problem (no terminator, link lost mid-line) that makes the line
    unusable whatever it says. The reference date for two-digit years is ``at``'s date.
    """
    text = line.decode("latin-1")
    if problem is not None:
        return ScanResult(text, None, "non_gs1", error=problem)
    scan = parse_scan(text, reference_date=at.date())
    if scan.kind != "non_gs1" or scan.error is not None:
        return scan
    payload = text.strip(_EDGE)
    if scan.symbology is not None:
        payload = payload[len(scan.symbology) :].strip(_EDGE)
    if no_read_text is not None and payload == no_read_text:
        why = f"no read: the scanner sent {no_read_text!r} (it decoded nothing)"
        return dataclasses.replace(scan, error=why)
    for index, char in enumerate(payload):
        code = ord(char)
        if code < 0x20 or 0x7F <= code < 0xA0:
            why = (
                f"not a readable code: control character {escape_text(char)} at position "
                f"{index} (line noise or a wrong serial setting?)"
            )
            return dataclasses.replace(scan, error=why)
    return scan


# --------------------------------------------------------------------------- EPC URIs, barcodes

DIGITAL_LINK: Final = "https://id.gs1.org"
# TDS Table A-1: the characters of GS1 character set 82 that an EPC URI must percent-escape.
_EPC_ESCAPES: Final = str.maketrans({char: f"%{ord(char):02X}" for char in '"%&/<>?'})
_EPC_PREFIX_DIGITS: Final = range(6, 13)


class CompanyPrefixes:
    """Where a GS1 key's company prefix ends: the configured prefixes, else GS1's table."""

    def __init__(self, configured: Iterable[str] = ()) -> None:
        self._configured = sorted(set(configured), key=len, reverse=True)

    def find(self, digits: str) -> str | None:
        """The company prefix that ``digits`` (a GTIN or SSCC without its leading indicator or
        extension digit) starts with, if known and usable in an EPC URI (6-12 digits)."""
        for prefix in self._configured:
            if digits.startswith(prefix):
                return prefix
        if digits.startswith("00000"):
            return None  # GTIN-8 (or a padded short key): no company prefix of EPC's shape
        from biip.gs1_prefixes import GS1CompanyPrefix  # ~20 MiB: only once a scan needs it

        found = GS1CompanyPrefix.extract(digits)
        if found is None or len(found.value) not in _EPC_PREFIX_DIGITS:
            return None
        return found.value


def _epc(value: str) -> str:
    return value.translate(_EPC_ESCAPES)


def _dl(value: str) -> str:
    return quote(value, safe="")


def sgtin_uri(gtin: str, serial: str, prefixes: CompanyPrefixes) -> str:
    """``urn:epc:id:sgtin:…`` for GTIN-14 + serial, or its GS1 Digital Link URI."""
    cp = prefixes.find(gtin[1:])
    if cp is None:
        return f"{DIGITAL_LINK}/01/{gtin}/21/{_dl(serial)}"
    return f"urn:epc:id:sgtin:{cp}.{gtin[0]}{gtin[1 + len(cp) : 13]}.{_epc(serial)}"


def sgln_uri(gln: str, extension: str, prefixes: CompanyPrefixes) -> str:
    """``urn:epc:id:sgln:…`` for a GLN-13 and a GLN extension (AI 254; ``"0"`` for none), or
    its GS1 Digital Link URI when the company prefix is unknown."""
    cp = prefixes.find(gln)
    if cp is None:
        suffix = "" if extension == "0" else f"/254/{_dl(extension)}"
        return f"{DIGITAL_LINK}/414/{gln}{suffix}"
    return f"urn:epc:id:sgln:{cp}.{gln[len(cp) : 12]}.{_epc(extension)}"


def sscc_uri(sscc: str, prefixes: CompanyPrefixes) -> str:
    """``urn:epc:id:sscc:…`` for an SSCC-18, or its GS1 Digital Link URI."""
    cp = prefixes.find(sscc[1:])
    if cp is None:
        return f"{DIGITAL_LINK}/00/{sscc}"
    return f"urn:epc:id:sscc:{cp}.{sscc[0]}{sscc[1 + len(cp) : 17]}"


def lgtin_uri(gtin: str, lot: str, prefixes: CompanyPrefixes) -> str:
    """``urn:epc:class:lgtin:…`` (a lot of a GTIN), or its GS1 Digital Link URI."""
    cp = prefixes.find(gtin[1:])
    if cp is None:
        return f"{DIGITAL_LINK}/01/{gtin}/10/{_dl(lot)}"
    return f"urn:epc:class:lgtin:{cp}.{gtin[0]}{gtin[1 + len(cp) : 13]}.{_epc(lot)}"


def gtin_class_uri(gtin: str, prefixes: CompanyPrefixes) -> str:
    """The class of all instances of a GTIN: ``urn:epc:idpat:sgtin:<cp>.<ref>.*``, or DL."""
    cp = prefixes.find(gtin[1:])
    if cp is None:
        return f"{DIGITAL_LINK}/01/{gtin}"
    return f"urn:epc:idpat:sgtin:{cp}.{gtin[0]}{gtin[1 + len(cp) : 13]}.*"
