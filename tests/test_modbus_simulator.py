"""The Modbus TCP simulator, exercised over real loopback sockets with pymodbus's async client.

Values are decoded here with ``struct`` from the raw registers, independently of the simulator's
encoder. Tests that check exact values use a fake clock (drift is exactly zero at the start and
time moves only when the test says so); the ramp test runs on the real clock.
"""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ModbusPDU

from gxpgate.simulators.modbus_sim import (
    DEFAULT_SENSORS,
    ModbusSimulator,
    RegisterRow,
    SensorSpec,
    run_forever,
)

TIMEOUT_SECS = 2.0
SHORT_TIMEOUT_SECS = 0.3


Request = Callable[[], Awaitable[ModbusPDU]]


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
    sim: ModbusSimulator,
    timeout_secs: float = TIMEOUT_SECS,
    on_connect: Callable[[bool], None] | None = None,
) -> AsyncIterator[AsyncModbusTcpClient]:
    client = AsyncModbusTcpClient(
        sim.host,
        port=sim.port,
        timeout=timeout_secs,
        retries=0,
        reconnect_delay=0,
        trace_connect=on_connect,
    )
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


def on_disconnect(event: asyncio.Event) -> Callable[[bool], None]:
    """A ``trace_connect`` callback that sets ``event`` when the connection goes down."""

    def trace(connected: bool) -> None:
        if not connected:
            event.set()

    return trace


def ok(response: ModbusPDU) -> ModbusPDU:
    assert not response.isError(), response
    return response


def f32_abcd(words: Sequence[int]) -> float:
    return struct.unpack(">f", struct.pack(">HH", *words))[0]


def f32_cdab(words: Sequence[int]) -> float:
    return struct.unpack(">f", struct.pack(">HH", words[1], words[0]))[0]


def int16(word: int) -> int:
    return struct.unpack(">h", struct.pack(">H", word))[0]


async def read_temperature(client: AsyncModbusTcpClient, unit: int) -> float:
    return f32_abcd(ok(await client.read_input_registers(0, count=2, device_id=unit)).registers)


# ------------------------------------------------------------------------------- register map


def test_register_map_values_decode_to_the_spec() -> None:
    expected = {1: (5.0, 45.0, 50, 450), 2: (4.5, 45.0, 45, 450), 3: (21.0, 40.0, 210, 400)}

    async def body() -> None:
        clock = FakeClock()
        async with ModbusSimulator(clock=clock) as sim, connect(sim) as client:
            assert sim.port != 0
            for unit, (temp, hum, temp_x10, hum_x10) in expected.items():
                ir = ok(await client.read_input_registers(0, count=4, device_id=unit)).registers
                assert f32_abcd(ir[0:2]) == temp
                assert f32_abcd(ir[2:4]) == hum
                hr = ok(await client.read_holding_registers(100, count=4, device_id=unit))
                assert hr.registers[0:2] == [temp_x10, hum_x10]
                assert hr.registers[2:4] == [ir[1], ir[0]]  # CDAB: the words swapped
                assert f32_cdab(hr.registers[2:4]) == temp
                di = ok(await client.read_discrete_inputs(0, count=1, device_id=unit))
                assert di.bits[0] is False

            clock.now += 70_000.5  # more than 16 bits of seconds
            uptime = ok(await client.read_holding_registers(200, count=2, device_id=1)).registers
            assert uptime == [70_000 >> 16, 70_000 & 0xFFFF]

    run(body)


def test_negative_temperature_is_int16_twos_complement() -> None:
    async def body() -> None:
        async with ModbusSimulator(clock=FakeClock()) as sim, connect(sim) as client:
            sim.set_value(2, "temperature", -18.34)
            hr = ok(await client.read_holding_registers(100, count=4, device_id=2)).registers
            assert hr[0] == 0x10000 - 183
            assert int16(hr[0]) == -183
            assert f32_cdab(hr[2:4]) == pytest.approx(-18.34, abs=1e-5)
            assert await read_temperature(client, 2) == pytest.approx(-18.34, abs=1e-5)

    run(body)


