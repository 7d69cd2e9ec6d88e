"""Simulators of a fixed-mount barcode scanner and an RFID reader that replay scripted reads.

They stand for the two custody devices at a warehouse door: a barcode scanner (Cognex, Datalogic,
Zebra fixed-mount) and an RFID portal reader. Each is an async context manager that, while
entered, is reachable over one of two transports, and sends one line per read:

* ``transport="pty"``: a pseudo-terminal stands for a serial port. The simulator holds the
  master side and writes to it; the gateway opens :attr:`~_LineDevice.device_path` (the slave
  side, ``/dev/pts/N``) with pyserial as it would open ``/dev/ttyUSB0``; any baud rate and
  framing work. The simulator keeps its own descriptor of the slave open while it runs, so the
  pty never hangs up when the gateway closes and reopens the port, and sets the slave raw
  (``tty.setraw``) so that a reader that does not configure the port still gets the bytes
  unchanged (no ``\\r`` → ``\\n`` translation, no echo).
* ``transport="tcp"``: the device is the TCP *server*, as fixed-mount scanners usually are, and
  the gateway connects as a client. Every connected client gets every line (a real scanner
  serves one or a few). ``port=0`` picks a free port; :attr:`~_LineDevice.port` holds the bound
  one once entered. :meth:`~_LineDevice.wait_for_clients` is the readiness handshake for tests
  (a connect completes on the client before the simulator has accepted it);
  :meth:`~_LineDevice.disconnect_clients` drops every connection, as a network glitch would,
  and keeps listening.

Line formats (``<GS>`` is ASCII 29, the FNC1 separator; ``<T>`` the terminator, ``\\r\\n`` by
default, or ``\\r`` or ``\\n``)::

    barcode   [AIM identifier]data<T>
              ]d201106141410000191727033110LOT-A1<GS>211001<T>
    rfid      [PC word]EPC<T>
              3074257BF7194E4000001A85<T>
              30003074257BF7194E4000001A85<T>           (pc_word=True)

Barcode. The AIM symbology identifier (``]d2`` GS1 DataMatrix, ``]C1`` GS1-128, ``]Q3`` GS1 QR,
``]C0`` plain Code 128, ...) is sent first when the scan has one and ``aim_prefix`` is true.
Data is sent byte for byte (``str`` is encoded as ISO 8859-1, Code 128's character set), so GS
bytes and non-UTF-8 garbage arrive unchanged. Data may not contain a byte of the terminator: the
receiver would see two lines (:meth:`~_LineDevice.send_raw` sends anything, for torn lines).

RFID. The EPC bank as upper-case hex, optionally preceded by the tag's 16-bit Protocol Control
word as 4 hex digits (``pc_word=True``). The PC word is computed from the EPC's length: bits
15-11 are the EPC length in 16-bit words (96 bits → 6 → ``3000``, 198 bits padded to 208 → 13 →
``6800``); UMI, XI, toggle and attribute bits are 0 (no user memory, no XPC, EPCglobal). A
:class:`Tag` may carry its own PC word, e.g. a truncated read whose PC word still claims 96 bits.
A reader reports a tag many times a second while it is in the field: ``read(epc, times=...)``.

Back-pressure, and what it does not promise:

* pty: if nobody reads the port, the pty's kernel buffer (some tens of KiB on Linux) fills up.
  A real serial line would lose those bytes on the wire; the simulator instead discards the
  unread input of the pty (``tcflush``, counted in :attr:`~_LineDevice.overruns`) and writes the
  line again whole, so a scan never blocks and a gateway that opens the port late starts on a
  whole line (pyserial also discards unread input when it opens a port). A reader that is
  reading but has fallen a whole buffer behind loses data, possibly mid-line, as with a UART
  overrun.
* tcp: a line goes to every client connected at that moment; a scan with no client connected is
  lost, as it is on a real scanner (it still counts in :attr:`~_LineDevice.sent`). A client
  that stops reading is dropped once more than 1 MiB is queued for it, so a scan never blocks.
* Whatever the gateway sends (trigger commands) is read and discarded on both transports, so
  its writes never block either.

Scripts are data: :data:`SCRIPTS` (barcode scans by name) and :data:`TAG_SETS` (RFID tags by
name), documented in place. All GTINs and SSCCs in them carry correct check digits, computed
from the GS1 General Specifications (mod 10, weights 3-1 from the right); the EPC hex values
are encoded per the GS1 EPC Tag Data Standard (partition 5: a 7-digit company prefix, 0614141).

``gxpgate simulate scanner`` runs one standalone through :func:`run_forever`.

Concurrency: everything runs on the event loop that entered the simulator; no threads. Lines
sent from concurrent tasks are never interleaved.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import termios
import tty
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Literal, Protocol, Self, TypeVar

__all__ = [
    "DOCK_PORTAL_TAGS",
    "DOCK_RECEIVING",
    "FAULTY_SCANS",
    "FAULTY_TAGS",
    "PUT_AWAY",
    "REFERENCE_TAGS",
    "SCRIPTS",
    "TAG_SETS",
    "VECTOR_SCANS",
    "BarcodeScannerSimulator",
    "RfidReaderSimulator",
    "Scan",
    "Tag",
    "Transport",
    "pc_word_for",
    "run_forever",
]

Transport = Literal["pty", "tcp"]

GS = b"\x1d"
"""ASCII 29, the GS1 FNC1 separator after a variable-length element."""

_TRANSPORTS = ("pty", "tcp")
_AIM_ID = re.compile(r"\][A-Za-z][0-9A-Za-z]")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_MAX_EPC_WORDS = 31  # the PC word's length field has 5 bits
_CLOSE_TIMEOUT_SECS = 2.0
_PTY_WRITE_TIMEOUT_SECS = 2.0
_MAX_CLIENT_BACKLOG_BYTES = 1 << 20
_READ_CHUNK = 4096


# --------------------------------------------------------------------------- validation, lines


def _check_symbology(symbology: str | None) -> None:
    if symbology is not None and not _AIM_ID.fullmatch(symbology):
        raise ValueError(
            f"symbology {symbology!r} is not an AIM identifier: ']', a letter, a modifier (']d2')"
        )


def _check_epc_hex(epc_hex: str) -> None:
    if not _HEX.fullmatch(epc_hex):
        raise ValueError(f"EPC {epc_hex!r} is not a non-empty string of hex digits")
    if len(epc_hex) > 4 * _MAX_EPC_WORDS:
        raise ValueError(f"EPC {epc_hex!r} is longer than {_MAX_EPC_WORDS} words")


def _check_terminator(terminator: bytes) -> None:
    if not terminator:
        raise ValueError("the terminator must not be empty")


def _check_no_terminator(data: bytes, terminator: bytes, what: str) -> None:
    # A terminator byte inside the data would split the line for a reader that splits on ``\r``
    # or ``\n`` alone, so any of its bytes is refused, not just the whole sequence.
    found = sorted({b for b in terminator if b in data})
    if found:
        raise ValueError(f"{what} contains terminator byte(s) {bytes(found)!r}; use send_raw()")


def _printable(line: bytes) -> str:
    """A line for a console: ``<GS>`` for ASCII 29, ``\\xNN`` for other non-printable bytes."""
    return "".join(
        "<GS>" if b == 0x1D else chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}" for b in line
    )


# --------------------------------------------------------------------------- scripted reads


@dataclass(frozen=True, slots=True)
class Scan:
    """One decoded barcode as the scanner transmits it."""

    name: str
    """Stable name within its script, e.g. ``case-a1-1001``."""
    data: bytes
    """The decoded data, byte for byte, without AIM identifier or terminator (GS = 0x1D)."""
    symbology: str | None = None
    """AIM symbology identifier, e.g. ``]d2``; ``None`` when the scanner reports none."""
    hri: str | None = None
    """GS1 human-readable interpretation of valid GS1 data, e.g. ``(01)…(17)…``; else ``None``."""
    note: str = ""

    def __post_init__(self) -> None:
        _check_symbology(self.symbology)


@dataclass(frozen=True, slots=True)
class Tag:
    """One RFID tag: the contents of its EPC bank."""

    name: str
    epc_hex: str
    """EPC bank as hex, without the PC word; not necessarily a valid EPC (faulty sets)."""
    pc_word: int | None = None
    """The PC word the tag reports; ``None``: computed from the EPC length (:func:`pc_word_for`)."""
    note: str = ""

    def __post_init__(self) -> None:
        _check_epc_hex(self.epc_hex)
        if self.pc_word is not None and not 0 <= self.pc_word <= 0xFFFF:
            raise ValueError(f"tag {self.name!r}: PC word {self.pc_word} is not 16 bits")


def _case(serial: str, gtin: str, expiry: str, lot: str, name: str) -> Scan:
    """A case label: GS1 DataMatrix (01) GTIN (17) expiry (10) lot <GS> (21) serial."""
    return Scan(
        name,
        f"01{gtin}17{expiry}10{lot}".encode() + GS + f"21{serial}".encode(),
        "]d2",
        f"(01){gtin}(17){expiry}(10){lot}(21){serial}",
    )


def _pallet(sscc: str, name: str) -> Scan:
    """A pallet's logistics label: GS1-128 (00) SSCC."""
    return Scan(name, f"00{sscc}".encode(), "]C1", f"(00){sscc}")


