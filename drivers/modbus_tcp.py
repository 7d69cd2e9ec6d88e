"""Modbus TCP source: executes a device's request plan with pymodbus.

pymodbus's own reconnect loop and retries are switched off: the agent owns reconnection (with
capped, jittered backoff) so that "offline" and "online" are decided in one place and audited.
pymodbus errors are translated here, once, into :mod:`gxpgate.drivers.base` errors.
"""

from __future__ import annotations

import logging
from types import TracebackType

from pymodbus import ModbusException
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from gxpgate.drivers.base import DeviceEvent, DeviceUnreachable, Sample
from gxpgate.drivers.modbus_common import LearningPlan, MalformedAnswer, bad_samples
from gxpgate.drivers.modbus_model import ModbusTcpDevice

__all__ = ["ModbusTcpSource"]

log = logging.getLogger(__name__)


class ModbusTcpSource:
    """A polled source for one Modbus TCP device. Not safe for concurrent ``read()`` calls."""

    def __init__(self, device_id: str, config: ModbusTcpDevice) -> None:
        self.device_id = device_id
        self.config = config
        self.poll_interval_secs = config.poll_interval_secs
        self.plan = LearningPlan(config.plan())
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
            f"modbus_tcp {cfg.host}:{cfg.port} unit {cfg.unit_id}, "
            f"{len(self.plan.requests)} request(s)"
        ]
        for req in self.plan.requests:
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
                bad = [s for request in self.plan.requests for s in bad_samples(request, error)]
                raise DeviceUnreachable(self.device_id, error, bad)
        samples: list[Sample] = []
        plan = self.plan.requests  # as it stands: executing a request may split it
        for index, request in enumerate(plan):
            try:
                samples.extend(await self.plan.execute(client, request, self.config.unit_id))
            except MalformedAnswer as exc:
                # The device answers, so it is not offline; but the stream may be out of step
                # (a frame too long or too short): start the next poll on a fresh connection.
                client.close()
                samples.extend(s for rest in plan[index:] for s in bad_samples(rest, str(exc)))
                return samples
            except (TimeoutError, ModbusException, OSError) as exc:
                client.close()
                error = self._describe_failure(exc)
                samples.extend(s for rest in plan[index:] for s in bad_samples(rest, error))
                raise DeviceUnreachable(self.device_id, error, samples) from exc
        return samples

    def drain_events(self) -> list[DeviceEvent]:
        """Blocks of the plan that the device refused and that were split (once each)."""
        return self.plan.drain_events()

    def _describe_failure(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError | ModbusIOException):
            return f"no response within {self.config.timeout_ms} ms"
        if isinstance(exc, ConnectionException | OSError):
            return f"connection to {self.config.host}:{self.config.port} failed or dropped"
        return str(exc) or type(exc).__name__
