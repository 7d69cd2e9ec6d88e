"""The barcode scanner and RFID reader simulators, over real ptys and real loopback TCP.

Ptys are read with pyserial, as the gateway's serial driver will read them (blocking reads bridged
with ``asyncio.to_thread``); TCP with ``asyncio.open_connection``. The scripts' content is checked
against an independent GS1 check-digit function (itself checked against the shared test vectors)
and an independent EPC bit decoder, so a wrong constant in the simulator cannot pass by agreeing
with itself.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
import serial

from gxpgate.simulators.scanner_sim import (
    DOCK_PORTAL_TAGS,
    DOCK_RECEIVING,
    FAULTY_SCANS,
    FAULTY_TAGS,
    PUT_AWAY,
    REFERENCE_TAGS,
    SCRIPTS,
    TAG_SETS,
    VECTOR_SCANS,
    BarcodeScannerSimulator,
    RfidReaderSimulator,
    Scan,
    Tag,
    pc_word_for,
    run_forever,
)

TIMEOUT_SECS = 2.0
GS = "\x1d"

# From testdata/vectors.json (gs1_check_digit, and gs1_scans[].input_repr with <GS> = ASCII 29).
CHECK_DIGIT_VECTORS = [
    ("950110153100", 0), ("9501234", 6), ("629104150021", 3), ("0950110102091", 7),
    ("0061414112345", 2), ("10614141234567890", 8), ("0703206980498", 8), ("8061414112345", 8),
]  # fmt: skip
SCAN_VECTORS = [
    "]d201095011010209171719050810ABCD1234<GS>2110",
    "]C100106141412345678908",
    "]d2010061414112345221ABC<GS>1726123110L1",
    "]Q3010061414112345210ABC123",
    "0107032069804988100329<GS>15210526",
    "15210526<GS>100329",
]

# Fixed-length AIs among those the scripts use; the others are variable and end with GS.
FIXED_LENGTH = {"00": 18, "01": 14, "15": 6, "17": 6}


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run one async test body; fail if it leaves a task behind."""

    async def main() -> None:
        await test()
        leftover = asyncio.all_tasks() - {asyncio.current_task()}
        assert not leftover, f"tasks left behind: {leftover}"

    asyncio.run(main())


# --------------------------------------------------------------------------- independent GS1/EPC


def check_digit(payload: str) -> int:
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(payload)))
    return -total % 10


def check_digit_ok(number: str) -> bool:
    return check_digit(number[:-1]) == int(number[-1])


def hri_elements(hri: str) -> list[tuple[str, str]]:
    return re.findall(r"\((\d{2,4})\)([^(]*)", hri)


def data_from_hri(hri: str) -> bytes:
    """The element string a symbol carries for ``hri``: GS after every variable-length element
    but the last."""
    elements = hri_elements(hri)
    parts = []
    for i, (ai, value) in enumerate(elements):
        parts.append(ai + value)
        if ai not in FIXED_LENGTH and i < len(elements) - 1:
            parts.append(GS)
    return "".join(parts).encode()


def bits(epc_hex: str) -> str:
    return bin(int(epc_hex, 16))[2:].zfill(len(epc_hex) * 4)


def decode_epc(epc_hex: str) -> dict[str, Any]:
    """SGTIN-96, SSCC-96 and SGTIN-198, partition 5 only (7-digit company prefix)."""
    b = bits(epc_hex)
    header, filter_, partition = int(b[:8], 2), int(b[8:11], 2), int(b[11:14], 2)
    assert partition == 5
    prefix = f"{int(b[14:38], 2):07d}"
    if header in (0x30, 0x36):
        item_ref = f"{int(b[38:58], 2):06d}"
        body = item_ref[0] + prefix + item_ref[1:]
        gtin = body + str(check_digit(body))
        if header == 0x30:
            serial_value = str(int(b[58:96], 2))
        else:
            chars = [int(b[i : i + 7], 2) for i in range(58, 198, 7)]
            serial_value = "".join(chr(c) for c in chars if c)
            assert int(b[198:], 2) == 0  # padding to a whole word
        return {"header": header, "filter": filter_, "gtin": gtin, "serial": serial_value}
    if header == 0x31:
        serial_ref = f"{int(b[38:72], 2):010d}"
        body = serial_ref[0] + prefix + serial_ref[1:]
        assert int(b[72:96], 2) == 0
        return {"header": header, "filter": filter_, "sscc": body + str(check_digit(body))}
    raise AssertionError(f"unexpected header {header:#x}")


