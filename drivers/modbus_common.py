"""What the Modbus TCP and RTU drivers share: executing one planned read and naming exceptions.

The request plan (:mod:`gxpgate.drivers.modbus_model`) is transport-neutral; this module runs one of
its requests on a connected pymodbus client and decodes the answer into samples. A Modbus exception
response is an answer: it becomes ``bad`` samples with the exception named, never a raise.

An answer that does not fit its request (another function code, fewer registers or bits than
asked for: a rogue or broken server) raises :class:`MalformedAnswer` instead of decoding
garbage or crashing in ``struct``; the transport drivers turn it into ``bad`` samples.

Many devices refuse a read that spans an unmapped register with exception 2 (illegal data
address) or 3, although every point in it reads fine alone; the plan's ``max_gap`` merging then
costs those points for good. :class:`LearningPlan` splits such a refused block in halves, down
to single points, within the same poll, and keeps what worked as the device's plan for the life
of the source (so across reconnects), with one ``modbus_plan_split`` event per block. A block
refused down to every single point teaches nothing (the device refuses everything: a wrong unit
id or map); it is split again only every :data:`RESPLIT_EVERY` th time it is refused, so a
misconfigured device costs about one request per block per poll, not one per point, and a
device put right is still learnt within that many polls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pymodbus.client.base import ModbusBaseClient
from pymodbus.pdu import ExceptionResponse

from gxpgate.drivers.base import DeviceEvent, Sample, utc_now
from gxpgate.drivers.events import MODBUS_PLAN_SPLIT
from gxpgate.drivers.modbus_model import DecodeError, ModbusPoint, ReadRequest, Table, decode

__all__ = [
    "MODBUS_EXCEPTIONS",
    "RESPLIT_EVERY",
    "LearningPlan",
    "MalformedAnswer",
    "bad_samples",
    "execute_read",
]

_FUNCTION_CODES = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


class MalformedAnswer(Exception):
    """The device answered, but not to the request that was sent; the message says how."""


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


_REFUSALS = frozenset({2, 3})  # illegal data address, illegal data value
RESPLIT_EVERY = 10


class LearningPlan:
    """A device's request plan that learns which merged blocks the device refuses (see the
    module docstring). Belongs to one source; not safe for concurrent use."""

    def __init__(self, requests: tuple[ReadRequest, ...]) -> None:
        self.requests = requests
        self._events: list[DeviceEvent] = []
        self._refused_whole: dict[ReadRequest, int] = {}
        """Blocks refused down to every point → times refused since (as a whole)."""

    async def execute(
        self,
        client: ModbusBaseClient,
        request: ReadRequest,
        unit: int,
        pause: Callable[[], Awaitable[None]] | None = None,
    ) -> list[Sample]:
        """Run ``request`` (one of :attr:`requests`), splitting it when refused; pymodbus's
        exceptions and :class:`MalformedAnswer` propagate as from :func:`execute_read`.
        ``pause`` is awaited before each extra request of a split (a serial line's silence)."""
        samples, code = await _execute(client, request, unit)
        if code not in _REFUSALS or len(request.points) < 2:
            self._refused_whole.pop(request, None)
            return samples
        refused = self._refused_whole.get(request)
        if refused is not None and refused % RESPLIT_EVERY:
            self._refused_whole[request] = refused + 1
            return samples
        leaves: list[tuple[ReadRequest, bool]] = []
        samples = await self._split(client, request, unit, leaves, pause)
        if not any(answered for _, answered in leaves):
            self._refused_whole[request] = 1
            return samples
        self._refused_whole.pop(request, None)
        at = self.requests.index(request)
        parts = tuple(part for part, _ in leaves)
        self.requests = self.requests[:at] + parts + self.requests[at + 1 :]
        self._events.append(
            DeviceEvent(
                {
                    "event": MODBUS_PLAN_SPLIT,
                    "table": request.table,
                    "block": _span(request),
                    "into": [_span(part) for part in parts],
                    "error": _exception_error(code),
                }
            )
        )
        return samples

    async def _split(
        self,
        client: ModbusBaseClient,
        request: ReadRequest,
        unit: int,
        leaves: list[tuple[ReadRequest, bool]],
        pause: Callable[[], Awaitable[None]] | None,
    ) -> list[Sample]:
        middle = len(request.points) // 2
        samples: list[Sample] = []
        for points in (request.points[:middle], request.points[middle:]):
            part = _block(request.table, points)
            if pause is not None:
                await pause()
            got, code = await _execute(client, part, unit)
            if code in _REFUSALS and len(points) > 1:
                got = await self._split(client, part, unit, leaves, pause)
            else:
                leaves.append((part, code not in _REFUSALS))
            samples.extend(got)
        return samples

    def drain_events(self) -> list[DeviceEvent]:
        events, self._events = self._events, []
        return events


def _block(table: Table, points: tuple[tuple[str, ModbusPoint], ...]) -> ReadRequest:
    start = min(p.address for _, p in points)
    end = max(p.address + p.width for _, p in points)
    return ReadRequest(table, start, end - start, points)


def _span(request: ReadRequest) -> str:
    return f"{request.start}..{request.start + request.count - 1}"


def _exception_error(code: int | None) -> str:
    """The ``data.error`` of a Modbus exception response's readings."""
    return f"Modbus exception {code} ({MODBUS_EXCEPTIONS.get(code or 0, 'unknown')})"


async def execute_read(client: ModbusBaseClient, request: ReadRequest, unit: int) -> list[Sample]:
    """Run one planned read on ``unit``; pymodbus's own exceptions propagate to the caller,
    which knows the transport and translates them."""
    return (await _execute(client, request, unit))[0]


async def _execute(
    client: ModbusBaseClient, request: ReadRequest, unit: int
) -> tuple[list[Sample], int | None]:
    """The samples of one read, and the Modbus exception code when the device answered one."""
    start, count = request.start, request.count
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
        return bad_samples(request, _exception_error(code)), code
    expected = _FUNCTION_CODES[request.table]
    if response.function_code != expected:
        raise MalformedAnswer(
            f"malformed answer: function code {response.function_code} to a request with {expected}"
        )
    bits = request.table in ("coil", "discrete")
    words = response.bits if bits else response.registers
    if len(words) < request.count:
        raise MalformedAnswer(
            f"malformed answer: {len(words)} {'bits' if bits else 'registers'} "
            f"for a read of {request.count}"
        )
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
    return samples, None


def bad_samples(request: ReadRequest, error: str) -> list[Sample]:
    """One ``bad`` sample per point of ``request``, carrying ``error``."""
    at = utc_now()
    return [
        Sample(name, None, p.unit, "bad", at, data={"error": error}) for name, p in request.points
    ]