# Products (company prefix 0614141; GTIN-14 with indicator digit 1, case level):
#   A  GTIN 10614141000019, lot LOT-A1, expiry 270331 = 2027-03-31
#   B  GTIN 10614141000026, lot LOT-B7, expiry 270900 = 2027-09-30 (day 00: last day of month)
_GTIN_A, _LOT_A, _EXPIRY_A = "10614141000019", "LOT-A1", "270331"
_GTIN_B, _LOT_B, _EXPIRY_B = "10614141000026", "LOT-B7", "270900"
_SSCC_1 = "306141410000001010"  # extension digit 3, serial reference 000000101
_SSCC_2 = "306141410000001027"  # extension digit 3, serial reference 000000102

_PALLET_1 = _pallet(_SSCC_1, "pallet-1")
_PALLET_2 = _pallet(_SSCC_2, "pallet-2")
_CASES_A = tuple(
    _case(s, _GTIN_A, _EXPIRY_A, _LOT_A, f"case-a1-{s}") for s in ("1001", "1002", "1003")
)
_CASES_B = tuple(_case(s, _GTIN_B, _EXPIRY_B, _LOT_B, f"case-b7-{s}") for s in ("2001", "2002"))

DOCK_RECEIVING: tuple[Scan, ...] = (_PALLET_1, *_CASES_A, _PALLET_2, *_CASES_B)
"""Receiving at the dock door: each pallet's SSCC, then the cases taken off it.

Pallet 1, SSCC 306141410000001010: three cases of product A (GTIN 10614141000019, lot LOT-A1,
expiry 2027-03-31), serials 1001, 1002, 1003. Pallet 2, SSCC 306141410000001027: two cases of
product B (GTIN 10614141000026, lot LOT-B7, expiry 270900 = 2027-09-30), serials 2001, 2002.
Seven scans: pallet-1, case-a1-1001, case-a1-1002, case-a1-1003, pallet-2, case-b7-2001,
case-b7-2002. A case scanned after a pallet came off that pallet.
"""

