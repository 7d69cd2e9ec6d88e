"""Modbus simulators of warehouse temperature/humidity sensors, TCP and RTU, on pymodbus's servers.

One Modbus unit id per sensor, two ways of reaching them:

- :class:`ModbusSimulator` stands for a Modbus TCP gateway in front of an RS-485 line of
  sensors: one TCP listener. ``gxpgate simulate modbus`` runs it through :func:`run_forever`.
- :class:`ModbusRtuSimulator` stands for the RS-485 line itself: every sensor is a slave on
  one serial line, which is a :class:`~gxpgate.simulators.serial_line.VirtualSerialLine` (two ptys
  and a bridge, paced at the line's baud rate). The gateway opens
  :attr:`ModbusRtuSimulator.device_path` with pyserial. ``gxpgate simulate modbus --rtu`` runs
  it through :func:`run_forever_rtu`.

Tests run either in-process (``async with ModbusSimulator() as sim``). Sensors, register map,
values, scripting and the faults common to both live in one base class, :class:`_SensorSet`;
the two classes add only their transport.

Register map (identical for every unit id; addresses are zero-based protocol addresses)::

    table     fc        address  type                          value
    input     4         0-1      float32 ABCD (big word/byte)  temperature, Cel
    input     4         2-3      float32 ABCD                  relative humidity, %
    holding   3         100      int16 (two's complement)      round(temperature × 10)
    holding   3         101      uint16                        round(humidity × 10)
    holding   3         102-103  float32 CDAB (little word)    temperature, Cel
    holding   3         200-201  uint32 big-endian             uptime, whole seconds
    discrete  2         0        bool                          door open (1 = open)
    coil      1, 5, 15  0-7      bool                          writable outputs (stack light)

Anything else is answered with exception 2 (illegal data address), as a real device would:
other addresses, a read that runs past a point, a write to a register, a coil past 7. The
holding values are read-only. A unit id with no sensor: over TCP it gets exception 11 (gateway
target device failed to respond), which is what a TCP-to-RS-485 gateway answers; on the RTU
line nobody answers, as on a real bus (broadcast, unit 0, is not supported and is silent too).

Values. Nothing runs in the background: every read computes the value from the clock at that
moment. A drifting point is its base value plus a bounded random walk (±0.3 °C, ±1.5 %RH, one
step every 5 s, linear between steps) seeded from ``(seed, unit id, point)``, so the same seed
and the same elapsed time give the same value. Scripting (``set_value``, ``ramp``,
``excursion``, ``freeze``, ``resume``) replaces a point's behaviour; an excursion wraps the
behaviour it interrupts and hands back to it, still running on wall-clock time.

Faults, per unit (``set_fault``). Both transports: ``exception`` (an exception response with a
chosen code) and ``no_answer`` (silence; the other units keep answering). TCP only:
``drop_connection`` (the server closes the connection the request came on). RTU only:
``bad_crc`` (the unit answers, with the two CRC bytes inverted, so the client discards the
frame and times out). Each simulator rejects the other's fault by name, saying why. On the RTU
line :meth:`ModbusRtuSimulator.unplug` and ``plug`` cut the whole line, as a pulled cable does.

How it sits on pymodbus 3.16. Devices are ``SimDevice``/``SimData`` (3.16 deprecates
``ModbusDeviceContext``/``ModbusServerContext`` and no longer calls a custom context's
``getValues``). Each device's ``action`` hook, which pymodbus awaits on every access, renders
the model into the register image just before pymodbus answers from it, and records coil
writes. Faults live in one override, ``ServerRequestHandler.handle_request``, installed via
the server's ``callback_new_connection`` (the transport's per-connection factory; a serial
server calls it once, when it opens the port). Only the per-connection handler can close its
own connection, so ``drop_connection`` has to live there. ``no_answer`` and ``exception`` go
there too, so that all the faults that decide whether to answer sit together and apply to
every request to the unit. Two other ways were possible: the action can only return members
of ``ExcCodes``, and only after pymodbus has validated the address; and
``ignore_missing_devices`` would reuse a flag that is meant for unknown ids. The handler also
rejects coil and discrete-input requests past the map, because pymodbus keeps bits in 16-bit
words and its action sees word counts, not bit counts. ``bad_crc`` is the one fault below the
PDU: the server's ``trace_packet`` hook, which sees every outgoing RTU frame, inverts the CRC
of frames from a faulty unit (the frame's first byte is its unit id). Responses, including
exception and bad-CRC ones, are counted with the server's ``trace_pdu`` hook.

The RTU side is pymodbus's own ``ModbusSerialServer`` (RTU framer) on the line's peer pty: a
pty is a tty, so pyserial opens and configures it like a USB adapter (the modem-control ioctls
that a pty refuses are ones pyserial already ignores), and pymodbus's serial transport watches
it with ``loop.add_reader``, no thread. The server opens the port when it starts listening
but only registers its reader on the next loop iteration, so entering the simulator waits for
the handler's ``connection_made`` (a handshake, not a sleep) before the gateway may talk.

Concurrency: everything runs on the event loop that entered the simulator. The scripting
methods are synchronous and must be called from that loop's thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import struct
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Literal, TypedDict, cast

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusBaseServer, ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from gxpgate.simulators.behaviour import ScriptedPoints
from gxpgate.simulators.script import Command, drive
from gxpgate.simulators.serial_line import VirtualSerialLine

__all__ = [
    "DEFAULT_SENSORS",
    "Fault",
    "ModbusRtuSimulator",
    "ModbusSimulator",
    "RegisterRow",
    "RtuFault",
    "SensorSpec",
    "format_register_map",
    "run_forever",
    "run_forever_rtu",
]

Fault = Literal["exception", "no_answer", "drop_connection"]
"""A fault of a unit behind the TCP simulator."""
RtuFault = Literal["exception", "no_answer", "bad_crc"]
"""A fault of a slave on the RTU line."""
COIL_COUNT = 8

_LIFECYCLE_TIMEOUT_SECS = 2.0  # a port opening, connections closing

# Function codes by table, as pymodbus's SimRuntime maps them.
_FC_COIL = frozenset({1, 5, 15})
_FC_DISCRETE = frozenset({2})
_FC_HOLDING = frozenset({3, 6, 16, 22, 23})
_FC_INPUT = frozenset({4})
_BITS_IN_MAP = {1: COIL_COUNT, 5: COIL_COUNT, 15: COIL_COUNT, 2: 1}

_HOLDING_START = 100
_UPTIME_ADDRESS = 200
_SCRIPT_FAULTS = {"exception": "exception", "silent": "no_answer", "drop": "drop_connection"}


@dataclass
class SensorSpec:
    """One simulated sensor: a Modbus unit id behind the TCP listener or on the RTU line."""

    unit_id: int
    """Modbus unit (slave) id, 1..247."""
    name: str
    """Sensor name, e.g. ``cold-room-1``."""
    temperature_c: float = 5.0
    """Base temperature in °C."""
    humidity_pct: float = 45.0
    """Base relative humidity in %."""
    drift: bool = True
    """Slow bounded random walk around the base values (deterministic for a given seed)."""

    def __post_init__(self) -> None:
        if not 1 <= self.unit_id <= 247:
            raise ValueError(f"sensor {self.name!r}: unit_id {self.unit_id} is not in 1..247")
        if not self.name:
            raise ValueError(f"sensor with unit_id {self.unit_id} has an empty name")


DEFAULT_SENSORS: list[SensorSpec] = [
    SensorSpec(1, "cold-room-1", temperature_c=5.0),
    SensorSpec(2, "cold-room-2", temperature_c=4.5),
    SensorSpec(3, "ambient-1", temperature_c=21.0, humidity_pct=40.0),
]


class RegisterRow(TypedDict):
    """One row of :meth:`ModbusSimulator.register_map`."""

    unit_id: int
    sensor: str
    table: Literal["input", "holding", "discrete", "coil"]
    address: int
    """First register or bit of the point."""
    type: Literal["float32_abcd", "float32_cdab", "int16", "uint16", "uint32", "bool"]
    scale: float
    """Engineering value = raw × scale."""
    unit: str
    """UCUM unit code of the engineering value."""
    point: str


# (table, address, type, scale, unit, point); coils are appended per address.
_MAP: tuple[tuple[str, int, str, float, str, str], ...] = (
    ("input", 0, "float32_abcd", 1.0, "Cel", "temperature"),
    ("input", 2, "float32_abcd", 1.0, "%", "humidity"),
    ("holding", 100, "int16", 0.1, "Cel", "temperature"),
    ("holding", 101, "uint16", 0.1, "%", "humidity"),
    ("holding", 102, "float32_cdab", 1.0, "Cel", "temperature"),
    ("holding", 200, "uint32", 1.0, "s", "uptime"),
    ("discrete", 0, "bool", 1.0, "1", "door_open"),
    *(("coil", i, "bool", 1.0, "1", f"output_{i}") for i in range(COIL_COUNT)),
)


# --------------------------------------------------------------------------- point behaviours


class _Unit(ScriptedPoints):
    """One sensor: its points' behaviours, its coils, and the pymodbus ``action`` hook."""

    def __init__(self, spec: SensorSpec, seed: int, clock: Callable[[], float]) -> None:
        self._t0 = clock()
        super().__init__(
            f"{seed}:{spec.unit_id}", spec.temperature_c, spec.humidity_pct, spec.drift, self._t0
        )
        self.spec = spec
        self.coils = [False] * COIL_COUNT
        self._clock = clock

    def device(self) -> SimDevice:
        """The pymodbus device: register layout from the map, contents from :meth:`action`."""
        return SimDevice(
            id=self.spec.unit_id,
            simdata=(
                [SimData(0, count=COIL_COUNT, values=False, datatype=DataType.BITS)],
                [SimData(0, values=False, datatype=DataType.BITS, readonly=True)],
                [
                    SimData(100, values=0, datatype=DataType.INT16, readonly=True),
                    SimData(101, values=0, datatype=DataType.UINT16, readonly=True),
                    SimData(102, values=0.0, datatype=DataType.FLOAT32, readonly=True),
                    SimData(200, values=0, datatype=DataType.UINT32, readonly=True),
                ],
                [SimData(0, count=2, values=0.0, datatype=DataType.FLOAT32, readonly=True)],
            ),
            action=self.action,
        )

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus hook, awaited on every access after its own address checks.

        Records coil writes, then renders the model at this instant into ``registers`` (the
        block being accessed, modified in place) so pymodbus answers from current values.
        """
        if set_values is not None and function_code in _FC_COIL:
            for i, bit in enumerate(set_values):
                if 0 <= address + i < COIL_COUNT:
                    self.coils[address + i] = bool(bit)
        now = self._clock()
        if function_code in _FC_INPUT:
            words = _float32(self.value("temperature", now)) + _float32(self.value("humidity", now))
            registers[0 - start_address : 4 - start_address] = words
        elif function_code in _FC_HOLDING:
            temperature = self.value("temperature", now)
            abcd = _float32(temperature)
            uptime = int(max(0.0, now - self._t0)) & 0xFFFFFFFF
            at = _HOLDING_START - start_address
            registers[at : at + 4] = [
                _clamp(round(temperature * 10), -32768, 32767) & 0xFFFF,
                _clamp(round(self.value("humidity", now) * 10), 0, 0xFFFF),
                abcd[1],
                abcd[0],
            ]
            at = _UPTIME_ADDRESS - start_address
            registers[at : at + 2] = [uptime >> 16, uptime & 0xFFFF]
        elif function_code in _FC_DISCRETE:
            registers[0 - start_address] = int(self.value("door_open", now) >= 0.5)
        elif function_code in _FC_COIL:
            registers[0 - start_address] = sum(1 << i for i, on in enumerate(self.coils) if on)
        return None


def _float32(value: float) -> list[int]:
    """float32 as two registers, ABCD (big word order, big byte order)."""
    high, low = struct.unpack(">HH", struct.pack(">f", value))
    return [high, low]


def _clamp(value: int, low: int, high: int) -> int:
    return min(high, max(low, value))


# --------------------------------------------------------------------------- pymodbus servers


class _Verdict(enum.Enum):
    SERVE = enum.auto()
    NO_ANSWER = enum.auto()
    DROP = enum.auto()


_Screen = Callable[[ModbusPDU], "_Verdict | int"]
"""Decides a request's fate: serve it, ignore it, drop the connection, or an exception code."""