# --------------------------------------------------------------------------- script content


def test_the_check_digit_function_matches_the_vectors() -> None:
    for payload, digit in CHECK_DIGIT_VECTORS:
        assert check_digit(payload) == digit


def test_the_vector_scans_are_the_shared_vectors() -> None:
    assert [(s.symbology or "") + s.data.decode().replace(GS, "<GS>") for s in VECTOR_SCANS] == (
        SCAN_VECTORS
    )


def test_valid_scans_carry_their_hri_and_correct_check_digits() -> None:
    for scan in (*DOCK_RECEIVING, *VECTOR_SCANS):
        assert scan.hri is not None
        if scan in VECTOR_SCANS:  # one vector has a (tolerated) GS after a fixed-length element
            assert scan.data.replace(b"\x1d", b"") == data_from_hri(scan.hri).replace(b"\x1d", b"")
        else:
            assert scan.data == data_from_hri(scan.hri), scan.name
        for ai, value in hri_elements(scan.hri):
            if ai in ("00", "01"):
                assert check_digit_ok(value), (scan.name, value)


def test_dock_receiving_and_put_away_content() -> None:
    assert [s.name for s in DOCK_RECEIVING] == [
        "pallet-1", "case-a1-1001", "case-a1-1002", "case-a1-1003",
        "pallet-2", "case-b7-2001", "case-b7-2002",
    ]  # fmt: skip
    by_name = {s.name: s for s in DOCK_RECEIVING}
    assert by_name["pallet-1"].symbology == "]C1"
    assert by_name["pallet-1"].hri == "(00)306141410000001010"
    assert by_name["pallet-2"].hri == "(00)306141410000001027"
    assert by_name["case-a1-1001"].symbology == "]d2"
    assert by_name["case-a1-1001"].data == b"01106141410000191727033110LOT-A1\x1d211001"
    assert by_name["case-b7-2002"].hri == "(01)10614141000026(17)270900(10)LOT-B7(21)2002"
    assert tuple(s for s in DOCK_RECEIVING if s.name.startswith("case-")) == PUT_AWAY
    assert dict(SCRIPTS) == {
        "dock-receiving": DOCK_RECEIVING,
        "put-away": PUT_AWAY,
        "faulty": FAULTY_SCANS,
        "vectors": VECTOR_SCANS,
    }
    with pytest.raises(TypeError):
        SCRIPTS["x"] = ()  # type: ignore[index]


def test_faulty_scans_are_what_they_claim() -> None:
    by_name = {s.name: s for s in FAULTY_SCANS}
    with pytest.raises(UnicodeDecodeError):
        by_name["garbage"].data.decode()
    assert by_name["truncated-in-gtin"].data == b"01" + b"10614141000019"[:8]
    assert by_name["gs-missing"].data.startswith(b"011061414100001910LOT-A117")
    assert GS.encode() not in by_name["gs-missing"].data
    assert not check_digit_ok(by_name["bad-check-digit"].data[2:16].decode())
    assert by_name["code128-not-gs1"].symbology == "]C0"
    for scan in FAULTY_SCANS:
        assert scan.hri is None
        assert scan.note
        assert b"\r" not in scan.data
        assert b"\n" not in scan.data