def _decode(row: RegisterRow, words: Sequence[int]) -> float:
    decoders: dict[str, Callable[[Sequence[int]], float]] = {
        "float32_abcd": f32_abcd,
        "float32_cdab": f32_cdab,
        "int16": lambda w: int16(w[0]),
        "uint16": lambda w: w[0],
        "uint32": lambda w: (w[0] << 16) | w[1],
    }
    return decoders[row["type"]](words) * row["scale"]


def test_register_map_rows_describe_what_is_on_the_wire() -> None:
    async def body() -> None:
        clock = FakeClock()
        async with ModbusSimulator(clock=clock) as sim, connect(sim) as client:
            rows = sim.register_map()
            assert len(rows) == 15 * len(DEFAULT_SENSORS)
            assert {r["sensor"] for r in rows} == {"cold-room-1", "cold-room-2", "ambient-1"}
            sim.set_value(2, "temperature", -3.21)
            sim.set_value(2, "door_open", 1)
            ok(await client.write_coil(6, True, device_id=2))
            clock.now += 1234.5  # humidity of unit 2 keeps drifting
            for row in (r for r in rows if r["unit_id"] == 2):
                table, address, point = row["table"], row["address"], row["point"]
                if table in ("coil", "discrete"):
                    read = client.read_coils if table == "coil" else client.read_discrete_inputs
                    got = float(ok(await read(address, count=1, device_id=2)).bits[0])
                else:
                    read = (
                        client.read_input_registers
                        if table == "input"
                        else client.read_holding_registers
                    )
                    width = 1 if row["type"] in ("int16", "uint16") else 2
                    words = ok(await read(address, count=width, device_id=2)).registers
                    got = _decode(row, words)
                if point == "uptime":
                    want = 1234.0
                elif point.startswith("output_"):
                    want = float(sim.coil(2, int(point.removeprefix("output_"))))
                else:
                    want = sim.value(2, point)
                tolerance = 0.05 if row["scale"] == 0.1 else 1e-4
                assert got == pytest.approx(want, abs=tolerance), row

    run(body)


# ------------------------------------------------------------------------------- values


def test_drift_is_bounded_deterministic_and_moves() -> None:
    clocks = [FakeClock() for _ in range(3)]
    same_a, same_b, other = (
        ModbusSimulator(seed=seed, clock=clock)
        for seed, clock in zip((7, 7, 8), clocks, strict=True)
    )
    still = ModbusSimulator([SensorSpec(1, "still", drift=False)], clock=clocks[0])
    temps: list[float] = []
    differs = False
    for _ in range(300):  # about three hours in 37 s strides
        for clock in clocks:
            clock.now += 37.0
        for point, base, bound in (("temperature", 5.0, 0.3), ("humidity", 45.0, 1.5)):
            a = same_a.value(1, point)
            assert a == same_b.value(1, point)
            assert abs(a - base) <= bound + 1e-9
            differs |= a != other.value(1, point)
        temps.append(same_a.value(1, "temperature"))
        assert still.value(1, "temperature") == 5.0
    assert differs
    assert max(temps) - min(temps) > 0.1


def test_ramp_runs_on_the_real_clock_then_holds() -> None:
    async def body() -> None:
        sensors = [SensorSpec(1, "ramp", drift=False)]
        async with ModbusSimulator(sensors) as sim, connect(sim) as client:
            sim.set_value(1, "temperature", 10.0)
            sim.ramp(1, "temperature", to=20.0, seconds=0.2)
            await asyncio.sleep(0.1)
            middle = await read_temperature(client, 1)
            assert 10.0 < middle < 20.0
            await asyncio.sleep(0.15)
            assert await read_temperature(client, 1) == 20.0
            hr = ok(await client.read_holding_registers(100, count=1, device_id=1))
            assert hr.registers == [200]

    run(body)


