"""Modbus decoding of every data type and byte/word order, and the request plan."""

from __future__ import annotations

import struct

import pytest

from gxpgate.drivers.modbus_model import ModbusPoint, compile_plan, decode


def regs(fmt: str, value: float) -> list[int]:
    raw = struct.pack(fmt, value)
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def swap_bytes(words: list[int]) -> list[int]:
    return [((w & 0xFF) << 8) | (w >> 8) for w in words]


@pytest.mark.parametrize(
    ("type_", "fmt", "value"),
    [
        ("int16", ">h", -1234),
        ("uint16", ">H", 65000),
        ("int32", ">i", -2_000_000_000),
        ("uint32", ">I", 4_000_000_000),
        ("float32", ">f", -18.5),
        ("float64", ">d", 1234.5678901234),
    ],
)
@pytest.mark.parametrize(
    ("byte_order", "word_order"),
    [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")],
)
def test_decode_every_type_and_order(
    type_: str, fmt: str, value: float, byte_order: str, word_order: str
) -> None:
    words = regs(fmt, value)
    if word_order == "little":
        words = words[::-1]
    if byte_order == "little":
        words = swap_bytes(words)
    point = ModbusPoint(
        table="holding", address=0, type=type_, byte_order=byte_order, word_order=word_order
    )
    assert decode(point, words) == pytest.approx(value, rel=1e-7)


def test_known_register_arrays() -> None:
    # 21.5 as float32 is 0x41AC0000: ABCD, CDAB, BADC, DCBA.
    p = {
        o: ModbusPoint(table="input", address=0, type="float32", byte_order=o[0], word_order=o[1])
        for o in [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]
    }
    assert decode(p[("big", "big")], [0x41AC, 0x0000]) == 21.5
    assert decode(p[("big", "little")], [0x0000, 0x41AC]) == 21.5
    assert decode(p[("little", "big")], [0xAC41, 0x0000]) == 21.5
    assert decode(p[("little", "little")], [0x0000, 0xAC41]) == 21.5
    # int16 two's complement with scale and calibration: 0xFF38 = -200 → -20.0 °C, -0.3 → -20.3
    t = ModbusPoint(table="holding", address=0, type="int16", scale=0.1, calibration_offset=-0.3)
    assert decode(t, [0xFF38]) == pytest.approx(-20.3)
    u = ModbusPoint(table="holding", address=0, type="uint32", word_order="little")
    assert decode(u, [0x5678, 0x1234]) == 0x12345678


def test_decode_rejects_nan() -> None:
    point = ModbusPoint(table="input", address=0, type="float32")
    with pytest.raises(ValueError, match="not a number"):
        decode(point, [0x7FC0, 0x0000])


def test_bits() -> None:
    point = ModbusPoint(table="discrete", address=3)
    assert decode(point, [True]) == 1.0
    assert decode(point, [False]) == 0.0


def test_plan_merges_scattered_registers() -> None:
    P = ModbusPoint
    points = {
        "t1": P(table="holding", address=0, type="float32"),
        "t2": P(table="holding", address=4, type="int16"),  # gap of 2 → bridged
        "t3": P(table="holding", address=20, type="int16"),  # gap 15 > 8 → new request
        "t4": P(table="holding", address=21, type="uint32"),
        "far": P(table="holding", address=200, type="int16"),
        "ir": P(table="input", address=7, type="uint16"),
        "door": P(table="discrete", address=0),
        "door2": P(table="discrete", address=5),
        "coil": P(table="coil", address=3),
    }
    plan = compile_plan(points, max_gap=8)
    summary = [(r.table, r.start, r.count, [n for n, _ in r.points]) for r in plan]
    assert summary == [
        ("holding", 0, 5, ["t1", "t2"]),
        ("holding", 20, 3, ["t3", "t4"]),
        ("holding", 200, 1, ["far"]),
        ("input", 7, 1, ["ir"]),
        ("coil", 3, 1, ["coil"]),
        ("discrete", 0, 6, ["door", "door2"]),
    ]


def test_plan_respects_request_limit() -> None:
    points = {
        f"p{i}": ModbusPoint(table="input", address=i * 2, type="float32") for i in range(100)
    }
    plan = compile_plan(points, max_gap=8, max_registers=125)
    assert [r.count for r in plan] == [124, 76]
    assert sum(len(r.points) for r in plan) == 100
    small = compile_plan(points, max_gap=8, max_registers=10)
    assert all(r.count <= 10 for r in small)
    assert len(small) == 20


def test_plan_with_no_gap_bridging() -> None:
    points = {
        "a": ModbusPoint(table="holding", address=0, type="int16"),
        "b": ModbusPoint(table="holding", address=2, type="int16"),
    }
    assert len(compile_plan(points, max_gap=0)) == 2
    assert len(compile_plan(points, max_gap=1)) == 1