def test_reference_tags_decode_to_the_vectors() -> None:
    tags = {t.name: t.epc_hex for t in REFERENCE_TAGS}
    assert decode_epc(tags["sgtin-96"]) == {
        "header": 0x30, "filter": 3, "gtin": "80614141123458", "serial": "6789"
    }  # fmt: skip
    assert decode_epc(tags["sscc-96"]) == {
        "header": 0x31, "filter": 3, "sscc": "106141412345678908"
    }  # fmt: skip
    assert decode_epc(tags["sgtin-198"]) == {
        "header": 0x36, "filter": 3, "gtin": "80614141123458", "serial": "32a/b"
    }  # fmt: skip


def test_dock_portal_tags_are_the_dock_pallets_and_cases() -> None:
    scans = {s.name: s for s in DOCK_RECEIVING}
    assert [t.name for t in DOCK_PORTAL_TAGS] == list(scans)
    for tag in DOCK_PORTAL_TAGS:
        decoded = decode_epc(tag.epc_hex)
        elements = dict(hri_elements(scans[tag.name].hri or ""))
        if tag.name.startswith("pallet"):
            assert decoded == {"header": 0x31, "filter": 6, "sscc": elements["00"]}
        else:
            assert decoded == {
                "header": 0x30, "filter": 2, "gtin": elements["01"], "serial": elements["21"]
            }  # fmt: skip
    assert set(TAG_SETS) == {"reference", "faulty", "dock-portal"}


def test_pc_word_is_the_length_in_words_in_the_top_five_bits() -> None:
    assert pc_word_for("3074257BF7194E4000001A85") == 0x3000
    assert pc_word_for(REFERENCE_TAGS[2].epc_hex) == 0x6800
    assert pc_word_for("ABCD") == 0x0800
    assert pc_word_for("3074257BF7194E4000") == 0x2800  # 4.5 words: the tag stores 5
    for bad in ("", "XYZ", "0" * 125):
        with pytest.raises(ValueError, match="EPC"):
            pc_word_for(bad)
    truncated = {t.name: t for t in FAULTY_TAGS}["truncated"]
    assert truncated.pc_word == 0x3000


# --------------------------------------------------------------------------- pty


@asynccontextmanager
async def open_port(path: str) -> AsyncIterator[serial.Serial]:
    port = serial.Serial(path, baudrate=9600, timeout=TIMEOUT_SECS, write_timeout=TIMEOUT_SECS)
    try:
        yield port
    finally:
        port.close()


async def read_line(port: serial.Serial, terminator: bytes = b"\r\n") -> bytes:
    line: bytes = await asyncio.to_thread(port.read_until, terminator)
    assert line.endswith(terminator), f"timed out after {line!r}"
    return line


@pytest.mark.parametrize("terminator", [b"\r\n", b"\r", b"\n"])
def test_pty_scans_arrive_with_aim_prefix_gs_and_terminator(terminator: bytes) -> None:
    async def body() -> None:
        async with BarcodeScannerSimulator("pty", terminator=terminator) as sim:
            assert sim.device_path is not None
            assert sim.device_path.startswith("/dev/")
            assert sim.address == sim.device_path
            async with open_port(sim.device_path) as port:
                assert await sim.play(DOCK_RECEIVING) == 7
                lines = [await read_line(port, terminator) for _ in DOCK_RECEIVING]
            assert sim.sent == 7
        assert lines[0] == b"]C100306141410000001010" + terminator
        assert lines[1] == b"]d201106141410000191727033110LOT-A1\x1d211001" + terminator
        assert lines == [(s.symbology or "").encode() + s.data + terminator for s in DOCK_RECEIVING]

    run(body)


def test_pty_without_aim_prefix_and_with_text_and_raw_bytes() -> None:
    async def body() -> None:
        async with BarcodeScannerSimulator("pty", aim_prefix=False) as sim:
            assert sim.device_path is not None
            async with open_port(sim.device_path) as port:
                await sim.scan("0110614141000019" + GS + "21X", "]d2")
                await sim.scan("CAFÉ-1", "]C0")  # Code 128 text is ISO 8859-1
                await sim.scan(FAULTY_SCANS[0])
                await sim.send_raw(b"010614")  # a torn line, then the rest
                await sim.send_raw(b"1\r\n")
                assert await read_line(port) == b"0110614141000019\x1d21X\r\n"
                assert await read_line(port) == b"CAF\xc9-1\r\n"
                assert await read_line(port) == FAULTY_SCANS[0].data + b"\r\n"
                assert await read_line(port) == b"0106141\r\n"
            assert sim.sent == 3

    run(body)