@dataclass(frozen=True)
class _FaultState:
    kind: str
    exception_code: int


class _RequestHandler(ServerRequestHandler):
    """One TCP connection, or the serial port: screens each request before pymodbus serves it."""

    def __init__(
        self, server: ModbusBaseServer, screen: _Screen, handlers: set[_RequestHandler]
    ) -> None:
        super().__init__(server, server.trace_packet, server.trace_pdu, server.trace_connect)
        self._screen = screen
        self._handlers = handlers
        self.opened: asyncio.Future[None] = self.loop.create_future()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.io_transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.io_transport = cast(asyncio.Transport, transport)
        super().connection_made(transport)
        if not self.opened.done():
            self.opened.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._handlers.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)

    async def handle_request(self) -> None:
        request = self.last_pdu
        if request is None:
            return
        verdict = self._screen(request)
        if verdict is _Verdict.SERVE:
            await super().handle_request()
        elif verdict is _Verdict.DROP:
            self.close()
        elif isinstance(verdict, int):
            response = ExceptionResponse(
                request.function_code,
                verdict,
                device_id=request.dev_id,
                transaction=request.transaction_id,
            )
            self.server_send(response, self.last_addr)
        # _Verdict.NO_ANSWER: nothing is sent; the client times out.


class _TcpServer(ModbusTcpServer):
    """pymodbus TCP server whose connections are :class:`_RequestHandler`."""

    def __init__(
        self,
        devices: list[SimDevice],
        address: tuple[str, int],
        screen: _Screen,
        trace_pdu: Callable[[bool, ModbusPDU], ModbusPDU],
    ) -> None:
        super().__init__(devices, address=address, trace_pdu=trace_pdu)
        self.screen = screen
        self.handlers: set[_RequestHandler] = set()

    def callback_new_connection(self) -> _RequestHandler:
        handler = _RequestHandler(self, self.screen, self.handlers)
        self.handlers.add(handler)
        return handler