PUT_AWAY: tuple[Scan, ...] = (*_CASES_A, *_CASES_B)
"""Put-away into the cold room: the five cases of :data:`DOCK_RECEIVING`, at the cold-room door.

The same scans (same names and data) in the same order, without the pallets, which were broken
down at the dock. Together the two scripts say: five cases went from the dock into the cold room.
"""

VECTOR_SCANS: tuple[Scan, ...] = (
    Scan(
        "vector-dm-expiry-lot-serial",
        b"01095011010209171719050810ABCD1234" + GS + b"2110",
        "]d2",
        "(01)09501101020917(17)190508(10)ABCD1234(21)10",
    ),
    Scan("vector-sscc", b"00106141412345678908", "]C1", "(00)106141412345678908"),
    Scan(
        "vector-dm-serial-expiry-lot",
        b"010061414112345221ABC" + GS + b"1726123110L1",
        "]d2",
        "(01)00614141123452(21)ABC(17)261231(10)L1",
    ),
    Scan("vector-qr-gtin-lot", b"010061414112345210ABC123", "]Q3", "(01)00614141123452(10)ABC123"),
    Scan(
        "vector-no-aim-gtin-lot-best-before",
        b"0107032069804988100329" + GS + b"15210526",
        None,
        "(01)07032069804988(10)0329(15)210526",
    ),
    Scan("vector-no-aim-best-before-lot", b"15210526" + GS + b"100329", None, "(15)210526(10)0329"),
)
"""The ``gs1_scans`` of ``testdata/vectors.json``, in its order."""