def test_ramp_is_linear_from_the_current_value() -> None:
    clock = FakeClock()
    sim = ModbusSimulator([SensorSpec(1, "ramp")], clock=clock)
    sim.set_value(1, "humidity", 40.0)
    sim.ramp(1, "humidity", to=60.0, seconds=100.0)
    clock.now += 25.0
    assert sim.value(1, "humidity") == pytest.approx(45.0)
    clock.now += 75.0
    assert sim.value(1, "humidity") == 60.0
    clock.now += 1000.0
    assert sim.value(1, "humidity") == 60.0


def test_excursion_returns_to_the_previous_behaviour() -> None:
    async def body() -> None:
        clock = FakeClock()
        twin = ModbusSimulator(clock=clock)  # same seed, no excursion
        async with ModbusSimulator(clock=clock) as sim, connect(sim) as client:
            clock.now += 100.0
            sim.excursion(1, "temperature", 12.0, seconds=30.0)
            clock.now += 10.0
            assert await read_temperature(client, 1) == 12.0
            assert twin.value(1, "temperature") != 12.0
            clock.now += 21.0
            drifting = twin.value(1, "temperature")
            assert await read_temperature(client, 1) == pytest.approx(drifting, abs=1e-5)

            sim.set_value(2, "temperature", 3.0)
            sim.excursion(2, "temperature", 8.0, seconds=5.0)
            assert await read_temperature(client, 2) == 8.0
            clock.now += 5.0
            assert await read_temperature(client, 2) == 3.0

    run(body)


def test_freeze_holds_the_current_value_and_resume_drifts_again() -> None:
    async def body() -> None:
        clock = FakeClock()
        twin = ModbusSimulator(clock=clock)
        async with ModbusSimulator(clock=clock) as sim, connect(sim) as client:
            clock.now += 100.0
            sim.freeze(1, "temperature")
            frozen = sim.value(1, "temperature")
            clock.now += 600.0
            assert sim.value(1, "temperature") == frozen
            assert await read_temperature(client, 1) == pytest.approx(frozen, abs=1e-5)
            assert twin.value(1, "temperature") != frozen
            sim.resume(1, "temperature")
            assert sim.value(1, "temperature") == twin.value(1, "temperature")

    run(body)


# ------------------------------------------------------------------------------- faults


@pytest.mark.parametrize("code", [2, 4, 11])
def test_exception_fault_answers_every_request_with_the_code(code: int) -> None:
    async def body() -> None:
        async with ModbusSimulator(clock=FakeClock()) as sim, connect(sim) as client:
            sim.set_fault(2, "exception", exception_code=code)
            requests: list[Request] = [
                lambda: client.read_input_registers(0, count=2, device_id=2),
                lambda: client.read_holding_registers(100, count=1, device_id=2),
                lambda: client.write_coil(0, True, device_id=2),
                lambda: client.read_input_registers(50, count=1, device_id=2),
            ]
            for request in requests:
                response = await request()
                assert response.isError()
                assert response.exception_code == code
            assert await read_temperature(client, 1) == 5.0
            sim.set_fault(2, None)
            assert await read_temperature(client, 2) == 4.5

    run(body)


def test_no_answer_times_out_while_other_units_answer_on_the_same_connection() -> None:
    async def body() -> None:
        async with (
            ModbusSimulator(clock=FakeClock()) as sim,
            connect(sim, timeout_secs=SHORT_TIMEOUT_SECS) as client,
        ):
            sim.set_fault(2, "no_answer")
            with pytest.raises(ModbusIOException):
                await client.read_input_registers(0, count=2, device_id=2)
            assert sim.requests_served == 0
            assert client.connected
            assert await read_temperature(client, 1) == 5.0
            assert await read_temperature(client, 3) == 21.0
            sim.set_fault(2, None)
            assert await read_temperature(client, 2) == 4.5

    run(body)


