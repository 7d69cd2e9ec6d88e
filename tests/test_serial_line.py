"""The virtual serial line, over real ptys: both ends are opened by path, as pyserial would.

Each end is a non-blocking fd read through ``loop.add_reader``, on the loop that runs the
line's bridge. Pacing is checked as a lower bound only (a loaded machine may be slower, never
faster than the wire).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import serial

from gxpgate.simulators.serial_line import VirtualSerialLine

TIMEOUT_SECS = 2.0


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run one async test body; fail if it leaves a task behind."""

    async def main() -> None:
        await test()
        leftover = asyncio.all_tasks() - {asyncio.current_task()}
        assert not leftover, f"tasks left behind: {leftover}"

    asyncio.run(main())


class End:
    """One end of the cable, opened by path like a serial port."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)

    def write(self, data: bytes) -> None:
        assert os.write(self.fd, data) == len(data)

    async def read(self, count: int, timeout_secs: float = TIMEOUT_SECS) -> bytes:
        """Exactly ``count`` bytes, or TimeoutError."""
        loop = asyncio.get_running_loop()
        received = bytearray()
        done: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            received.extend(os.read(self.fd, count - len(received)))
            if len(received) == count and not done.done():
                done.set_result(None)

        loop.add_reader(self.fd, readable)
        try:
            await asyncio.wait_for(done, timeout_secs)
        finally:
            loop.remove_reader(self.fd)
        return bytes(received)

    def close(self) -> None:
        os.close(self.fd)


async def eventually(condition: Callable[[], bool], timeout_secs: float = TIMEOUT_SECS) -> None:
    """Wait until ``condition()`` holds (the bridge runs on this loop), or fail."""
    deadline = time.monotonic() + timeout_secs
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# ------------------------------------------------------------------------------- tests


def test_bytes_go_both_ways_and_are_counted() -> None:
    async def body() -> None:
        async with VirtualSerialLine() as line:
            gateway, device = End(line.device_path), End(line.peer_path)
            try:
                gateway.write(b"\x01\x04\x00\x00\x00\x02\x71\xcb")
                assert await device.read(8) == b"\x01\x04\x00\x00\x00\x02\x71\xcb"
                raw = bytes(range(256))  # every byte value, CR, LF and ^C included
                device.write(raw)
                assert await gateway.read(256) == raw
                assert (line.bytes_to_device, line.bytes_to_gateway) == (8, 256)
            finally:
                gateway.close()
                device.close()

    run(body)


def test_pyserial_opens_both_ends() -> None:
    async def body() -> None:
        async with VirtualSerialLine(baudrate=19200) as line:
            gateway = serial.Serial(line.device_path, 19200, parity="E", timeout=0)
            device = serial.Serial(line.peer_path, 19200, parity="E", timeout=0)
            try:
                gateway.write(b"ping")
                await eventually(lambda: device.in_waiting == 4)
                assert device.read(4) == b"ping"
            finally:
                gateway.close()
                device.close()

    run(body)


def test_pacing_makes_bytes_take_the_line_time() -> None:
    async def body() -> None:
        count, baudrate = 480, 9600
        async with VirtualSerialLine(baudrate=baudrate) as line:
            assert line.char_time_secs == pytest.approx(10 / 9600)
            gateway, device = End(line.device_path), End(line.peer_path)
            try:
                started = time.monotonic()
                gateway.write(bytes(count))
                await device.read(count)
                assert time.monotonic() - started >= count * 10 / baudrate  # 0.5 s

                started = time.monotonic()
                device.write(bytes(24))  # a second chunk queues behind the first
                device.write(bytes(24))
                await gateway.read(48)
                assert time.monotonic() - started >= 48 * 10 / baudrate
            finally:
                gateway.close()
                device.close()

    run(body)


def test_parity_adds_a_bit_per_character() -> None:
    async def body() -> None:
        count, baudrate = 120, 1200
        async with VirtualSerialLine(baudrate=baudrate, bits_per_char=11) as line:
            gateway, device = End(line.device_path), End(line.peer_path)
            try:
                started = time.monotonic()
                gateway.write(bytes(count))
                await device.read(count)
                assert time.monotonic() - started >= count * 11 / baudrate  # 1.1 s
            finally:
                gateway.close()
                device.close()

    run(body)


@pytest.mark.parametrize("baudrate", [None, 9600])
def test_unplugged_line_discards_both_ways_and_plug_restores_it(baudrate: int | None) -> None:
    async def body() -> None:
        async with VirtualSerialLine(baudrate=baudrate) as line:
            gateway, device = End(line.device_path), End(line.peer_path)
            try:
                line.unplug()
                assert not line.plugged
                gateway.write(b"lost")
                device.write(b"gone!")
                await eventually(lambda: line.bytes_discarded == 9)
                line.plug()
                gateway.write(b"kept")
                device.write(b"back")
                assert await device.read(4) == b"kept"
                assert await gateway.read(4) == b"back"
                assert (line.bytes_to_device, line.bytes_to_gateway) == (4, 4)
            finally:
                gateway.close()
                device.close()

    run(body)


def test_unplugging_loses_bytes_in_flight() -> None:
    async def body() -> None:
        async with VirtualSerialLine(baudrate=300) as line:  # 100 bytes take 3.3 s
            gateway, device = End(line.device_path), End(line.peer_path)
            try:
                gateway.write(bytes(100))
                await eventually(lambda: _in_flight(line) == 100)
                line.unplug()
                assert line.bytes_discarded == 100
                line.plug()
                gateway.write(b"x")  # 33 ms on the wire, nothing queued before it
                assert await device.read(1) == b"x"
                assert line.bytes_to_device == 1
            finally:
                gateway.close()
                device.close()

    run(body)


def _in_flight(line: VirtualSerialLine) -> int:
    direction = line._to_device
    assert direction is not None
    return sum(len(chunk) for _, chunk in direction._in_flight)


def test_the_line_survives_the_gateway_closing_and_reopening_its_port() -> None:
    async def body() -> None:
        async with VirtualSerialLine() as line:
            device = End(line.peer_path)
            try:
                for _ in range(3):
                    gateway = End(line.device_path)
                    try:
                        gateway.write(b"hello")
                        assert await device.read(5) == b"hello"
                        device.write(b"world")
                        assert await gateway.read(5) == b"world"
                    finally:
                        gateway.close()
            finally:
                device.close()

    run(body)


def test_exit_closes_every_fd_and_reader() -> None:
    async def body() -> None:
        before = open_fds()
        line = VirtualSerialLine(baudrate=300)
        with pytest.raises(RuntimeError, match="not open"):
            _ = line.device_path
        async with line:
            assert line.device_path != line.peer_path
            masters = [line._to_device._source, line._to_gateway._source]  # type: ignore[union-attr]
            gateway = End(line.device_path)
            gateway.write(bytes(50))  # still in flight at exit: its timer must go too
            await eventually(lambda: _in_flight(line) == 50)
            gateway.close()
        assert open_fds() == before
        loop = asyncio.get_running_loop()
        assert not any(loop.remove_reader(fd) for fd in masters)
        with pytest.raises(RuntimeError, match="not open"):
            _ = line.peer_path

    run(body)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="positive"):
        VirtualSerialLine(baudrate=0)
    with pytest.raises(ValueError, match="bits_per_char"):
        VirtualSerialLine(9600, bits_per_char=20)