def test_pty_survives_the_gateway_closing_and_reopening_the_port() -> None:
    async def body() -> None:
        async with BarcodeScannerSimulator("pty") as sim:
            assert sim.device_path is not None
            for name in ("first", "second", "third"):
                async with open_port(sim.device_path) as port:
                    await sim.scan(name)
                    assert await read_line(port) == name.encode() + b"\r\n"

    run(body)


def test_pty_with_nobody_reading_neither_blocks_nor_tears_the_next_line() -> None:
    async def body() -> None:
        async with BarcodeScannerSimulator("pty") as sim:
            assert sim.device_path is not None
            async with asyncio.timeout(TIMEOUT_SECS):
                for _ in range(2000):  # ~100 KB, far more than the pty holds
                    await sim.scan(DOCK_RECEIVING[1])
            assert sim.overruns > 0
            async with open_port(sim.device_path) as port:  # pyserial drops unread input
                await sim.scan("after")
                assert await read_line(port) == b"after\r\n"

    run(body)


def test_pty_gateway_writes_never_block() -> None:
    async def body() -> None:
        async with BarcodeScannerSimulator("pty") as sim:
            assert sim.device_path is not None
            async with open_port(sim.device_path) as port:
                chunk = b"TRIGGER\r\n" * 10_000  # ~90 KB: blocks unless the simulator drains
                # write_timeout makes a blocked write raise instead of hanging.
                assert await asyncio.to_thread(port.write, chunk) == len(chunk)
                await sim.scan("still here")
                assert await read_line(port) == b"still here\r\n"
            assert sim.bytes_received > 0

    run(body)


def test_rfid_over_pty_with_pc_word_and_cr_terminator() -> None:
    async def body() -> None:
        async with RfidReaderSimulator("pty", terminator=b"\r", pc_word=True) as sim:
            assert sim.device_path is not None
            async with open_port(sim.device_path) as port:
                await sim.read("3074257bf7194e4000001a85", times=2)
                await sim.play(REFERENCE_TAGS[1:])
                lines = [await read_line(port, b"\r") for _ in range(4)]
            assert sim.sent == 4
        assert lines == [
            b"30003074257BF7194E4000001A85\r",
            b"30003074257BF7194E4000001A85\r",
            b"30003174257BF4499602D2000000\r",
            b"68003674257BF7194E59B2C2BF100000000000000000000000000000\r",
        ]

    run(body)


# --------------------------------------------------------------------------- tcp