def test_drop_connection_closes_the_tcp_connection() -> None:
    async def body() -> None:
        async with ModbusSimulator(clock=FakeClock()) as sim:
            sim.set_fault(2, "drop_connection")
            lost = asyncio.Event()
            async with connect(
                sim, timeout_secs=SHORT_TIMEOUT_SECS, on_connect=on_disconnect(lost)
            ) as client:
                assert await read_temperature(client, 1) == 5.0
                with pytest.raises(ModbusIOException):
                    await client.read_input_registers(0, count=2, device_id=2)
                await asyncio.wait_for(lost.wait(), TIMEOUT_SECS)
                assert not client.connected

            # On a raw socket: unit 1 gets an answer, unit 2 gets end-of-stream.
            def frame(unit: int) -> bytes:  # MBAP + read input registers 0..1
                return struct.pack(">HHHBBHH", 1, 0, 6, unit, 4, 0, 2)

            reader, writer = await asyncio.open_connection(sim.host, sim.port)
            try:
                writer.write(frame(1))
                answer = await asyncio.wait_for(reader.readexactly(13), TIMEOUT_SECS)
                assert answer[6:9] == bytes([1, 4, 4])
                writer.write(frame(2))
                assert await asyncio.wait_for(reader.read(), TIMEOUT_SECS) == b""
            finally:
                writer.close()
                await writer.wait_closed()

    run(body)


def test_unmapped_addresses_answer_illegal_data_address() -> None:
    async def body() -> None:
        async with ModbusSimulator(clock=FakeClock()) as sim, connect(sim) as client:
            c = client
            valid: list[Request] = [
                lambda: c.read_input_registers(0, count=4),
                lambda: c.read_holding_registers(100, count=4),
                lambda: c.read_holding_registers(200, count=2),
                lambda: c.read_discrete_inputs(0, count=1),
                lambda: c.read_coils(0, count=8),
                lambda: c.write_coils(0, [True] * 8),
            ]
            for request in valid:
                ok(await request())
            illegal: list[Request] = [
                lambda: c.read_input_registers(4, count=1),
                lambda: c.read_input_registers(3, count=2),
                lambda: c.read_input_registers(0, count=5),
                lambda: c.read_holding_registers(0, count=1),
                lambda: c.read_holding_registers(99, count=1),
                lambda: c.read_holding_registers(104, count=1),
                lambda: c.read_holding_registers(150, count=1),
                lambda: c.read_holding_registers(199, count=2),
                lambda: c.read_holding_registers(202, count=1),
                lambda: c.read_discrete_inputs(1, count=1),
                lambda: c.read_discrete_inputs(0, count=2),
                lambda: c.read_coils(8, count=1),
                lambda: c.read_coils(4, count=5),
                lambda: c.write_coil(8, True),
                lambda: c.write_coils(6, [True, True, True]),
                lambda: c.write_register(100, 1),
                lambda: c.write_registers(200, [1, 2]),
            ]
            for request in illegal:
                response = await request()
                assert response.isError(), response
                assert response.exception_code == 2, response

    run(body)


def test_unit_without_a_sensor_answers_gateway_target_failed() -> None:
    async def body() -> None:
        async with ModbusSimulator(clock=FakeClock()) as sim, connect(sim) as client:
            response = await client.read_input_registers(0, count=2, device_id=9)
            assert response.isError()
            assert response.exception_code == 11

    run(body)


# ------------------------------------------------------------------------------- coils, counter


def test_coils_read_back_what_was_written() -> None:
    async def body() -> None:
        async with ModbusSimulator(clock=FakeClock()) as sim, connect(sim) as client:
            ok(await client.write_coil(3, True, device_id=1))
            ok(await client.write_coils(5, [True, False, True], device_id=1))
            bits = ok(await client.read_coils(0, count=8, device_id=1)).bits[:8]
            assert bits == [False, False, False, True, False, True, False, True]
            assert [sim.coil(1, i) for i in range(8)] == bits
            assert not any(ok(await client.read_coils(0, count=8, device_id=2)).bits)
            ok(await client.write_coil(3, False, device_id=1))
            assert sim.coil(1, 3) is False
            assert ok(await client.read_coils(3, count=1, device_id=1)).bits[0] is False

    run(body)


