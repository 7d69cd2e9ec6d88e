"""``gxpgate simulate modbus --script``: a technician stages faults without Python. The
simulator runs as a real subprocess; values are read with a real Modbus TCP client."""

from __future__ import annotations

import asyncio
import os
import re
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from drivers.modbus_model import ModbusPoint

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_SECS = 30.0


@pytest.fixture
def simulate(tmp_path: Path) -> Iterator[object]:
    procs: list[subprocess.Popen[str]] = []

    def start(script: str, *extra: str) -> tuple[subprocess.Popen[str], int, list[str]]:
        path = tmp_path / "kit.txt"
        path.write_text(script)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "simulate", "modbus", "--port", "0",
             "--script", str(path), *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env,
        )  # fmt: skip
        procs.append(proc)
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.fullmatch(r"Modbus TCP simulator listening on 127\.0\.0\.1:(\d+)\n", first)
        assert match, first + proc.stderr.read() if proc.stderr else first
        table = [proc.stdout.readline() for _ in range(1 + 15 * 3)]
        return proc, int(match.group(1)), table

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=DEADLINE_SECS)


async def _temperature(port: int, unit: int) -> float | int:
    """The unit's input-register temperature, or the exception code it answers with."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
    assert await client.connect()
    try:
        reply = await client.read_input_registers(0, count=2, device_id=unit)
        if reply.isError():
            return int(reply.exception_code)
        return float(struct.unpack(">f", struct.pack(">HH", *reply.registers))[0])
    finally:
        client.close()


def _until(port: int, unit: int, want: object) -> object:
    """Poll until the read gives ``want`` (generous deadline for a loaded machine)."""
    deadline = time.monotonic() + DEADLINE_SECS
    while True:
        got = asyncio.run(_temperature(port, unit))
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_script_stages_an_excursion_and_an_exception(simulate) -> None:
    proc, port, table = simulate(
        "# a technician's kit\n"
        "set cold-room-1.temperature 9.5\n"
        "freeze ambient-1.temperature\n"
        "at 1s exception 2 cold-room-2\n"
        "at 2s ok cold-room-2\n"
        "at 2s set 2.temperature 12.25   # by unit id\n"
    )
    assert _until(port, 1, 9.5) == 9.5
    assert _until(port, 2, 2) == 2  # exception 2, staged at 1 s
    assert _until(port, 2, 12.25) == 12.25  # answered again, with the new value
    assert proc.poll() is None
    # the printed map uses the config's own words: its row is a valid point as written
    header = table[0].split()
    row = dict(zip(header, table[1].split(), strict=True))
    assert row["type"] == "float32"
    point = ModbusPoint(**{k: row[k] for k in ("table", "address", "type", "byte_order",
                                                "word_order", "scale", "unit")})  # fmt: skip
    assert (point.table, point.address) == ("input", 0)
    cdab = next(line.split() for line in table if " 102 " in line)
    assert dict(zip(header, cdab, strict=True))["word_order"] == "little"


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("set cold-room-1.temperature 5\nfrobnicate\n", "line 2: unknown command 'frobnicate'"),
        ("at 10 set temperature 5\n", "line 1: '10' is not a duration"),
        ("set cold-9.temperature 5\n", "line 1: no sensor 'cold-9'"),
        ("ramp temperature 4 12\n", "line 1: expected: ramp"),
        ("exception 300\n", "line 1: expected: exception CODE (1..255)"),
    ],
)
def test_a_bad_script_exits_2_naming_the_line(tmp_path: Path, script: str, reason: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(script)
    result = subprocess.run(
        [sys.executable, "-m", "agent", "simulate", "modbus", "--port", "0",
         "--script", str(path)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{path}: {reason}" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_commands_typed_on_stdin_run_as_typed() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "simulate", "modbus", "--port", "0", "--script", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        first = proc.stdout.readline()
        match = re.fullmatch(r"Modbus TCP simulator listening on 127\.0\.0\.1:(\d+)\n", first)
        assert match, first
        port = int(match.group(1))
        proc.stdin.write("bogus\nset cold-room-1.temperature 7.5\n")
        proc.stdin.flush()
        assert _until(port, 1, 7.5) == 7.5
        lines = [proc.stdout.readline() for _ in range(1 + 15 * 3 + 2)][-2:]
        assert lines[0].startswith("stdin: line 1: unknown command 'bogus'")
        assert "line 2: set cold-room-1.temperature 7.5" in lines[1]
    finally:
        proc.terminate()
        proc.wait(timeout=DEADLINE_SECS)
