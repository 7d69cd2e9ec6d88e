"""Writing one Modbus coil of a TCP device (the alarm outputs' siren or beacon).

The only place outside the polling drivers that speaks Modbus, so the agent never imports
pymodbus itself. Every failure is a :class:`~gxpgate.drivers.base.DriverError` naming the device.
"""

from __future__ import annotations

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from gxpgate.drivers.base import DeviceUnreachable, DriverError
from gxpgate.drivers.modbus_model import ModbusTcpDevice

__all__ = ["CoilWriter"]


class CoilWriter:
    """Writes coils of one device through one connection, reconnecting when it has dropped."""

    def __init__(self, device_id: str, device: ModbusTcpDevice, unit_id: int) -> None:
        self.device_id = device_id
        self.device = device
        self.unit_id = unit_id
        self._client: AsyncModbusTcpClient | None = None

    async def write(self, address: int, value: bool) -> None:
        """Raises :class:`DeviceUnreachable` when there is no connection, :class:`DriverError`
        when the device refuses or the exchange fails."""
        dev = self.device
        try:
            if self._client is None or not self._client.connected:
                self.close()
                self._client = AsyncModbusTcpClient(
                    dev.host, port=dev.port, timeout=dev.timeout_ms / 1000, retries=0
                )
                if not await self._client.connect():
                    raise DeviceUnreachable(
                        self.device_id, f"cannot connect to {dev.host}:{dev.port}"
                    )
            response = await self._client.write_coil(address, value, device_id=self.unit_id)
        except (ModbusException, OSError, TimeoutError) as exc:
            self.close()
            raise DriverError(self.device_id, f"{type(exc).__name__}: {exc}") from exc
        if response.isError():
            raise DriverError(self.device_id, f"device answered {response}")

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