def test_requests_served_counts_every_answer() -> None:
    async def body() -> None:
        async with ModbusSimulator(clock=FakeClock()) as sim, connect(sim) as client:
            assert sim.requests_served == 0
            ok(await client.read_input_registers(0, count=4, device_id=1))
            ok(await client.read_holding_registers(100, count=4, device_id=2))
            ok(await client.write_coil(0, True, device_id=3))
            assert sim.requests_served == 3
            assert (await client.read_input_registers(9, count=1, device_id=1)).isError()
            assert sim.requests_served == 4

    run(body)


# ------------------------------------------------------------------------------- lifecycle


def test_exit_closes_client_connections_and_the_listener() -> None:
    async def body() -> None:
        lost = asyncio.Event()
        async with ModbusSimulator(clock=FakeClock()) as sim:
            client = AsyncModbusTcpClient(
                sim.host,
                port=sim.port,
                timeout=TIMEOUT_SECS,
                retries=0,
                reconnect_delay=0,
                trace_connect=on_disconnect(lost),
            )
            assert await client.connect()
        try:
            await asyncio.wait_for(lost.wait(), TIMEOUT_SECS)
            assert not client.connected
        finally:
            client.close()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(sim.host, sim.port)

    run(body)


def test_a_port_in_use_is_an_os_error() -> None:
    async def body() -> None:
        async with ModbusSimulator(clock=FakeClock()) as sim:
            with pytest.raises(OSError, match="cannot listen"):
                async with ModbusSimulator(port=sim.port):
                    pass

    run(body)


def test_run_forever_prints_the_map_and_serves_until_cancelled() -> None:
    async def body() -> None:
        lines: list[str] = []
        printed = asyncio.Event()

        def collect(text: str) -> None:
            lines.append(text)
            if len(lines) == 2:
                printed.set()

        task = asyncio.create_task(run_forever("127.0.0.1", 0, print_fn=collect))
        await asyncio.wait_for(printed.wait(), TIMEOUT_SECS)
        match = re.fullmatch(r"Modbus TCP simulator listening on 127\.0\.0\.1:(\d+)", lines[0])
        assert match, lines[0]
        port = int(match.group(1))
        table = lines[1].splitlines()
        assert table[0].split() == [
            "unit_id", "sensor", "point", "table", "address", "type", "byte_order", "word_order",
            "scale", "unit",
        ]  # fmt: skip
        assert table[1].split()[:8] == [
            "1", "cold-room-1", "temperature", "input", "0", "float32", "big", "big"
        ]  # fmt: skip
        assert len(table) == 1 + 15 * len(DEFAULT_SENSORS)

        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=TIMEOUT_SECS, retries=0)
        assert await client.connect()
        try:
            assert await read_temperature(client, 3) == pytest.approx(21.0, abs=0.3)
        finally:
            client.close()

        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)

    run(body)


def test_bad_configuration_and_scripting_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"1\.\.247"):
        SensorSpec(0, "zero")
    with pytest.raises(ValueError, match=r"1\.\.247"):
        SensorSpec(248, "too-high")
    with pytest.raises(ValueError, match="duplicate"):
        ModbusSimulator([SensorSpec(1, "a"), SensorSpec(1, "b")])
    sim = ModbusSimulator()
    with pytest.raises(ValueError, match="unknown point"):
        sim.set_value(1, "pressure", 1.0)
    with pytest.raises(ValueError, match="no sensor with unit id 9"):
        sim.freeze(9, "temperature")
    with pytest.raises(ValueError, match="unknown fault"):
        sim.set_fault(1, "garbage")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        sim.set_value(1, "temperature", float("nan"))