class _SerialServer(ModbusSerialServer):
    """pymodbus RTU server on a serial port, served by one :class:`_RequestHandler`."""

    def __init__(
        self,
        devices: list[SimDevice],
        port: str,
        baudrate: int,
        screen: _Screen,
        trace_packet: Callable[[bool, bytes], bytes],
        trace_pdu: Callable[[bool, ModbusPDU], ModbusPDU],
    ) -> None:
        super().__init__(
            devices,
            framer=FramerType.RTU,
            port=port,
            baudrate=baudrate,
            trace_packet=trace_packet,
            trace_pdu=trace_pdu,
        )
        self.screen = screen
        self.handlers: set[_RequestHandler] = set()

    def callback_new_connection(self) -> _RequestHandler:
        handler = _RequestHandler(self, self.screen, self.handlers)
        self.handlers.add(handler)
        return handler


# --------------------------------------------------------------------------- shared model


class _SensorSet:
    """What the TCP and RTU simulators share: sensors, register map, scripting, faults.

    Subclasses say which faults they accept, which faults of the other transport they refuse
    (and why), and what a request to a unit id with no sensor gets.
    """

    _FAULTS: ClassVar[frozenset[str]]
    _FOREIGN_FAULTS: ClassVar[dict[str, str]]
    _UNKNOWN_UNIT: ClassVar[_Verdict | int]

    def __init__(
        self, sensors: Sequence[SensorSpec], seed: int, clock: Callable[[], float]
    ) -> None:
        ids = [s.unit_id for s in sensors]
        if not ids:
            raise ValueError("the simulator needs at least one sensor")
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate unit ids in {ids}")
        self.requests_served = 0
        """Responses sent so far, exception and corrupted ones included."""
        self._clock = clock
        self._units = {s.unit_id: _Unit(dataclasses.replace(s), seed, clock) for s in sensors}
        self._faults: dict[int, _FaultState] = {}

    def register_map(self) -> list[RegisterRow]:
        """Every point of every unit, in the order of the module docstring's table."""
        return [
            RegisterRow(
                unit_id=unit.spec.unit_id,
                sensor=unit.spec.name,
                table=table,  # type: ignore[typeddict-item]
                address=address,
                type=kind,  # type: ignore[typeddict-item]
                scale=scale,
                unit=ucum,
                point=point,
            )
            for unit in self._units.values()
            for table, address, kind, scale, ucum, point in _MAP
        ]

    # ----------------------------------------------------------------------- scripting

    def value(self, unit_id: int, point: str) -> float:
        """The point's value now, as the next read would render it (before encoding)."""
        return self._unit(unit_id).value(point, self._clock())

    def coil(self, unit_id: int, address: int) -> bool:
        """What was last written to coil ``address`` (0..7) of the unit."""
        if not 0 <= address < COIL_COUNT:
            raise ValueError(f"coil address {address} is not in 0..{COIL_COUNT - 1}")
        return self._unit(unit_id).coils[address]

    def set_value(self, unit_id: int, point: str, value: float) -> None:
        """Hold ``value`` (no drift) until changed."""
        self._unit(unit_id).hold(point, value)

    def ramp(self, unit_id: int, point: str, to: float, seconds: float) -> None:
        """Go linearly from the current value to ``to`` over ``seconds``, then hold ``to``."""
        self._unit(unit_id).ramp(point, to, seconds, self._clock())

    def excursion(self, unit_id: int, point: str, value: float, seconds: float) -> None:
        """Jump to ``value`` for ``seconds``, then hand back to the behaviour it interrupted."""
        self._unit(unit_id).excursion(point, value, seconds, self._clock())

    def freeze(self, unit_id: int, point: str) -> None:
        """Stuck sensor: keep returning the current value."""
        self._unit(unit_id).freeze(point, self._clock())

    def resume(self, unit_id: int, point: str) -> None:
        """Back to the base value, drifting if the sensor drifts."""
        self._unit(unit_id).resume(point)

    # ----------------------------------------------------------------------- command language

    def sensor_names(self) -> dict[str, str]:
        """Every name a script may use for a sensor (its name, its unit id) -> its name."""
        names = {unit.spec.name: unit.spec.name for unit in self._units.values()}
        names.update({str(unit_id): unit.spec.name for unit_id, unit in self._units.items()})
        return names

    def apply(self, command: Command) -> None:
        """Carry out one command of :mod:`gxpgate.simulators.script`; ValueError when it cannot."""
        ids = [uid for uid, unit in self._units.items() if unit.spec.name in command.sensors]
        points = [command.point] if command.point else ["temperature", "humidity"]
        fault = _SCRIPT_FAULTS.get(command.verb)
        for unit_id in ids:
            for point in points:
                if command.verb == "set":
                    self.set_value(unit_id, point, command.values[0])
                elif command.verb == "ramp":
                    if len(command.values) == 2:
                        self.set_value(unit_id, point, command.values[0])
                    self.ramp(unit_id, point, command.values[-1], command.seconds or 0.0)
                elif command.verb == "excursion":
                    self.excursion(unit_id, point, command.values[0], command.seconds or 0.0)
                elif command.verb == "freeze":
                    self.freeze(unit_id, point)
                elif command.verb == "resume":
                    self.resume(unit_id, point)
            if command.verb == "ok":
                self._set_fault(unit_id, None, 4)
            elif fault is not None:
                self._set_fault(unit_id, fault, command.code)
                if command.seconds is not None:
                    state = self._faults[unit_id]
                    asyncio.get_running_loop().call_later(
                        command.seconds, self._clear_fault_if, unit_id, state
                    )

    def _clear_fault_if(self, unit_id: int, state: _FaultState) -> None:
        # A later command may have set another fault since; that one stays.
        if self._faults.get(unit_id) is state:
            del self._faults[unit_id]

    # ----------------------------------------------------------------------- internals

    def _set_fault(self, unit_id: int, fault: str | None, exception_code: int) -> None:
        self._unit(unit_id)
        if fault is None:
            self._faults.pop(unit_id, None)
            return
        if fault in self._FOREIGN_FAULTS:
            raise ValueError(self._FOREIGN_FAULTS[fault])
        if fault not in self._FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {sorted(self._FAULTS)}")
        if not 1 <= exception_code <= 255:
            raise ValueError(f"exception_code {exception_code} is not in 1..255")
        self._faults[unit_id] = _FaultState(fault, exception_code)

    def _unit(self, unit_id: int) -> _Unit:
        try:
            return self._units[unit_id]
        except KeyError:
            raise ValueError(
                f"no sensor with unit id {unit_id}; have {sorted(self._units)}"
            ) from None

    def _devices(self) -> list[SimDevice]:
        return [unit.device() for unit in self._units.values()]

    def _screen(self, request: ModbusPDU) -> _Verdict | int:
        if request.dev_id not in self._units:
            return self._UNKNOWN_UNIT
        fault = self._faults.get(request.dev_id)
        if fault is not None:
            if fault.kind == "no_answer":
                return _Verdict.NO_ANSWER
            if fault.kind == "drop_connection":
                return _Verdict.DROP
            if fault.kind == "exception":
                return fault.exception_code
            # bad_crc: served as usual; the frame is corrupted on its way out.
        bits = _BITS_IN_MAP.get(request.function_code)
        if bits is not None:
            count = 1 if request.function_code == 5 else request.count
            if request.address + count > bits:
                return ExcCodes.ILLEGAL_ADDRESS
        return _Verdict.SERVE

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending:
            self.requests_served += 1
        return pdu


