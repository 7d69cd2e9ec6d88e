"""Modbus TCP simulator of warehouse temperature/humidity sensors, on pymodbus's own server.

It stands for a Modbus TCP gateway in front of an RS-485 line of sensors: one TCP listener, one
Modbus unit id per sensor. Tests run it in-process (``async with ModbusSimulator() as sim``);
``gxpgate simulate modbus`` runs it standalone through :func:`run_forever`.

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
holding values are read-only. A unit id with no sensor gets exception 11 (gateway target
device failed to respond), which is what a TCP-to-RS-485 gateway answers.

Values. Nothing runs in the background: every read computes the value from the clock at that
moment. A drifting point is its base value plus a bounded random walk (±0.3 °C, ±1.5 %RH, one
step every 5 s, linear between steps) seeded from ``(seed, unit id, point)``, so the same seed
and the same elapsed time give the same value. Scripting (:meth:`ModbusSimulator.set_value`,
``ramp``, ``excursion``, ``freeze``, ``resume``) replaces a point's behaviour; an excursion
wraps the behaviour it interrupts and hands back to it, still running on wall-clock time.

How it sits on pymodbus 3.16. Devices are ``SimDevice``/``SimData`` (3.16 deprecates
``ModbusDeviceContext``/``ModbusServerContext`` and no longer calls a custom context's
``getValues``). Each device's ``action`` hook, which pymodbus awaits on every access, renders
the model into the register image just before pymodbus answers from it, and records coil
writes. Faults live in one override, ``ServerRequestHandler.handle_request``, installed via
``ModbusTcpServer.callback_new_connection`` (the transport's per-connection factory). Only
the per-connection handler can close its own connection, so ``drop_connection`` has to live
there. ``no_answer`` and ``exception`` go there too, so that all three faults sit together
and apply to every request to the unit. Two other ways were possible: the action can only
return members of ``ExcCodes``, and only after pymodbus has validated the address; and
``ignore_missing_devices`` would reuse a flag that is meant for unknown ids. The handler also
rejects coil and discrete-input requests past the map, because pymodbus keeps bits in 16-bit
words and its action sees word counts, not bit counts. No TCP front is needed. Responses are
counted with the server's ``trace_pdu`` hook.

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
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, TypedDict, cast

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from .behaviour import ScriptedPoints

__all__ = [
    "DEFAULT_SENSORS",
    "Fault",
    "ModbusSimulator",
    "RegisterRow",
    "SensorSpec",
    "format_register_map",
    "run_forever",
]

Fault = Literal["exception", "no_answer", "drop_connection"]
COIL_COUNT = 8

_FAULTS: frozenset[str] = frozenset({"exception", "no_answer", "drop_connection"})
# point -> (bound of the walk around the base, standard deviation of one step)
_CLOSE_TIMEOUT_SECS = 2.0

# Function codes by table, as pymodbus's SimRuntime maps them.
_FC_COIL = frozenset({1, 5, 15})
_FC_DISCRETE = frozenset({2})
_FC_HOLDING = frozenset({3, 6, 16, 22, 23})
_FC_INPUT = frozenset({4})
_BITS_IN_MAP = {1: COIL_COUNT, 5: COIL_COUNT, 15: COIL_COUNT, 2: 1}

_HOLDING_START = 100
_UPTIME_ADDRESS = 200


@dataclass
class SensorSpec:
    """One simulated sensor: a Modbus unit id on the simulator's TCP listener."""

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


# --------------------------------------------------------------------------- pymodbus server


class _Verdict(enum.Enum):
    SERVE = enum.auto()
    NO_ANSWER = enum.auto()
    DROP = enum.auto()


_Screen = Callable[[ModbusPDU], "_Verdict | int"]
"""Decides a request's fate: serve it, ignore it, drop the connection, or an exception code."""


@dataclass(frozen=True)
class _FaultState:
    kind: Fault
    exception_code: int


