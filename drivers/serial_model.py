"""Serial line settings shared by every device that hangs off a serial port.

Nothing here opens a port: ``gxpgate config validate`` runs this code. Each driver that uses a
serial port (Modbus RTU bus, data logger, serial scanner) embeds :class:`SerialLine` and opens it
with pyserial itself.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["PARITY_CODES", "Parity", "SerialLine", "char_time_secs"]

Parity = Literal["none", "even", "odd"]
PARITY_CODES: dict[str, str] = {"none": "N", "even": "E", "odd": "O"}


class SerialLine(BaseModel):
    """A serial port and its framing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    port: str = Field(min_length=1)
    """Device path, e.g. ``/dev/ttyUSB0`` or a stable ``/dev/serial/by-id/...`` link."""
    baudrate: int = Field(default=19200, ge=300, le=4_000_000)
    data_bits: Literal[7, 8] = 8
    parity: Parity = "none"
    """``none``, ``even`` or ``odd`` (Modbus RTU's default is ``even``)."""
    stop_bits: Literal[1, 2] = 1

    @property
    def bits_per_char(self) -> int:
        return 1 + self.data_bits + (0 if self.parity == "none" else 1) + self.stop_bits


def char_time_secs(line: SerialLine) -> float:
    """Time on the wire of one character."""
    return line.bits_per_char / line.baudrate