# --------------------------------------------------------------------------- public API


class ModbusSimulator(_SensorSet):
    """Modbus TCP simulator; an async context manager that listens while entered.

    ``port=0`` picks a free port; :attr:`port` holds the bound one once entered. ``clock``
    (seconds, monotonic) drives drift, scripting and uptime; tests may pass a fake one.
    """

    _FAULTS = frozenset({"exception", "no_answer", "drop_connection"})
    _FOREIGN_FAULTS: ClassVar[dict[str, str]] = {
        "bad_crc": "bad_crc is an RTU fault: a Modbus TCP frame has no CRC",
    }
    _UNKNOWN_UNIT = ExcCodes.GATEWAY_NO_RESPONSE

    def __init__(
        self,
        sensors: Sequence[SensorSpec] = DEFAULT_SENSORS,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(sensors, seed, clock)
        self.host = host
        self.port = port
        self._server: _TcpServer | None = None

    async def __aenter__(self) -> ModbusSimulator:
        if self._server is not None:
            raise RuntimeError("the Modbus simulator is already running")
        server = _TcpServer(self._devices(), (self.host, self.port), self._screen, self._trace_pdu)
        try:
            await server.serve_forever(background=True)  # returns once listening
        except RuntimeError as exc:
            # pymodbus logs the OSError from bind() and raises this RuntimeError instead.
            raise OSError(
                f"Modbus simulator cannot listen on {self.host}:{self.port} "
                "(the reason is in pymodbus's log)"
            ) from exc
        listener = cast(asyncio.Server, server.transport)
        self.host, self.port = listener.sockets[0].getsockname()[:2]
        self._server = server
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        handlers = set(server.handlers)
        await server.shutdown()  # stops listening and closes every client connection
        if handlers:
            _, pending = await asyncio.wait(
                [h.closed for h in handlers], timeout=_LIFECYCLE_TIMEOUT_SECS
            )
            for handler in handlers:
                if handler.closed in pending and handler.io_transport is not None:
                    handler.io_transport.abort()

    def set_fault(self, unit_id: int, fault: Fault | None, exception_code: int = 4) -> None:
        """Make every request to ``unit_id`` fail in one way; ``None`` clears the fault.

        ``exception``: a Modbus exception response with ``exception_code`` (2 illegal data
        address, 4 device failure, 11 gateway target failed to respond, ...). ``no_answer``:
        no response at all; other units keep answering on the same connection.
        ``drop_connection``: the server closes the TCP connection the request came on.
        """
        self._set_fault(unit_id, fault, exception_code)


class ModbusRtuSimulator(_SensorSet):
    """Modbus RTU slaves on a virtual serial line; an async context manager.

    While entered, :attr:`device_path` is the pty the gateway opens (any baud rate, parity and
    stop bits: a pty ignores them, so a framing mismatch goes unnoticed, unlike on a real
    line). With ``pace`` the line carries bytes at ``baudrate`` with ``bits_per_char`` bits per
    character (10 for 8N1, 11 for 8E1, 8O1 or 8N2); without it, as fast as the ptys go.
    ``clock`` is as for :class:`ModbusSimulator`.
    """

    _FAULTS = frozenset({"exception", "no_answer", "bad_crc"})
    _FOREIGN_FAULTS: ClassVar[dict[str, str]] = {
        "drop_connection": (
            "drop_connection is a TCP fault: a serial line has no connection to drop; "
            "use no_answer for one slave, or unplug() for the whole line"
        ),
    }
    _UNKNOWN_UNIT = _Verdict.NO_ANSWER

    def __init__(
        self,
        sensors: Sequence[SensorSpec] = DEFAULT_SENSORS,
        seed: int = 1,
        *,
        baudrate: int = 19200,
        bits_per_char: int = 10,
        pace: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(sensors, seed, clock)
        self.baudrate = baudrate
        self.pace = pace
        self._line = VirtualSerialLine(baudrate if pace else None, bits_per_char=bits_per_char)
        self._stack: AsyncExitStack | None = None

    @property
    def device_path(self) -> str:
        """The pty the gateway opens with pyserial, e.g. ``/dev/pts/7``; set while entered."""
        return self._line.device_path

    @property
    def line(self) -> VirtualSerialLine:
        """The serial line (byte counters, pacing)."""
        return self._line

    def unplug(self) -> None:
        """Pull the cable: every slave falls silent, bytes in flight are lost."""
        self._line.unplug()

    def plug(self) -> None:
        """Put the cable back."""
        self._line.plug()

    async def __aenter__(self) -> ModbusRtuSimulator:
        if self._stack is not None:
            raise RuntimeError("the Modbus RTU simulator is already running")
        async with AsyncExitStack() as stack:
            line = await stack.enter_async_context(self._line)
            server = _SerialServer(
                self._devices(),
                line.peer_path,
                self.baudrate,
                self._screen,
                self._trace_packet,
                self._trace_pdu,
            )
            try:
                await server.serve_forever(background=True)  # returns once the port is open
            except RuntimeError as exc:
                # pymodbus logs the SerialException from opening and raises this instead.
                raise OSError(
                    f"Modbus RTU simulator cannot open {line.peer_path} "
                    "(the reason is in pymodbus's log)"
                ) from exc
            stack.push_async_callback(server.shutdown)  # closes the port, synchronously
            (handler,) = server.handlers
            await asyncio.wait_for(handler.opened, _LIFECYCLE_TIMEOUT_SECS)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    def set_fault(self, unit_id: int, fault: RtuFault | None, exception_code: int = 4) -> None:
        """Make every request to ``unit_id`` fail in one way; ``None`` clears the fault.

        ``exception``: a Modbus exception response with ``exception_code`` (2 illegal data
        address, 4 device failure, 6 device busy, ...). ``no_answer``: silence; the other
        slaves keep answering. ``bad_crc``: the slave answers as usual, but with the two CRC
        bytes inverted, so the client discards the frame and times out.
        """
        self._set_fault(unit_id, fault, exception_code)

    def _trace_packet(self, sending: bool, packet: bytes) -> bytes:
        if sending and len(packet) >= 4:
            fault = self._faults.get(packet[0])
            if fault is not None and fault.kind == "bad_crc":
                return packet[:-2] + bytes((packet[-2] ^ 0xFF, packet[-1] ^ 0xFF))
        return packet


# The simulator's type names -> the config's (type, byte_order, word_order).
_CONFIG_WORDS = {
    "float32_abcd": ("float32", "big", "big"),
    "float32_cdab": ("float32", "big", "little"),
    "int16": ("int16", "big", "big"),
    "uint16": ("uint16", "big", "big"),
    "uint32": ("uint32", "big", "big"),
    "bool": ("bool", "-", "-"),
}


def format_register_map(rows: Sequence[RegisterRow]) -> str:
    """The register map as a plain-text table with aligned columns, in the config's own words
    (``table``, ``address``, ``type``, ``byte_order``, ``word_order``, ``scale``, ``unit``), so
    that a technician can copy a row into a device's ``points``."""
    columns = ("unit_id", "sensor", "point", "table", "address", "type", "byte_order",
               "word_order", "scale", "unit")  # fmt: skip
    cells = []
    for row in rows:
        kind, byte_order, word_order = _CONFIG_WORDS[row["type"]]
        words = {**row, "type": kind, "byte_order": byte_order, "word_order": word_order}
        cells.append([str(words[c]) for c in columns])
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = [columns, *cells]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


async def run_forever(
    host: str,
    port: int,
    sensors: Sequence[SensorSpec] = DEFAULT_SENSORS,
    print_fn: Callable[[str], None] = print,
    script: Sequence[Command] = (),
    interactive: bool = False,
) -> None:
    """Serve the simulator until cancelled, after printing where it listens and its map; run
    ``script`` (and, when ``interactive``, the commands typed on stdin) meanwhile."""
    async with ModbusSimulator(sensors, host=host, port=port) as sim:
        print_fn(f"Modbus TCP simulator listening on {sim.host}:{sim.port}")
        print_fn(format_register_map(sim.register_map()))
        await drive(sim.apply, sim.sensor_names(), script, interactive, print_fn)


async def run_forever_rtu(
    sensors: Sequence[SensorSpec] = DEFAULT_SENSORS,
    baudrate: int = 19200,
    print_fn: Callable[[str], None] = print,
    *,
    pace: bool = True,
    script: Sequence[Command] = (),
    interactive: bool = False,
) -> None:
    """Serve the RTU simulator until cancelled, after printing the device path and its map.

    The first line is ``Modbus RTU simulator on <device path> at <baudrate> baud[, unpaced]``;
    the gateway (another process, as the same user) opens that path.
    """
    async with ModbusRtuSimulator(sensors, baudrate=baudrate, pace=pace) as sim:
        suffix = "" if pace else ", unpaced"
        print_fn(f"Modbus RTU simulator on {sim.device_path} at {baudrate} baud{suffix}")
        print_fn(format_register_map(sim.register_map()))
        await drive(sim.apply, sim.sensor_names(), script, interactive, print_fn)