class _RequestHandler(ServerRequestHandler):
    """One client connection: screens each request before pymodbus serves it."""

    def __init__(self, server: _Server) -> None:
        super().__init__(server, server.trace_packet, server.trace_pdu, server.trace_connect)
        self._server = server
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.socket_transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.socket_transport = cast(asyncio.Transport, transport)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._server.handlers.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)

    async def handle_request(self) -> None:
        request = self.last_pdu
        if request is None:
            return
        verdict = self._server.screen(request)
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


class _Server(ModbusTcpServer):
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
        handler = _RequestHandler(self)
        self.handlers.add(handler)
        return handler


# --------------------------------------------------------------------------- public API


class ModbusSimulator:
    """Modbus TCP simulator; an async context manager that listens while entered.

    ``port=0`` picks a free port; :attr:`port` holds the bound one once entered. ``clock``
    (seconds, monotonic) drives drift, scripting and uptime; tests may pass a fake one.
    """

    def __init__(
        self,
        sensors: Sequence[SensorSpec] = DEFAULT_SENSORS,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        ids = [s.unit_id for s in sensors]
        if not ids:
            raise ValueError("the simulator needs at least one sensor")
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate unit ids in {ids}")
        self.host = host
        self.port = port
        self.requests_served = 0
        self._clock = clock
        self._units = {s.unit_id: _Unit(dataclasses.replace(s), seed, clock) for s in sensors}
        self._faults: dict[int, _FaultState] = {}
        self._server: _Server | None = None

    async def __aenter__(self) -> ModbusSimulator:
        if self._server is not None:
            raise RuntimeError("the Modbus simulator is already running")
        server = _Server(
            [unit.device() for unit in self._units.values()],
            (self.host, self.port),
            self._screen,
            self._trace_pdu,
        )
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
                [h.closed for h in handlers], timeout=_CLOSE_TIMEOUT_SECS
            )
            for handler in handlers:
                if handler.closed in pending and handler.socket_transport is not None:
                    handler.socket_transport.abort()

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

    # ----------------------------------------------------------------------- faults

    def set_fault(self, unit_id: int, fault: Fault | None, exception_code: int = 4) -> None:
        """Make every request to ``unit_id`` fail in one way; ``None`` clears the fault.

        ``exception``: a Modbus exception response with ``exception_code`` (2 illegal data
        address, 4 device failure, 11 gateway target failed to respond, ...). ``no_answer``:
        no response at all; other units keep answering on the same connection.
        ``drop_connection``: the server closes the TCP connection the request came on.
        """
        self._unit(unit_id)
        if fault is None:
            self._faults.pop(unit_id, None)
            return
        if fault not in _FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {sorted(_FAULTS)}")
        if not 1 <= exception_code <= 255:
            raise ValueError(f"exception_code {exception_code} is not in 1..255")
        self._faults[unit_id] = _FaultState(fault, exception_code)

    # ----------------------------------------------------------------------- internals

    def _unit(self, unit_id: int) -> _Unit:
        try:
            return self._units[unit_id]
        except KeyError:
            raise ValueError(
                f"no sensor with unit id {unit_id}; have {sorted(self._units)}"
            ) from None

    def _screen(self, request: ModbusPDU) -> _Verdict | int:
        if request.dev_id not in self._units:
            return ExcCodes.GATEWAY_NO_RESPONSE
        fault = self._faults.get(request.dev_id)
        if fault is not None:
            if fault.kind == "no_answer":
                return _Verdict.NO_ANSWER
            if fault.kind == "drop_connection":
                return _Verdict.DROP
            return fault.exception_code
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


def format_register_map(rows: Sequence[RegisterRow]) -> str:
    """The register map as a plain-text table with aligned columns."""
    columns = ("unit_id", "sensor", "table", "address", "type", "scale", "unit", "point")
    cells = [[str(row[c]) for c in columns] for row in rows]  # type: ignore[literal-required]
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
) -> None:
    """Serve the simulator until cancelled, after printing where it listens and its map."""
    async with ModbusSimulator(sensors, host=host, port=port) as sim:
        print_fn(f"Modbus TCP simulator listening on {sim.host}:{sim.port}")
        print_fn(format_register_map(sim.register_map()))
        await asyncio.Event().wait()
