"""What the Modbus TCP and RTU drivers share: executing one planned read and naming exceptions.

The request plan (:mod:`drivers.modbus_model`) is transport-neutral; this module runs one of its
requests on a connected pymodbus client and decodes the answer into samples. A Modbus exception
response is an answer: it becomes ``bad`` samples with the exception named, never a raise.

An answer that does not fit its request (another function code, fewer registers or bits than
asked for: a rogue or broken server) raises :class:`MalformedAnswer` instead of decoding
garbage or crashing in ``struct``; the transport drivers turn it into ``bad`` samples.
"""

from __future__ import annotations

from pymodbus.client.base import ModbusBaseClient
from pymodbus.pdu import ExceptionResponse

from .base import Sample, utc_now
from .modbus_model import DecodeError, ReadRequest, decode

__all__ = ["MODBUS_EXCEPTIONS", "MalformedAnswer", "bad_samples", "execute_read"]

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


async def execute_read(client: ModbusBaseClient, request: ReadRequest, unit: int) -> list[Sample]:
    """Run one planned read on ``unit``; pymodbus's own exceptions propagate to the caller,
    which knows the transport and translates them."""
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
        reason = MODBUS_EXCEPTIONS.get(code or 0, "unknown")
        return bad_samples(request, f"Modbus exception {code} ({reason})")
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
    return samples


def bad_samples(request: ReadRequest, error: str) -> list[Sample]:
    """One ``bad`` sample per point of ``request``, carrying ``error``."""
    at = utc_now()
    return [
        Sample(name, None, p.unit, "bad", at, data={"error": error}) for name, p in request.points
    ]
