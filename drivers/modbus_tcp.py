"""Modbus TCP source: executes a device's request plan with pymodbus.

pymodbus's own reconnect loop and retries are switched off: the agent owns reconnection (with
capped, jittered backoff) so that "offline" and "online" are decided in one place and audited.
pymodbus errors are translated here, once, into :mod:`drivers.base` errors.
"""

from __future__ import annotations

import logging
from types import TracebackType

from pymodbus import ModbusException
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import ExceptionResponse

from .base import DeviceUnreachable, Sample, utc_now
from .modbus_model import DecodeError, ModbusTcpDevice, ReadRequest, decode

__all__ = ["MODBUS_EXCEPTIONS", "ModbusTcpSource"]

log = logging.getLogger(__name__)

MODBUS_EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ModbusTcpSource:
    """A polled source for one Modbus TCP device. Not safe for concurrent ``read()`` calls."""

    def __init__(self, device_id: str, config: ModbusTcpDevice) -> None:
        self.device_id = device_id
        self.config = config
        self.poll_interval_secs = config.poll_interval_secs
        self.plan: tuple[ReadRequest, ...] = config.plan()
        self._client: AsyncModbusTcpClient | None = None

    async def __aenter__(self) -> ModbusTcpSource:
        self._client = AsyncModbusTcpClient(
            self.config.host,
            port=self.config.port,
            timeout=self.config.timeout_ms / 1000,
            retries=0,
            reconnect_delay=0,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def describe(self) -> list[str]:
        cfg = self.config
        lines = [
            f"modbus_tcp {cfg.host}:{cfg.port} unit {cfg.unit_id}, {len(self.plan)} request(s)"
        ]
        for req in self.plan:
            names = ", ".join(name for name, _ in req.points)
            lines.append(f"  {req.table} {req.start}..{req.start + req.count - 1}: {names}")
        return lines

    async def read(self) -> list[Sample]:
        client = self._client
        if client is None:
            raise RuntimeError("ModbusTcpSource used outside its context")
        if not client.connected:
            try:
                connected = await client.connect()
            except (ModbusException, OSError) as exc:
                connected, error = False, self._describe_failure(exc)
            else:
                error = "connection failed"
            if not connected:
                bad = [s for request in self.plan for s in _bad(request, error)]
                raise DeviceUnreachable(self.device_id, error, bad)
        samples: list[Sample] = []
        for index, request in enumerate(self.plan):
            try:
                samples.extend(await self._execute(client, request))
            except (TimeoutError, ModbusException, OSError) as exc:
                client.close()
                error = self._describe_failure(exc)
                samples.extend(s for rest in self.plan[index:] for s in _bad(rest, error))
                raise DeviceUnreachable(self.device_id, error, samples) from exc
        return samples

    def _describe_failure(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError | ModbusIOException):
            return f"no response within {self.config.timeout_ms} ms"
        if isinstance(exc, ConnectionException | OSError):
            return f"connection to {self.config.host}:{self.config.port} failed or dropped"
        return str(exc) or type(exc).__name__

    async def _execute(self, client: AsyncModbusTcpClient, request: ReadRequest) -> list[Sample]:
        start, count, unit = request.start, request.count, self.config.unit_id
        if request.table == "holding":
            response = await client.read_holding_registers(start, count=count, device_id=unit)
        elif request.table == "input":
            response = await client.read_input_registers(start, count=count, device_id=unit)
        elif request.table == "coil":
            response = await client.read_coils(start, count=count, device_id=unit)
        else:
            response = await client.read_discrete_inputs(start, count=count, device_id=unit)
        if response.isError():
            code = response.exception_code if isinstance(response, ExceptionResponse) else None
            reason = MODBUS_EXCEPTIONS.get(code or 0, "unknown")
            return _bad(request, f"Modbus exception {code} ({reason})")
        words = response.bits if request.table in ("coil", "discrete") else response.registers
        at = utc_now()
        samples = []
        for name, point in request.points:
            first = point.address - request.start
            try:
                value = decode(point, words[first : first + point.width])
            except DecodeError as exc:
                samples.append(Sample(name, None, point.unit, "bad", at, data={"error": str(exc)}))
                continue
            samples.append(Sample(name, value, point.unit, "good", at))
        return samples


def _bad(request: ReadRequest, error: str) -> list[Sample]:
    at = utc_now()
    return [
        Sample(name, None, p.unit, "bad", at, data={"error": error}) for name, p in request.points
    ]