FAULTY_SCANS: tuple[Scan, ...] = (
    Scan(
        "garbage",
        b"\x00\xff\xfe\x9cX\x81\xc3(\x1b[?",
        note="noise: not UTF-8 (0xFF, 0xC3 0x28), with NUL and ESC; no AIM identifier",
    ),
    Scan("truncated-in-gtin", b"0110614141", "]d2", note="cut inside the GTIN: 8 of 14 digits"),
    Scan(
        "truncated-in-expiry",
        b"01106141410000191727",
        "]d2",
        note="cut inside the expiry date: 4 of 6 digits",
    ),
    Scan(
        "truncated-in-ai",
        b"0110614141000019172703311",
        "]d2",
        note="ends with the first digit of the next AI (10)",
    ),
    Scan(
        "gs-missing",
        b"011061414100001910LOT-A117270331",
        "]d2",
        note="no GS after the lot: parses as lot LOT-A117270331 and no expiry",
    ),
    Scan(
        "bad-check-digit",
        b"01106141410000181727033110LOT-A1" + GS + b"211001",
        "]d2",
        note="case-a1-1001 with GTIN check digit 8 instead of 9",
    ),
    Scan("code128-not-gs1", b"PICK-TOTE-0042", "]C0", note="plain Code 128, no FNC1: not GS1"),
    Scan(
        "noread",
        b"NOREAD",
        note="what a triggered fixed-mount scanner sends when it decodes nothing",
    ),
)
"""Scans a gateway has to reject or flag, each explained in its ``note``."""

SCRIPTS: Mapping[str, tuple[Scan, ...]] = MappingProxyType(
    {
        "dock-receiving": DOCK_RECEIVING,
        "put-away": PUT_AWAY,
        "faulty": FAULTY_SCANS,
        "vectors": VECTOR_SCANS,
    }
)
"""Barcode scripts by name (read-only)."""

REFERENCE_TAGS: tuple[Tag, ...] = (
    Tag(
        "sgtin-96",
        "3074257BF7194E4000001A85",
        note="vectors.json: urn:epc:tag:sgtin-96:3.0614141.812345.6789, (01)80614141123458(21)6789",
    ),
    Tag(
        "sscc-96",
        "3174257BF4499602D2000000",
        note="vectors.json: urn:epc:tag:sscc-96:3.0614141.1234567890, (00)106141412345678908",
    ),
    Tag(
        "sgtin-198",
        "3674257BF7194E59B2C2BF100000000000000000000000000000",
        note=(
            "urn:epc:tag:sgtin-198:3.0614141.812345.32a%2Fb, (01)80614141123458(21)32a/b; "
            "198 bits padded to 208 (13 words, PC word 6800)"
        ),
    ),
)
"""Valid EPCs: the vectors' SGTIN-96 and SSCC-96, and an SGTIN-198 with an alphanumeric serial."""

FAULTY_TAGS: tuple[Tag, ...] = (
    Tag(
        "unknown-header",
        "E280117000000208A1B2C3D4",
        note="header E2h is no EPC scheme (a factory-default EPC copied from the TID)",
    ),
    Tag(
        "truncated",
        "3074257BF7194E4000",
        pc_word=0x3000,
        note="the vectors' SGTIN-96 cut after 72 bits; its PC word still says 6 words",
    ),
)
"""EPCs a gateway has to reject."""

