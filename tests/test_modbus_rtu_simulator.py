"""The Modbus RTU simulator, over real ptys with pymodbus's ``AsyncModbusSerialClient``.

Register values, scripting and the map are the TCP simulator's (tests/test_modbus_simulator.py
covers them in depth); here are what the serial line changes: several slaves sharing one port,
silence instead of exception 11, the RTU-only ``bad_crc`` fault, the pulled cable, and pacing.
Values are decoded here with ``struct``, CRCs computed here, independently of pymodbus.
"""

from __future__ import annotations

import asyncio
import os
import re
import struct
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ModbusPDU

from gxpgate.simulators.modbus_sim import (
    DEFAULT_SENSORS,
    ModbusRtuSimulator,
    ModbusSimulator,
    SensorSpec,
    run_forever_rtu,
)

TIMEOUT_SECS = 2.0
SHORT_TIMEOUT_SECS = 0.3


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run one async test body; fail if it leaves a task behind."""

    async def main() -> None:
        await test()
        leftover = asyncio.all_tasks() - {asyncio.current_task()}
        assert not leftover, f"tasks left behind: {leftover}"

    asyncio.run(main())


@asynccontextmanager
async def connect(
    path: str,
    timeout_secs: float = TIMEOUT_SECS,
    trace_packet: Callable[[bool, bytes], bytes] | None = None,
) -> AsyncIterator[AsyncModbusSerialClient]:
    client = AsyncModbusSerialClient(
        path,
        baudrate=19200,
        timeout=timeout_secs,
        retries=0,
        reconnect_delay=0,
        trace_packet=trace_packet,
    )
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


def ok(response: ModbusPDU) -> ModbusPDU:
    assert not response.isError(), response
    return response


async def read_temperature(client: AsyncModbusSerialClient, unit: int) -> float:
    registers = ok(await client.read_input_registers(0, count=2, device_id=unit)).registers
    value: float = struct.unpack(">f", struct.pack(">HH", *registers))[0]
    return value


def crc16(frame: bytes) -> bytes:
    """Modbus RTU CRC, low byte first, as it goes on the wire."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# ------------------------------------------------------------------------------- reads


def test_three_slaves_answer_on_one_line() -> None:
    async def body() -> None:
        async with (
            ModbusRtuSimulator(clock=FakeClock()) as sim,
            connect(sim.device_path) as client,
        ):
            assert sim.device_path.startswith("/dev/")
            assert await read_temperature(client, 1) == 5.0
            assert await read_temperature(client, 2) == 4.5
            assert await read_temperature(client, 3) == 21.0
            holding = ok(await client.read_holding_registers(100, count=2, device_id=3))
            assert holding.registers == [210, 400]
            ok(await client.write_coil(3, True, device_id=2))
            assert sim.coil(2, 3) is True
            assert ok(await client.read_coils(0, count=8, device_id=2)).bits[3] is True
            sim.set_value(1, "temperature", -18.5)
            assert await read_temperature(client, 1) == -18.5

    run(body)


def test_unmapped_address_is_exception_2_as_over_tcp() -> None:
    async def body() -> None:
        async with (
            ModbusRtuSimulator(clock=FakeClock()) as sim,
            connect(sim.device_path) as client,
        ):
            response = await client.read_input_registers(0, count=10, device_id=1)
            assert response.isError()
            assert response.exception_code == 2

    run(body)


# ------------------------------------------------------------------------------- faults


def test_no_answer_times_out_while_the_other_slaves_answer() -> None:
    async def body() -> None:
        async with (
            ModbusRtuSimulator(clock=FakeClock()) as sim,
            connect(sim.device_path, timeout_secs=SHORT_TIMEOUT_SECS) as client,
        ):
            sim.set_fault(2, "no_answer")
            with pytest.raises(ModbusIOException):
                await client.read_input_registers(0, count=2, device_id=2)
            assert sim.requests_served == 0
            assert sim.line.bytes_to_gateway == 0
            assert await read_temperature(client, 1) == 5.0
            assert await read_temperature(client, 3) == 21.0
            sim.set_fault(2, None)
            assert await read_temperature(client, 2) == 4.5

    run(body)


@pytest.mark.parametrize("code", [2, 4, 6])
def test_exception_fault_answers_every_request_with_the_code(code: int) -> None:
    async def body() -> None:
        async with (
            ModbusRtuSimulator(clock=FakeClock()) as sim,
            connect(sim.device_path) as client,
        ):
            sim.set_fault(3, "exception", exception_code=code)
            for response in [
                await client.read_input_registers(0, count=2, device_id=3),
                await client.read_holding_registers(100, count=1, device_id=3),
                await client.write_coil(0, True, device_id=3),
            ]:
                assert response.isError()
                assert response.exception_code == code
            assert await read_temperature(client, 1) == 5.0

    run(body)


def test_bad_crc_answers_a_frame_the_client_rejects_for_that_slave_only() -> None:
    async def body() -> None:
        received: list[bytes] = []

        def trace(sending: bool, packet: bytes) -> bytes:
            if not sending:
                received.append(packet)
            return packet

        async with (
            ModbusRtuSimulator(clock=FakeClock()) as sim,
            connect(sim.device_path, SHORT_TIMEOUT_SECS, trace_packet=trace) as client,
        ):
            sim.set_fault(2, "bad_crc")
            with pytest.raises(ModbusIOException):
                await client.read_input_registers(0, count=2, device_id=2)
            # It did answer: unit 2, fc 4, 4 bytes of 4.5 °C, then a CRC that does not match.
            frame = received[-1]
            assert frame[:7] == bytes([2, 4, 4]) + struct.pack(">f", 4.5)
            assert len(frame) == 9
            assert frame[7:] != crc16(frame[:7])
            assert sim.requests_served == 1

            assert await read_temperature(client, 1) == 5.0
            assert received[-1][-2:] == crc16(received[-1][:-2])
            assert await read_temperature(client, 3) == 21.0
            sim.set_fault(2, None)
            assert await read_temperature(client, 2) == 4.5

    run(body)


