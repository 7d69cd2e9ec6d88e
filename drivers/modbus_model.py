"""Modbus device configuration, compiled at load into a request plan, and register decoding.

Nothing here does I/O or imports pymodbus: ``gxpgate config validate`` runs this code, and the
Modbus TCP and RTU drivers only execute the plan it produces.

The plan reads all of a device's points in the fewest requests: points of one table are sorted
by address and merged greedily into blocks while the block stays within the per-request limit
(125 registers, 2000 bits, or the device's lower ``max_registers_per_request``) and the hole
between two points is at most ``max_gap`` addresses. Reading a few unused registers costs
almost nothing next to a round trip (about 0.5 ms on loopback, far more on a serial bus).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from gxpgate.drivers.record_model import PointRecording, RecordingOptions
from gxpgate.drivers.serial_model import SerialLine, char_time_secs
from gxpgate.drivers.units import Unit

if TYPE_CHECKING:
    from gxpgate.drivers.base import BuildContext
    from gxpgate.drivers.modbus_rtu import ModbusRtuSource
    from gxpgate.drivers.modbus_tcp import ModbusTcpSource

__all__ = [
    "DataType",
    "ModbusPoint",
    "ModbusRtuBus",
    "ModbusRtuDevice",
    "ModbusTcpDevice",
    "ReadRequest",
    "Table",
    "compile_plan",
    "decode",
]

Table = Literal["holding", "input", "coil", "discrete"]
DataType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "bool"]
Order = Literal["big", "little"]

BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete"})
_WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4, "bool": 1}
_STRUCT = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "float32": ">f",
    "float64": ">d",
}
MAX_REGISTERS = 125
MAX_BITS = 2000

Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]


class ModbusPoint(PointRecording):
    """One measurement point of a Modbus device."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: Table
    """Register table: ``holding`` (FC3), ``input`` (FC4), ``coil`` (FC1), ``discrete`` (FC2)."""
    address: int = Field(ge=0, le=65535)
    """Zero-based address of the first register or bit (protocol address, not 4xxxx notation)."""
    type: DataType | None = None
    """Data type; required for registers, ``bool`` (the default) for coils and discrete inputs."""
    byte_order: Order = "big"
    """Byte order inside each 16-bit register (``little`` swaps the two bytes)."""
    word_order: Order = "big"
    """Register order of 32/64-bit values (``little``: least significant register first)."""
    scale: float = 1.0
    """Engineering value = raw × scale + offset + calibration_offset."""
    offset: float = 0.0
    calibration_offset: float = 0.0
    """Correction from the sensor's calibration certificate, in engineering units."""
    unit: Unit = "1"
    """UCUM unit code of the engineering value: ``Cel``, ``%``, ``hPa``, ``1``."""
    monitored: bool = True
    """``false``: no rule watches this point, deliberately (a door contact nobody alarms on).
    Otherwise a point in a zone whose profile has rules must be watched by one, or ``gxpgate
    config validate`` says which point is unmonitored and why."""
    zone: str | None = None
    """Zone of this point when it differs from the device's zone."""

    @model_validator(mode="after")
    def _type_fits_table(self) -> ModbusPoint:
        if self.table in BIT_TABLES:
            if self.type not in (None, "bool"):
                raise ValueError(f"a {self.table} is a single bit: type must be 'bool'")
        elif self.type in (None, "bool"):
            types = "int16, uint16, int32, uint32, float32 or float64"
            raise ValueError(f"{self.table} registers need a type: {types}")
        if self.address + self.width > 65536:
            raise ValueError(f"address {self.address} + {self.width} registers exceeds 65535")
        return self

    @property
    def width(self) -> int:
        return _WIDTH[self.type or "bool"]


class _ModbusDevice(RecordingOptions):
    """What Modbus TCP and RTU devices share: zone, timing and the points the plan reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    zone: str
    """Zone the device's points are in, unless a point names its own."""
    poll_interval_secs: float = Field(default=10.0, gt=0, le=86400)
    timeout_ms: int = Field(default=1000, ge=10, le=60000)
    """How long to wait for each answer before the device counts as unreachable."""
    reconnect_max_secs: float = Field(default=60.0, gt=0, le=3600)
    """Cap of the jittered exponential backoff between reconnect attempts."""
    max_gap: int = Field(default=8, ge=0, le=124)
    """Largest run of unused addresses the request plan reads through to save a request."""
    max_registers_per_request: int = Field(default=MAX_REGISTERS, ge=1, le=MAX_REGISTERS)
    """Lower this for devices that reject the protocol maximum of 125."""
    points: dict[Identifier, ModbusPoint] = Field(min_length=1)
    """Measurement points by name (the record's ``point``)."""

    def plan(self) -> tuple[ReadRequest, ...]:
        return compile_plan(self.points, self.max_gap, self.max_registers_per_request)

    @property
    def report_interval_secs(self) -> float:
        """How often the device reports: every poll."""
        return self.poll_interval_secs

    @property
    def changes_only(self) -> bool:
        """Polled: silence is a communication loss."""
        return False