DOCK_PORTAL_TAGS: tuple[Tag, ...] = (
    Tag("pallet-1", "31D4257BF4B2D05E65000000", note="sscc-96:6.0614141.3000000101"),
    Tag("case-a1-1001", "3054257BF461A840000003E9", note="sgtin-96:2.0614141.100001.1001"),
    Tag("case-a1-1002", "3054257BF461A840000003EA", note="sgtin-96:2.0614141.100001.1002"),
    Tag("case-a1-1003", "3054257BF461A840000003EB", note="sgtin-96:2.0614141.100001.1003"),
    Tag("pallet-2", "31D4257BF4B2D05E66000000", note="sscc-96:6.0614141.3000000102"),
    Tag("case-b7-2001", "3054257BF461A880000007D1", note="sgtin-96:2.0614141.100002.2001"),
    Tag("case-b7-2002", "3054257BF461A880000007D2", note="sgtin-96:2.0614141.100002.2002"),
)
"""The pallets and cases of :data:`DOCK_RECEIVING` passing an RFID portal at the dock door.

Same names as the barcode scans. Pallets are SSCC-96 with filter 6 (unit load): SSCC
306141410000001010 and 306141410000001027. Cases are SGTIN-96 with filter 2 (full case): GTIN
10614141000019 serials 1001-1003 and GTIN 10614141000026 serials 2001-2002.
"""

TAG_SETS: Mapping[str, tuple[Tag, ...]] = MappingProxyType(
    {"reference": REFERENCE_TAGS, "faulty": FAULTY_TAGS, "dock-portal": DOCK_PORTAL_TAGS}
)
"""RFID tag sets by name (read-only)."""