@asynccontextmanager
async def connect(
    sim: BarcodeScannerSimulator | RfidReaderSimulator, *, rcvbuf: int | None = None
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    sock: socket.socket | None = None
    if rcvbuf is not None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (sim.host, sim.port))
        reader, writer = await asyncio.open_connection(sock=sock)
    else:
        reader, writer = await asyncio.open_connection(sim.host, sim.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with suppress(OSError):
            await asyncio.wait_for(writer.wait_closed(), TIMEOUT_SECS)


async def readline(reader: asyncio.StreamReader, terminator: bytes = b"\r\n") -> bytes:
    return await asyncio.wait_for(reader.readuntil(terminator), TIMEOUT_SECS)


def test_tcp_every_client_gets_every_scan() -> None:
    async def body() -> None:
        async with BarcodeScannerSimulator("tcp") as sim:
            assert sim.port != 0
            assert sim.address == f"127.0.0.1:{sim.port}"
            async with connect(sim) as (r1, _w1), connect(sim) as (r2, _w2):
                await sim.wait_for_clients(2, TIMEOUT_SECS)
                assert sim.clients == 2
                await sim.play(FAULTY_SCANS)
                for reader in (r1, r2):
                    got = [await readline(reader) for _ in FAULTY_SCANS]
                    assert got == [
                        (s.symbology or "").encode() + s.data + b"\r\n" for s in FAULTY_SCANS
                    ]
            assert sim.sent == len(FAULTY_SCANS)

    run(body)


def test_tcp_scan_without_clients_is_counted_and_lost() -> None:
    async def body() -> None:
        async with BarcodeScannerSimulator("tcp") as sim:
            await sim.scan(DOCK_RECEIVING[0])
            assert sim.sent == 1
            async with connect(sim) as (reader, _writer):
                await sim.wait_for_clients()
                await sim.scan(DOCK_RECEIVING[1])
                assert await readline(reader) == sim.line(DOCK_RECEIVING[1])

    run(body)


def test_tcp_disconnect_clients_drops_them_and_keeps_listening() -> None:
    async def body() -> None:
        async with BarcodeScannerSimulator("tcp") as sim:
            async with connect(sim) as (r1, _w1), connect(sim) as (r2, _w2):
                await sim.wait_for_clients(2, TIMEOUT_SECS)
                assert await sim.disconnect_clients() == 2
                assert sim.clients == 0
                for reader in (r1, r2):
                    with suppress(ConnectionResetError):  # EOF or RST: the connection is gone
                        assert await asyncio.wait_for(reader.read(), TIMEOUT_SECS) == b""
            async with connect(sim) as (reader, _writer):
                await sim.wait_for_clients(1, TIMEOUT_SECS)
                await sim.scan("back")
                assert await readline(reader) == b"back\r\n"

    run(body)


def test_tcp_client_that_stops_reading_is_dropped_not_waited_for() -> None:
    async def body() -> None:
        sim = BarcodeScannerSimulator("tcp")
        async with sim, connect(sim, rcvbuf=4096) as (_reader, _writer):
            await sim.wait_for_clients(1, TIMEOUT_SECS)
            big = Scan("big", b"X" * 65536)
            async with asyncio.timeout(10):
                for _ in range(2000):
                    await sim.scan(big)
                    if sim.dropped_clients:
                        break
            assert sim.dropped_clients == 1

    run(body)


def test_tcp_exit_is_bounded_with_a_client_that_neither_reads_nor_leaves() -> None:
    async def body() -> None:
        sim = BarcodeScannerSimulator("tcp")
        async with sim, connect(sim) as (reader, writer):
            await sim.wait_for_clients(1, TIMEOUT_SECS)
            writer.write(b"T\r\n")  # a trigger command, read and discarded
            await sim.scan("one")
            assert await readline(reader) == b"one\r\n"
            async with asyncio.timeout(TIMEOUT_SECS):
                await sim.__aexit__(None, None, None)
            assert sim.clients == 0
            with suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(), TIMEOUT_SECS) == b""

    run(body)


def test_rfid_over_tcp_with_and_without_pc_word() -> None:
    async def body() -> None:
        async with (
            RfidReaderSimulator("tcp") as plain,
            RfidReaderSimulator("tcp", pc_word=True, terminator=b"\n") as with_pc,
            connect(plain) as (r1, _w1),
            connect(with_pc) as (r2, _w2),
        ):
            await plain.wait_for_clients(1, TIMEOUT_SECS)
            await with_pc.wait_for_clients(1, TIMEOUT_SECS)
            for sim in (plain, with_pc):
                await sim.read(REFERENCE_TAGS[0], times=3)
                await sim.play(FAULTY_TAGS)
            assert [await readline(r1) for _ in range(5)] == [
                b"3074257BF7194E4000001A85\r\n",
                b"3074257BF7194E4000001A85\r\n",
                b"3074257BF7194E4000001A85\r\n",
                b"E280117000000208A1B2C3D4\r\n",
                b"3074257BF7194E4000\r\n",
            ]
            got = [await readline(r2, b"\n") for _ in range(5)]
            assert got[0] == b"30003074257BF7194E4000001A85\n"
            assert got[2] == got[0]
            assert got[3] == b"3000E280117000000208A1B2C3D4\n"
            assert got[4] == b"30003074257BF7194E4000\n"  # the tag's own PC word, not 2800
            assert int(got[0][:4], 16) >> 11 == 6  # length field: 6 words = 96 bits
            assert plain.sent == with_pc.sent == 5

    run(body)