class ModbusTcpDevice(_ModbusDevice):
    """A Modbus TCP device (or a TCP gateway in front of serial slaves)."""

    type: Literal["modbus_tcp"]
    host: str
    """Host name or IP address of the device."""
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)
    """Modbus unit (slave) id."""

    def build(self, device_id: str, ctx: BuildContext) -> ModbusTcpSource:
        from gxpgate.drivers.modbus_tcp import (
            ModbusTcpSource,  # pymodbus is imported only where it is used
        )

        return ModbusTcpSource(device_id, self)


class ModbusRtuDevice(_ModbusDevice):
    """A Modbus RTU slave on a serial bus (``[buses.NAME]``) that it shares with others.

    ``timeout_ms`` is this slave's own: a silent slave costs the bus at most that long per
    attempt, and is then retried on its own backoff while the other slaves are polled.
    """

    type: Literal["modbus_rtu"]
    bus: str
    """Name of the serial bus (a ``[buses.NAME]`` table) the slave is wired to."""
    unit_id: int = Field(ge=1, le=247)
    """Modbus slave address on the bus, 1..247."""
    timeout_ms: int = Field(default=300, ge=10, le=60000)
    """How long to wait for this slave's answer before it counts as unreachable."""

    def build(self, device_id: str, ctx: BuildContext) -> ModbusRtuSource:
        """The slave's source, on the bus its line's other slaves share (``ctx.rtu_buses``)."""
        from gxpgate.drivers.modbus_rtu import (  # pymodbus only where it is used
            ModbusRtuSource,
            RtuBus,
        )

        bus = ctx.rtu_buses.get(self.bus)
        if bus is None:
            bus = ctx.rtu_buses[self.bus] = RtuBus(self.bus, ctx.buses[self.bus])
        return ModbusRtuSource(device_id, self, bus)


class ModbusRtuBus(SerialLine):
    """One RS-485 (or RS-232) line with Modbus RTU slaves: requests on it are serialised."""

    inter_frame_delay_ms: float | None = Field(default=None, ge=0, le=1000)
    """Silence kept between frames. Default: 3.5 character times, at least 1.75 ms (the
    Modbus over serial line specification's value above 19200 baud)."""

    @property
    def inter_frame_delay_secs(self) -> float:
        if self.inter_frame_delay_ms is not None:
            return self.inter_frame_delay_ms / 1000
        return max(3.5 * char_time_secs(self), 0.00175)


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One Modbus read covering ``count`` addresses from ``start``, and the points inside it."""

    table: Table
    start: int
    count: int
    points: tuple[tuple[str, ModbusPoint], ...]


def compile_plan(
    points: dict[str, ModbusPoint], max_gap: int = 8, max_registers: int = MAX_REGISTERS
) -> tuple[ReadRequest, ...]:
    """Merge the points into the fewest read requests (see the module docstring)."""
    requests: list[ReadRequest] = []
    for table in ("holding", "input", "coil", "discrete"):
        limit = MAX_BITS if table in BIT_TABLES else max_registers
        members = sorted(
            ((name, p) for name, p in points.items() if p.table == table),
            key=lambda item: (item[1].address, item[0]),
        )
        block: list[tuple[str, ModbusPoint]] = []
        start = end = 0
        for name, point in members:
            p_end = point.address + point.width
            if block and point.address - end <= max_gap and max(end, p_end) - start <= limit:
                block.append((name, point))
                end = max(end, p_end)
                continue
            if block:
                requests.append(ReadRequest(table, start, end - start, tuple(block)))
            block, start, end = [(name, point)], point.address, p_end
        if block:
            requests.append(ReadRequest(table, start, end - start, tuple(block)))
    return tuple(requests)


class DecodeError(ValueError):
    """The raw value cannot be a measurement (NaN or infinite float)."""


def decode(point: ModbusPoint, words: Sequence[int]) -> float:
    """Engineering value of ``point`` from its registers (or bit), scaled and calibrated."""
    if point.table in BIT_TABLES:
        raw: float = 1.0 if words[0] else 0.0
    else:
        regs = list(words)
        if point.word_order == "little":
            regs.reverse()
        data = b"".join(int(w).to_bytes(2, "big") for w in regs)
        if point.byte_order == "little":
            data = bytes(b for i in range(0, len(data), 2) for b in (data[i + 1], data[i]))
        raw = struct.unpack(_STRUCT[point.type or "uint16"], data)[0]
        if not math.isfinite(raw):
            raise DecodeError(f"raw value is {raw}, not a number")
    return raw * point.scale + point.offset + point.calibration_offset