def pc_word_for(epc_hex: str) -> int:
    """The PC word of a tag whose EPC bank holds ``epc_hex``: its length in words, in bits 15-11.

    A length that is not a whole number of words is rounded up, as the tag stores whole words.
    """
    _check_epc_hex(epc_hex)
    return -(-len(epc_hex) // 4) << 11


# --------------------------------------------------------------------------- transports


class _Port(Protocol):
    """Where lines go. ``write`` sends one line whole; ``close`` is bounded."""

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class _PtyPort:
    """The master side of a pty; a serial port for whoever opens the slave path."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._master, self._slave = os.openpty()
        try:
            tty.setraw(self._slave)
            # Non-blocking so that a full buffer is an exception here, not a stalled event loop.
            os.set_blocking(self._master, False)
            self.path = os.ttyname(self._slave)
            self._loop.add_reader(self._master, self._discard_input)
        except BaseException:
            os.close(self._master)
            os.close(self._slave)
            raise
        self.overruns = 0
        self.bytes_received = 0

    def _discard_input(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            self.bytes_received += len(os.read(self._master, _READ_CHUNK))

    def _write_some(self, data: bytes) -> int:
        try:
            return os.write(self._master, data)
        except (BlockingIOError, InterruptedError):
            return 0

    async def write(self, data: bytes) -> None:
        if self._write_some(data) == len(data):
            return
        # The pty is full: nobody is reading the port. Throw away what is unread, including the
        # part of this line that went in, and send the line whole (see the module docstring).
        termios.tcflush(self._slave, termios.TCIFLUSH)
        self.overruns += 1
        done = self._write_some(data)
        if done == len(data):
            return
        # Only a line longer than the pty's whole buffer gets here; wait for the reader.
        async with asyncio.timeout(_PTY_WRITE_TIMEOUT_SECS):
            while done < len(data):
                writable = self._loop.create_future()
                self._loop.add_writer(self._master, writable.set_result, None)
                try:
                    await writable
                finally:
                    self._loop.remove_writer(self._master)
                done += self._write_some(data[done:])

    async def close(self) -> None:
        self._loop.remove_reader(self._master)
        os.close(self._master)
        os.close(self._slave)


class _TcpListener:
    """A TCP server; every connected client gets every line."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self.dropped_clients = 0
        self.bytes_received = 0

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._connected, host, port)
        bound: tuple[str, int] = self._server.sockets[0].getsockname()[:2]
        return bound

    @property
    def clients(self) -> int:
        return len(self._writers)

    def _notify(self) -> None:
        # Wakes every waiter of wait_for_clients; each re-checks its own condition.
        self._changed.set()
        self._changed = asyncio.Event()

    def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, not a coroutine: asyncio calls it from connection_made, so the client
        # is registered before any later scan, without waiting for a task to be scheduled.
        self._writers.add(writer)
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._notify()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read and discard what the client sends until it goes away, then forget it."""
        try:
            while chunk := await reader.read(_READ_CHUNK):
                self.bytes_received += len(chunk)
        except OSError:
            pass  # reset by the peer: gone all the same
        finally:
            self._writers.discard(writer)
            self._notify()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def write(self, data: bytes) -> None:
        for writer in list(self._writers):
            transport = writer.transport
            if transport.is_closing():
                continue
            writer.write(data)
            if transport.get_write_buffer_size() > _MAX_CLIENT_BACKLOG_BYTES:
                # The client has stopped reading; a scanner does not wait for it.
                self.dropped_clients += 1
                transport.abort()

    async def wait_for_clients(self, count: int, timeout_secs: float) -> None:
        async with asyncio.timeout(timeout_secs):
            while len(self._writers) < count:
                await self._changed.wait()

    async def disconnect_clients(self) -> int:
        writers = list(self._writers)
        for writer in writers:
            writer.transport.abort()
        await self._join_tasks()
        return len(writers)

    async def _join_tasks(self) -> None:
        tasks = set(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=_CLOSE_TIMEOUT_SECS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self.disconnect_clients()
        if server is not None:
            await asyncio.wait_for(server.wait_closed(), _CLOSE_TIMEOUT_SECS)


# --------------------------------------------------------------------------- public API


class _LineDevice:
    """A device that sends lines over a pty or to TCP clients; the shared part of both."""

    _LABEL = "device"

    def __init__(
        self,
        transport: Transport,
        *,
        host: str,
        port: int,
        terminator: bytes,
    ) -> None:
        if transport not in _TRANSPORTS:
            raise ValueError(f"transport must be one of {_TRANSPORTS}, got {transport!r}")
        _check_terminator(terminator)
        self.transport: Transport = transport
        self.host = host
        self.port = port
        self.terminator = terminator
        self.device_path: str | None = None
        """Slave side of the pty (pty transport, while entered): what the gateway opens."""
        self.sent = 0
        """Lines sent by ``scan``/``read`` (not ``send_raw``), whether or not anyone got them."""
        self._pty: _PtyPort | None = None
        self._tcp: _TcpListener | None = None
        self._port: _Port | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        if self._port is not None:
            raise RuntimeError(f"the {self._LABEL} simulator is already running")
        if self.transport == "pty":
            self._pty = _PtyPort()
            self.device_path = self._pty.path
            self._port = self._pty
        else:
            self._tcp = _TcpListener()
            self.host, self.port = await self._tcp.start(self.host, self.port)
            self._port = self._tcp
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        port, self._port = self._port, None
        self.device_path = None
        if port is not None:
            await port.close()

    @property
    def address(self) -> str:
        """What the gateway is configured with: the device path, or ``host:port``."""
        if self.transport == "pty":
            return self.device_path or "(not running)"
        return f"{self.host}:{self.port}"

    @property
    def clients(self) -> int:
        """TCP clients connected now (0 with the pty transport, which cannot tell)."""
        return self._tcp.clients if self._tcp is not None else 0

    @property
    def overruns(self) -> int:
        """pty: times unread input was discarded because nobody read the port."""
        return self._pty.overruns if self._pty is not None else 0

    @property
    def dropped_clients(self) -> int:
        """tcp: clients dropped because they stopped reading."""
        return self._tcp.dropped_clients if self._tcp is not None else 0

    @property
    def bytes_received(self) -> int:
        """Bytes the gateway sent to the device (read and discarded)."""
        if self._pty is not None:
            return self._pty.bytes_received
        return self._tcp.bytes_received if self._tcp is not None else 0

    async def wait_for_clients(self, count: int = 1, timeout_secs: float = 5.0) -> None:
        """tcp: return once at least ``count`` clients are connected; ``TimeoutError`` if not."""
        await self._require_tcp("wait_for_clients").wait_for_clients(count, timeout_secs)

    async def disconnect_clients(self) -> int:
        """tcp: drop every client connection now (they see the connection end); keep listening.

        Returns the number of clients dropped; they are gone from :attr:`clients` on return.
        """
        return await self._require_tcp("disconnect_clients").disconnect_clients()

    async def send_raw(self, data: bytes) -> None:
        """Send ``data`` exactly as given, no terminator added: half lines, noise, two lines."""
        await self._write(data)

    async def _send_line(self, data: bytes) -> None:
        await self._write(data + self.terminator)
        self.sent += 1

    async def _write(self, data: bytes) -> None:
        port = self._port
        if port is None:
            raise RuntimeError(f"the {self._LABEL} simulator is not running")
        async with self._lock:
            await port.write(data)

    def _require_tcp(self, what: str) -> _TcpListener:
        if self.transport != "tcp":
            raise RuntimeError(f"{what}() needs transport='tcp'")
        if self._tcp is None or self._port is None:
            raise RuntimeError(f"the {self._LABEL} simulator is not running")
        return self._tcp


class BarcodeScannerSimulator(_LineDevice):
    """A fixed-mount barcode scanner; an async context manager, reachable while entered.

    ``transport="pty"``: open :attr:`device_path` as a serial port. ``transport="tcp"``: connect
    to :attr:`host`:\\ :attr:`port` (``port=0`` picks a free one). Each scan is one line:
    ``[AIM identifier]data<terminator>`` (module docstring).
    """

    _LABEL = "barcode scanner"

    def __init__(
        self,
        transport: Transport = "tcp",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        terminator: bytes = b"\r\n",
        aim_prefix: bool = True,
    ) -> None:
        super().__init__(transport, host=host, port=port, terminator=terminator)
        self.aim_prefix = aim_prefix
        """Send the AIM symbology identifier before the data, when the scan has one."""

    def line(self, scan: Scan) -> bytes:
        """The bytes :meth:`scan` sends for ``scan``, terminator included."""
        return self._payload(scan) + self.terminator

    def _payload(self, scan: Scan) -> bytes:
        _check_no_terminator(scan.data, self.terminator, f"scan {scan.name!r}")
        prefix = scan.symbology.encode() if self.aim_prefix and scan.symbology else b""
        return prefix + scan.data

    async def scan(self, text: str | bytes | Scan, symbology: str | None = None) -> None:
        """Send one scan now. ``str`` is encoded as ISO 8859-1; a :class:`Scan` brings its own
        symbology unless ``symbology`` is given."""
        if isinstance(text, Scan):
            item = text if symbology is None else Scan(text.name, text.data, symbology)
        else:
            data = text.encode("latin-1") if isinstance(text, str) else bytes(text)
            item = Scan("scan", data, symbology)
        await self._send_line(self._payload(item))

    async def play(self, script: Iterable[Scan], interval_secs: float = 0.0) -> int:
        """Send the scans in order, ``interval_secs`` apart; returns how many were sent."""
        count = 0
        for item in script:
            if count:
                await asyncio.sleep(interval_secs)
            await self.scan(item)
            count += 1
        return count


class RfidReaderSimulator(_LineDevice):
    """A fixed RFID reader (a portal); an async context manager, reachable while entered.

    Same transports as :class:`BarcodeScannerSimulator`. Each read is one line:
    ``[PC word]EPC<terminator>`` in upper-case hex (module docstring).
    """

    _LABEL = "RFID reader"

    def __init__(
        self,
        transport: Transport = "tcp",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        terminator: bytes = b"\r\n",
        pc_word: bool = False,
    ) -> None:
        super().__init__(transport, host=host, port=port, terminator=terminator)
        self.pc_word = pc_word
        """Precede each EPC with the tag's 16-bit PC word (4 hex digits)."""

    def line(self, tag: Tag | str) -> bytes:
        """The bytes one read of ``tag`` sends, terminator included."""
        return self._payload(tag) + self.terminator

    def _payload(self, tag: Tag | str) -> bytes:
        item = tag if isinstance(tag, Tag) else Tag("tag", tag)
        text = item.epc_hex.upper()
        if self.pc_word:
            pc = item.pc_word if item.pc_word is not None else pc_word_for(item.epc_hex)
            text = f"{pc:04X}{text}"
        return text.encode("ascii")

    async def read(self, epc_hex: str | Tag, times: int = 1, spacing_secs: float = 0.0) -> None:
        """Report a tag ``times`` times, ``spacing_secs`` apart, as a reader reports a tag that
        stays in its field."""
        if times < 1:
            raise ValueError(f"times must be at least 1, got {times}")
        data = self._payload(epc_hex)
        for i in range(times):
            if i:
                await asyncio.sleep(spacing_secs)
            await self._send_line(data)

    async def play(self, tags: Iterable[Tag], interval_secs: float = 0.0, times: int = 1) -> int:
        """Read the tags in order, ``interval_secs`` apart, each ``times`` times back to back;
        returns how many tags were read."""
        count = 0
        for tag in tags:
            if count:
                await asyncio.sleep(interval_secs)
            await self.read(tag, times)
            count += 1
        return count


