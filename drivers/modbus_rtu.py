"""Modbus RTU: several slaves on one serial line, polled so that one bad slave cannot stall the
rest.

A :class:`RtuBus` owns the serial port and one pymodbus client; every slave on the line is its
own :class:`ModbusRtuSource` (its own device, zone, poll interval, offline/online audit and
backoff, all run by the agent like any polled source). Requests on a bus are serialised by a
FIFO lock, so slaves take turns in the order they asked. Each request waits at most the
*slave's* ``timeout_ms`` (pymodbus has one timeout per client, so the bus sets it per request
under the lock), and after every frame the bus keeps the line quiet for the inter-frame delay.
A silent slave therefore costs the bus one timeout per attempt, and the agent's backoff spaces
its attempts out while the other slaves keep their poll rate.

A timeout is the slave's failure, not the bus's: the port stays open. An error of the port
itself (USB adapter unplugged) closes the client, fails every slave that asks, and the next
request reopens it.
"""

from __future__ import annotations

import asyncio
import logging
import termios
from types import TracebackType

from pymodbus import FramerType, ModbusException
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from gxpgate.drivers.base import DeviceEvent, DeviceUnreachable, Sample
from gxpgate.drivers.modbus_common import LearningPlan, MalformedAnswer, bad_samples
from gxpgate.drivers.modbus_model import ModbusRtuBus, ModbusRtuDevice
from gxpgate.drivers.serial_model import PARITY_CODES

__all__ = ["ModbusRtuSource", "RtuBus"]

log = logging.getLogger(__name__)


class RtuBus:
    """One serial line shared by Modbus RTU slaves. Entered once per slave source; the port is
    opened on first use and closed when the last source leaves. Safe for concurrent
    :meth:`read` calls from several sources on one event loop (that is its purpose)."""

    def __init__(self, name: str, config: ModbusRtuBus) -> None:
        self.name = name
        self.config = config
        self.requests = 0
        self._lock = asyncio.Lock()
        self._users = 0
        self._client: AsyncModbusSerialClient | None = None

    async def __aenter__(self) -> RtuBus:
        if self._users == 0:
            cfg = self.config
            self._client = AsyncModbusSerialClient(
                cfg.port,
                framer=FramerType.RTU,
                baudrate=cfg.baudrate,
                bytesize=cfg.data_bits,
                parity=PARITY_CODES[cfg.parity],
                stopbits=cfg.stop_bits,
                retries=0,
                reconnect_delay=0,
            )
        self._users += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._users -= 1
        if self._users == 0 and self._client is not None:
            self._client.close()
            self._client = None

    async def read(
        self, device_id: str, unit: int, learning: LearningPlan, timeout_secs: float
    ) -> list[Sample]:
        """Execute the ``learning`` plan on slave ``unit``; raise :class:`DeviceUnreachable`
        (with a sample per point) when the slave or the port does not answer."""
        client = self._client
        if client is None:
            raise RuntimeError("RtuBus used outside its context")
        samples: list[Sample] = []
        plan = learning.requests  # as it stands: executing a request may split it
        async with self._lock:
            if not client.connected:
                error = await self._open(client)
                if error is not None:
                    bad = [s for request in plan for s in bad_samples(request, error)]
                    raise DeviceUnreachable(device_id, error, bad)
            # pymodbus copies its parameters into the transaction manager, which is what waits.
            client.ctx.comm_params.timeout_connect = timeout_secs
            for index, request in enumerate(plan):
                try:
                    samples.extend(await learning.execute(client, request, unit, self._quiet))
                except MalformedAnswer as exc:
                    # The bus stays open for the other slaves; RTU frames are delimited by
                    # silence, so the next request starts in step.
                    samples.extend(bad_samples(request, str(exc)))
                except (TimeoutError, ModbusException, OSError) as exc:
                    error = self._failure(exc, unit, timeout_secs)
                    if not isinstance(exc, TimeoutError | ModbusIOException):
                        client.close()
                    samples.extend(s for rest in plan[index:] for s in bad_samples(rest, error))
                    raise DeviceUnreachable(device_id, error, samples) from exc
                finally:
                    await self._quiet()
        return samples

    async def _quiet(self) -> None:
        """After a frame: count it, and keep the line silent for the inter-frame delay."""
        self.requests += 1
        # A late answer from a slow slave must not be taken for the next slave's.
        await asyncio.sleep(self.config.inter_frame_delay_secs)

    async def _open(self, client: AsyncModbusSerialClient) -> str | None:
        try:
            if await client.connect():
                return None
        except (ModbusException, OSError) as exc:
            return f"serial port {self.config.port} cannot be opened: {exc}"
        except termios.error as exc:  # pyserial lets the tty driver's refusal through as is
            client.close()
            cfg = self.config
            return (
                f"serial port {cfg.port} refuses {cfg.baudrate} baud, {cfg.data_bits} data bits, "
                f"parity {cfg.parity}, {cfg.stop_bits} stop bit(s): {exc.args[-1]}"
            )
        return f"serial port {self.config.port} cannot be opened"

    def _failure(self, exc: BaseException, unit: int, timeout_secs: float) -> str:
        if isinstance(exc, TimeoutError | ModbusIOException):
            return f"slave {unit} on {self.name}: no response within {timeout_secs * 1000:.0f} ms"
        if isinstance(exc, ConnectionException | OSError):
            return f"serial port {self.config.port} failed: {exc}"
        return str(exc) or type(exc).__name__


class ModbusRtuSource:
    """A polled source for one slave on an :class:`RtuBus`."""

    def __init__(self, device_id: str, config: ModbusRtuDevice, bus: RtuBus) -> None:
        self.device_id = device_id
        self.config = config
        self.bus = bus
        self.poll_interval_secs = config.poll_interval_secs
        self.plan = LearningPlan(config.plan())

    async def __aenter__(self) -> ModbusRtuSource:
        await self.bus.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.bus.__aexit__(exc_type, exc, tb)

    def describe(self) -> list[str]:
        line = self.bus.config
        lines = [
            f"modbus_rtu bus {self.bus.name} ({line.port} {line.baudrate} baud, parity "
            f"{line.parity}) slave {self.config.unit_id}, {len(self.plan.requests)} request(s)"
        ]
        for req in self.plan.requests:
            names = ", ".join(name for name, _ in req.points)
            lines.append(f"  {req.table} {req.start}..{req.start + req.count - 1}: {names}")
        return lines

    def drain_events(self) -> list[DeviceEvent]:
        """Blocks of the plan that the slave refused and that were split (once each)."""
        return self.plan.drain_events()

    async def read(self) -> list[Sample]:
        return await self.bus.read(
            self.device_id, self.config.unit_id, self.plan, self.config.timeout_ms / 1000
        )
