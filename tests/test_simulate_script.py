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

import httpx
import pytest
from pymodbus.client import AsyncModbusTcpClient

from gxpgate.drivers.modbus_model import ModbusPoint

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
            [sys.executable, "-m", "gxpgate", "simulate", "modbus", "--port", "0",
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
    result = _refused("modbus", "--port", "0", "--script", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{path}: {reason}" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_commands_typed_on_stdin_run_as_typed() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gxpgate", "simulate", "modbus", "--port", "0", "--script", "-"],
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


def _service_args(tmp_path: Path, signing_key) -> list[str]:
    from gxpgate.agent.evidence import public_key_pem

    pub = tmp_path / "signing.pub.pem"
    pub.write_text(public_key_pem(signing_key[1].public_key()))
    return ["quality-service", "--public-key", str(pub), "--port", "0",
            "--db", str(tmp_path / "qs.db")]  # fmt: skip


def _refused(*args: str) -> subprocess.CompletedProcess[str]:
    """``gxpgate simulate ARGS`` expected to refuse its script before it starts."""
    return subprocess.run(
        [sys.executable, "-m", "gxpgate", "simulate", *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def test_quality_service_script_stages_429_503_and_an_outage(tmp_path: Path, signing_key) -> None:
    script = tmp_path / "qs.txt"
    script.write_text("fail 429 1 retry-after 2s\nfail 503\nat 1s outage 3s\n")
    proc = _spawn(*_service_args(tmp_path, signing_key), "--script", str(script))
    assert proc.stdout is not None
    try:
        url = proc.stdout.readline().split()[-1]
        cursor = f"{url}/v1/evidence/cursor"
        params = {"gw": "gw-x", "chain": "c"}
        # the first two lines are staged at once; wait until the simulator says so
        assert "line 1: fail 429" in proc.stdout.readline()
        assert "line 2: fail 503" in proc.stdout.readline()
        first = httpx.get(cursor, params=params, timeout=10)
        assert (first.status_code, first.headers.get("retry-after")) == (429, "2")
        assert httpx.get(cursor, params=params, timeout=10).status_code == 503
        assert "line 3: at 1s outage 3s" in proc.stdout.readline()
        with pytest.raises(httpx.ConnectError):
            httpx.get(cursor, params=params, timeout=10)
        deadline = time.monotonic() + DEADLINE_SECS
        while True:  # listening again after the outage
            try:
                answer = httpx.get(cursor, params=params, timeout=10)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "still in the outage"
                time.sleep(0.1)
        assert answer.json() == {"acked_through": 0}
    finally:
        proc.terminate()
        proc.wait(timeout=DEADLINE_SECS)


def test_a_bad_quality_service_script_exits_2(tmp_path: Path, signing_key) -> None:
    script = tmp_path / "qs.txt"
    script.write_text("outage 10s\nfail 42\n")
    result = _refused(*_service_args(tmp_path, signing_key), "--script", str(script))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{script}: line 2: expected: fail STATUS" in result.stderr
    assert not (tmp_path / "qs.db").exists()


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gxpgate", "simulate", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def _line_with(proc: subprocess.Popen[str], text: str) -> str:
    """Read stdout until a line holding ``text`` (pytest's timeout ends a wait for nothing)."""
    assert proc.stdout is not None
    seen = []
    while line := proc.stdout.readline():
        if text in line:
            return line
        seen.append(line)
    raise AssertionError(f"{text!r} never printed; got {seen}")


def test_logger_script_stages_a_value_a_sensor_fault_and_silence(tmp_path: Path) -> None:
    import serial

    from gxpgate.drivers import gxl

    script = tmp_path / "logger.txt"
    script.write_text("set temperature 9.5\nbad humidity\nat 1s silent for 3s\n")
    proc = _spawn("logger", "--serial", "L7", "--stored", "0", "--script", str(script))
    try:
        path = _line_with(proc, "device path:").split()[2]
        _line_with(proc, "line 2: bad humidity")
        with serial.Serial(path, 9600, timeout=5) as port:
            port.write(gxl.request_live())
            live = gxl.parse_live(gxl.decode_line(port.readline()))
            assert dict(live.values) == {"temperature": 9.5, "humidity": None}  # ERR
            _line_with(proc, "line 3: at 1s silent for 3s")
            port.timeout = 1
            port.reset_input_buffer()
            port.write(gxl.request_live())
            assert port.readline() == b""  # silent: no answer at all
            port.timeout = DEADLINE_SECS
            deadline = time.monotonic() + DEADLINE_SECS
            while True:  # it answers again once the 3 s are over
                port.write(gxl.request_live())
                port.timeout = 1
                if answer := port.readline():
                    break
                assert time.monotonic() < deadline, "still silent"
            assert gxl.parse_live(gxl.decode_line(answer)).values["temperature"] == 9.5
    finally:
        proc.terminate()
        proc.wait(timeout=DEADLINE_SECS)


def test_opcua_script_stages_a_bad_status_and_a_server_outage(tmp_path: Path) -> None:
    from asyncua import Client, ua

    script = tmp_path / "opcua.txt"
    script.write_text(
        "set cold-room-1.temperature 9.5\n"
        "bad freezer-1.temperature BadCommunicationError\n"
        "at 3s drop for 3s\n"
    )
    proc = _spawn("opcua", "--port", "0", "--script", str(script))
    try:
        endpoint = _line_with(proc, "listening on").split()[-1]
        _line_with(proc, "line 2: bad freezer-1.temperature")

        async def read() -> tuple[float, int]:
            async with Client(endpoint, timeout=10) as client:
                ns = await client.get_namespace_index("urn:gxpgate:simulator:warehouse")
                cold = client.get_node(f"ns={ns};s=cold-room-1.temperature")
                frozen = client.get_node(f"ns={ns};s=freezer-1.temperature")
                bad = await frozen.read_data_value(raise_on_bad_status=False)
                assert bad.StatusCode is not None
                return await cold.read_value(), bad.StatusCode.value

        value, status = asyncio.run(read())
        assert value == 9.5
        assert status == ua.StatusCodes.BadCommunicationError
        _line_with(proc, "line 3: at 3s drop for 3s")
        with pytest.raises((OSError, TimeoutError)):
            asyncio.run(read())  # the server is down
        deadline = time.monotonic() + DEADLINE_SECS
        while True:  # and back up after 3 s, with the staged values
            try:
                value, status = asyncio.run(read())
                break
            except (OSError, TimeoutError):
                assert time.monotonic() < deadline, "the server never came back"
                time.sleep(0.2)
        assert (value, status) == (9.5, ua.StatusCodes.BadCommunicationError)
    finally:
        proc.terminate()
        proc.wait(timeout=DEADLINE_SECS)


@pytest.mark.parametrize(
    ("kind", "script", "reason"),
    [
        ("opcua", "bad cold-room-1.temperature BadNonsense\n", "line 1: unknown status"),
        ("opcua", "exception 2\n", "line 1: unknown command 'exception'"),
        ("opcua", "drop cold-room-1\n", "line 1: unexpected 'cold-room-1'"),
        ("logger", "set door_open 1\n", "line 1: unknown point 'door_open'"),
        ("logger", "garbage 0\n", "line 1: '0' is not a count"),
        ("logger", "bad humidity BadSensorFailure\n", "line 1: expected: bad [SENSOR.]POINT"),
    ],
)
def test_bad_opcua_and_logger_scripts_exit_2(
    tmp_path: Path, kind: str, script: str, reason: str
) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(script)
    result = _refused(kind, "--script", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{path}: {reason}" in result.stderr
    assert "Traceback" not in result.stderr