# --------------------------------------------------------------------------- standalone


async def run_forever(
    kind: Literal["barcode", "rfid"] = "barcode",
    transport: Transport = "tcp",
    script: str | None = None,
    interval_secs: float = 1.0,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    terminator: bytes = b"\r\n",
    aim_prefix: bool = True,
    pc_word: bool = False,
    reads_per_tag: int = 1,
    print_fn: Callable[[str], None] = print,
) -> None:
    """Replay a script in a loop until cancelled, after printing where to connect.

    ``script`` names a barcode script in :data:`SCRIPTS` (default ``dock-receiving``) or an RFID
    tag set in :data:`TAG_SETS` (default ``dock-portal``). One scan (or tag, read
    ``reads_per_tag`` times back to back) every ``interval_secs``, the script over and over;
    each line sent is printed after the first two lines (where to connect, what is replayed).
    """
    if interval_secs <= 0:
        raise ValueError(f"interval_secs must be positive, got {interval_secs}")
    if kind == "barcode":
        name = script or "dock-receiving"
        scans = _lookup(SCRIPTS, name, "barcode script")
        scanner = BarcodeScannerSimulator(
            transport, host=host, port=port, terminator=terminator, aim_prefix=aim_prefix
        )
        settings = f"AIM prefix {'on' if aim_prefix else 'off'}"
        async with scanner:
            _print_banner(scanner, name, len(scans), interval_secs, settings, print_fn)
            while True:
                for scan in scans:
                    await scanner.scan(scan)
                    print_fn(f"{scan.name}: {_printable(scanner.line(scan)[: -len(terminator)])}")
                    await asyncio.sleep(interval_secs)
    elif kind == "rfid":
        name = script or "dock-portal"
        tags = _lookup(TAG_SETS, name, "RFID tag set")
        reader = RfidReaderSimulator(
            transport, host=host, port=port, terminator=terminator, pc_word=pc_word
        )
        settings = f"PC word {'on' if pc_word else 'off'}, {reads_per_tag} read(s) per tag"
        async with reader:
            _print_banner(reader, name, len(tags), interval_secs, settings, print_fn)
            while True:
                for tag in tags:
                    await reader.read(tag, reads_per_tag)
                    print_fn(f"{tag.name}: {_printable(reader.line(tag)[: -len(terminator)])}")
                    await asyncio.sleep(interval_secs)
    else:
        raise ValueError(f"kind must be 'barcode' or 'rfid', got {kind!r}")


def _print_banner(
    device: _LineDevice,
    name: str,
    count: int,
    interval_secs: float,
    settings: str,
    print_fn: Callable[[str], None],
) -> None:
    label = device._LABEL[0].upper() + device._LABEL[1:]
    if device.transport == "pty":
        print_fn(f"{label} simulator on serial port {device.device_path}")
    else:
        print_fn(f"{label} simulator listening on {device.host}:{device.port}")
    print_fn(
        f"replaying {name!r} ({count} items), one every {interval_secs:g} s, "
        f"terminator {device.terminator!r}, {settings}"
    )


_T = TypeVar("_T")


def _lookup(table: Mapping[str, _T], name: str, what: str) -> _T:
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"no {what} {name!r}; have {sorted(table)}") from None