# --------------------------------------------------------------------------- misuse


def test_misuse_is_refused() -> None:
    async def body() -> None:
        with pytest.raises(ValueError, match="transport"):
            BarcodeScannerSimulator("udp")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="terminator"):
            RfidReaderSimulator("tcp", terminator=b"")
        with pytest.raises(ValueError, match="AIM"):
            Scan("x", b"1", "d2")
        with pytest.raises(ValueError, match="hex"):
            Tag("x", "30G4")
        sim = BarcodeScannerSimulator("pty")
        with pytest.raises(RuntimeError, match="not running"):
            await sim.scan("x")
        async with sim:
            with pytest.raises(RuntimeError, match="already running"):
                await sim.__aenter__()
            with pytest.raises(ValueError, match="terminator"):
                await sim.scan("two\nlines")
            with pytest.raises(RuntimeError, match="tcp"):
                await sim.wait_for_clients()
            with pytest.raises(RuntimeError, match="tcp"):
                await sim.disconnect_clients()
        async with RfidReaderSimulator("tcp") as reader:
            with pytest.raises(TimeoutError):
                await reader.wait_for_clients(1, timeout_secs=0.05)
            with pytest.raises(ValueError, match="times"):
                await reader.read("3000", times=0)

    run(body)


# --------------------------------------------------------------------------- run_forever


async def start_forever(**kwargs: Any) -> tuple[asyncio.Task[None], list[str]]:
    lines: list[str] = []
    banner = asyncio.Event()

    def collect(text: str) -> None:
        lines.append(text)
        if len(lines) == 2:
            banner.set()

    task = asyncio.create_task(run_forever(print_fn=collect, **kwargs))
    await asyncio.wait_for(banner.wait(), TIMEOUT_SECS)
    return task, lines


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_run_forever_barcode_over_tcp_replays_the_script() -> None:
    async def body() -> None:
        task, lines = await start_forever(kind="barcode", transport="tcp", interval_secs=0.01)
        try:
            match = re.fullmatch(
                r"Barcode scanner simulator listening on 127\.0\.0\.1:(\d+)", lines[0]
            )
            assert match, lines[0]
            assert "'dock-receiving' (7 items)" in lines[1]
            expected = {(s.symbology or "").encode() + s.data + b"\r\n" for s in DOCK_RECEIVING}
            reader, writer = await asyncio.open_connection("127.0.0.1", int(match.group(1)))
            try:
                for _ in range(10):  # more than the script: it loops
                    assert await readline(reader) in expected
            finally:
                writer.close()
                await writer.wait_closed()
            assert any("<GS>" in line for line in lines[2:])
        finally:
            await stop(task)

    run(body)


def test_run_forever_rfid_over_pty() -> None:
    async def body() -> None:
        task, lines = await start_forever(
            kind="rfid", transport="pty", script="reference", interval_secs=0.01, pc_word=True
        )
        try:
            match = re.fullmatch(r"RFID reader simulator on serial port (/dev/\S+)", lines[0])
            assert match, lines[0]
            expected = {b"3000" + t.epc_hex.encode() + b"\r\n" for t in REFERENCE_TAGS[:2]}
            expected.add(b"6800" + REFERENCE_TAGS[2].epc_hex.encode() + b"\r\n")
            async with open_port(match.group(1)) as port:
                for _ in range(4):
                    assert await read_line(port) in expected
        finally:
            await stop(task)

    run(body)


def test_run_forever_refuses_unknown_scripts() -> None:
    async def body() -> None:
        with pytest.raises(ValueError, match="no barcode script 'nope'"):
            await run_forever(script="nope", print_fn=lambda _: None)
        with pytest.raises(ValueError, match="kind"):
            await run_forever(kind="laser", print_fn=lambda _: None)  # type: ignore[arg-type]

    run(body)