def test_a_unit_without_a_sensor_is_silent() -> None:
    async def body() -> None:
        async with (
            ModbusRtuSimulator(clock=FakeClock()) as sim,
            connect(sim.device_path, timeout_secs=SHORT_TIMEOUT_SECS) as client,
        ):
            with pytest.raises(ModbusIOException):
                await client.read_input_registers(0, count=2, device_id=9)
            assert sim.line.bytes_to_device == 8
            assert sim.line.bytes_to_gateway == 0
            assert sim.requests_served == 0
            assert await read_temperature(client, 1) == 5.0

    run(body)


def test_unplugged_line_silences_every_slave_until_plugged() -> None:
    async def body() -> None:
        async with (
            ModbusRtuSimulator(clock=FakeClock()) as sim,
            connect(sim.device_path, timeout_secs=SHORT_TIMEOUT_SECS) as client,
        ):
            assert await read_temperature(client, 1) == 5.0
            sim.unplug()
            for unit in (1, 2):
                with pytest.raises(ModbusIOException):
                    await client.read_input_registers(0, count=2, device_id=unit)
            assert client.connected  # the port is still open, as with a pulled cable
            sim.plug()
            assert await read_temperature(client, 2) == 4.5

    run(body)


def test_faults_of_the_other_transport_are_rejected_by_name() -> None:
    rtu = ModbusRtuSimulator()
    with pytest.raises(ValueError, match="drop_connection is a TCP fault"):
        rtu.set_fault(1, "drop_connection")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown fault"):
        rtu.set_fault(1, "garbage")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no sensor with unit id 9"):
        rtu.set_fault(9, "no_answer")
    tcp = ModbusSimulator()
    with pytest.raises(ValueError, match="bad_crc is an RTU fault"):
        tcp.set_fault(1, "bad_crc")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- line


def test_requests_served_counts_every_answer() -> None:
    async def body() -> None:
        async with (
            ModbusRtuSimulator(clock=FakeClock()) as sim,
            connect(sim.device_path) as client,
        ):
            ok(await client.read_input_registers(0, count=4, device_id=1))
            ok(await client.read_holding_registers(100, count=4, device_id=2))
            ok(await client.write_coil(0, True, device_id=3))
            assert (await client.read_input_registers(9, count=1, device_id=1)).isError()
            assert sim.requests_served == 4

    run(body)


def test_paced_polling_takes_at_least_the_wire_time() -> None:
    async def body() -> None:
        sensors = [SensorSpec(unit, f"probe-{unit}") for unit in range(1, 11)]
        async with (
            ModbusRtuSimulator(sensors, baudrate=9600, clock=FakeClock()) as sim,
            connect(sim.device_path) as client,
        ):
            started = time.monotonic()
            for unit in range(1, 11):
                ok(await client.read_input_registers(0, count=4, device_id=unit))
            elapsed = time.monotonic() - started
            # Request 8 bytes, response 3 + 8 + 2, 10 bits a byte at 9600 baud.
            assert (sim.line.bytes_to_device, sim.line.bytes_to_gateway) == (80, 130)
            assert elapsed >= 210 * 10 / 9600  # 0.22 s

    run(body)


def test_run_forever_rtu_prints_the_path_and_the_map_and_serves_until_cancelled() -> None:
    async def body() -> None:
        lines: list[str] = []
        printed = asyncio.Event()

        def collect(text: str) -> None:
            lines.append(text)
            if len(lines) == 2:
                printed.set()

        task = asyncio.create_task(run_forever_rtu(DEFAULT_SENSORS, 9600, collect))
        await asyncio.wait_for(printed.wait(), TIMEOUT_SECS)
        match = re.fullmatch(r"Modbus RTU simulator on (/dev/\S+) at 9600 baud", lines[0])
        assert match, lines[0]
        table = lines[1].splitlines()
        assert table[1].split()[:8] == [
            "1", "cold-room-1", "temperature", "input", "0", "float32", "big", "big"
        ]  # fmt: skip
        assert len(table) == 1 + 15 * len(DEFAULT_SENSORS)

        async with connect(match.group(1)) as client:
            assert await read_temperature(client, 3) == pytest.approx(21.0, abs=0.3)

        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(body)


def test_exit_closes_the_port_and_the_line() -> None:
    async def body() -> None:
        before = open_fds()
        sim = ModbusRtuSimulator(clock=FakeClock())
        async with sim:
            with pytest.raises(RuntimeError, match="already running"):
                await sim.__aenter__()
            async with connect(sim.device_path) as client:
                assert await read_temperature(client, 1) == 5.0
        assert open_fds() == before
        with pytest.raises(RuntimeError, match="not open"):
            _ = sim.device_path
        async with sim, connect(sim.device_path) as client:  # and it can be entered again
            assert await read_temperature(client, 2) == 4.5
        assert open_fds() == before

    run(body)
