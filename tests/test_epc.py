"""EPC binary decoding: the shared vectors, every error path, and encode/decode properties.

The encoder below exists only here, written from the TDS tables independently of the decoder's
own tables, so that a transcription slip in either shows up as a failing round trip.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from biip.gtin import Gtin
from biip.sscc import Sscc
from hypothesis import given, settings
from hypothesis import strategies as st

from gxpgate.drivers.epc import EpcResult, decode_epc
from gxpgate.drivers.gs1 import CSET82, gs1_check_digit

from .vectors import load_vectors

VECTORS = load_vectors()

# TDS §14.5.1 Table 14-2 / §14.5.2 Table 14-5: partition → (company bits, digits, ref bits, digits)
SGTIN_TABLE = [(40, 12, 4, 1), (37, 11, 7, 2), (34, 10, 10, 3), (30, 9, 14, 4), (27, 8, 17, 5)]
SGTIN_TABLE += [(24, 7, 20, 6), (20, 6, 24, 7)]
SSCC_TABLE = [(40, 12, 18, 5), (37, 11, 21, 6), (34, 10, 24, 7), (30, 9, 28, 8), (27, 8, 31, 9)]
SSCC_TABLE += [(24, 7, 34, 10), (20, 6, 38, 11)]


def encode(fields: list[tuple[int, int]]) -> str:
    """(value, bits) fields, MSB first, zero-padded to whole 16-bit words, as uppercase hex."""
    value, total = 0, 0
    for field, bits in fields:
        assert 0 <= field < 1 << bits
        value, total = (value << bits) | field, total + bits
    pad = -total % 16
    return f"{value << pad:0{(total + pad) // 4}X}"


def sgtin(partition: int, company: int, item: int, serial: int | str, *, filter_: int = 3) -> str:
    company_bits, _, item_bits, _ = SGTIN_TABLE[partition] if partition < 7 else (40, 0, 4, 0)
    head = [(filter_, 3), (partition, 3), (company, company_bits), (item, item_bits)]
    if isinstance(serial, int):
        return encode([(0x30, 8), *head, (serial, 38)])
    chars = [(ord(c), 7) for c in serial] + [(0, 7)] * (20 - len(serial))
    return encode([(0x36, 8), *head, *chars])


def sscc(partition: int, company: int, serial_ref: int, *, reserved: int = 0) -> str:
    company_bits, _, ref_bits, _ = SSCC_TABLE[partition]
    head = [(0x31, 8), (3, 3), (partition, 3), (company, company_bits), (serial_ref, ref_bits)]
    return encode([*head, (reserved, 24)])


# -- shared vectors -------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["epc"], ids=[v["scheme"] for v in VECTORS["epc"]])
@pytest.mark.parametrize("with_pc", [False, True])
def test_vectors(vector: dict[str, Any], with_pc: bool) -> None:
    hex_text = ("3000" + vector["hex"]) if with_pc else vector["hex"]
    result = decode_epc(hex_text, strip_pc=with_pc)
    assert result.ok, result.error
    got = result.as_dict()
    for key, expected in vector.items():
        # The serial is AI 21 text; SGTIN-96 merely stores it as an integer.
        assert got[key] == (str(expected) if key == "serial" else expected), key
    assert result.pc == ("3000" if with_pc else None)
    assert result.custody_scan() == {"epc_hex": vector["hex"], "uri": vector["pure_uri"]}


def test_json_shape() -> None:
    result = decode_epc(VECTORS["epc"][1]["hex"])
    assert json.loads(json.dumps(result.as_dict())) == {
        "hex": "3174257BF4499602D2000000",
        "pc": None,
        "scheme": "sscc-96",
        "filter": 3,
        "partition": 5,
        "company_prefix": "0614141",
        "item_ref": None,
        "serial_ref": "1234567890",
        "reserved": 0,
        "serial": None,
        "gtin": None,
        "sscc": "106141412345678908",
        "tag_uri": "urn:epc:tag:sscc-96:3.0614141.1234567890",
        "pure_uri": "urn:epc:id:sscc:0614141.1234567890",
        "element_string": "(00)106141412345678908",
        "ok": True,
        "error": None,
    }


def test_input_spelling_is_forgiving() -> None:
    spaced = "0x3074 257b f719 4e40 0000 1a85\n"
    assert decode_epc(spaced) == decode_epc("3074257BF7194E4000001A85")


def test_larger_epc_bank_without_pc_ignores_bits_after_the_scheme() -> None:
    result = decode_epc("3074257BF7194E4000001A85" + "00000000")
    assert result.ok
    assert result.pure_uri == "urn:epc:id:sgtin:0614141.812345.6789"


def test_pc_length_is_used() -> None:
    # PC says 6 words; what follows (e.g. more memory read) is not part of the EPC.
    result = decode_epc("3000" + "3074257BF7194E4000001A85" + "DEADBEEF", strip_pc=True)
    assert result.ok
    assert result.hex == "3074257BF7194E4000001A85"


def test_sgtin_198_with_escaped_serial() -> None:
    result = decode_epc(sgtin(5, 614141, 812345, 'A/B%C?"&<>z'))
    assert result.ok, result.error
    assert result.scheme == "sgtin-198"
    assert result.serial == 'A/B%C?"&<>z'
    assert result.pure_uri == "urn:epc:id:sgtin:0614141.812345.A%2FB%25C%3F%22%26%3C%3Ez"
    assert result.tag_uri == "urn:epc:tag:sgtin-198:3.0614141.812345.A%2FB%25C%3F%22%26%3C%3Ez"
    assert result.element_string == '(01)80614141123458(21)A/B%C?"&<>z'
    assert len(sgtin(5, 614141, 812345, "1")) == 52  # 198 bits in 13 words


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hex_text", "strip_pc", "error", "scheme"),
    [
        ("", False, "empty EPC", None),
        ("   ", False, "empty EPC", None),
        ("30 74 zz", False, "not hexadecimal", None),
        ("3", False, "4 bits are too short for an EPC header", None),
        ("3474257BF7194E4000001A85", False, "EPC header 0x34 (giai-96) is not decoded", "giai-96"),
        ("000000000000000000000000", False, "EPC header 0x00 (unprogrammed tag)", None),
        ("E200341201", False, "EPC header 0xE2 is not decoded", None),
        ("3074257BF7194E400000", False, "sgtin-96 needs 96 bits, only 80 were read", "sgtin-96"),
        ("307C257BF7194E4000001A85", False, "partition value 7 does not exist", "sgtin-96"),
        ("3174257BF4499602D2000001", False, "sscc-96 reserved bits must be zero", "sscc-96"),
        ("30", True, "shorter than the 16-bit PC word", None),
        ("0000", True, "PC word gives an EPC length of 0", None),
        ("3000", True, "PC word gives 96 EPC bits, only 0 were read", None),
        ("3100" + "3074257BF7194E4000001A85", True, "PC toggle bit set", None),
        ("2000" + "3074257BF7194E4000001A85", True, "sgtin-96 needs 96 bits, only 64", "sgtin-96"),
    ],
)
def test_errors(hex_text: str, strip_pc: bool, error: str, scheme: str | None) -> None:
    result = decode_epc(hex_text, strip_pc=strip_pc)
    assert not result.ok
    assert result.error is not None
    assert result.error.startswith(error), result.error
    if scheme is not None:
        assert result.scheme == scheme
    assert result.pure_uri is None
    json.dumps(result.as_dict())


def test_unprogrammed_tag_is_named() -> None:
    result = decode_epc("000000000000000000000000")
    assert result.scheme == "unprogrammed tag"


def test_error_keeps_the_hex_and_the_fields_decoded_so_far() -> None:
    result = decode_epc("307C257BF7194E4000001A85")
    assert result.hex == "307C257BF7194E4000001A85"
    assert (result.scheme, result.filter, result.partition) == ("sgtin-96", 3, 7)
    assert result.gtin is None


@pytest.mark.parametrize(
    ("hex_text", "error"),
    [
        (sgtin(0, 10**12, 0, 1), "company prefix field 1000000000000 has more than the 12 digits"),
        (sgtin(0, 1, 10, 1), "item reference field 10 has more than the 1 digits"),
        (sgtin(6, 999999, 10**7, 1), "item reference field 10000000 has more than the 7 digits"),
        (sscc(5, 10**7, 0), "company prefix field 10000000 has more than the 7 digits"),
        (sscc(0, 0, 10**5), "serial reference field 100000 has more than the 5 digits"),
    ],
)
def test_digit_overflow(hex_text: str, error: str) -> None:
    result = decode_epc(hex_text)
    assert result.error is not None
    assert result.error.startswith(error), result.error


def test_sgtin_198_serial_errors() -> None:
    assert decode_epc(sgtin(5, 1, 1, "A#B")).error == (
        "serial character '#' (0x23) is not in GS1 character set 82"
    )
    assert decode_epc(sgtin(5, 1, 1, "A\x7f")).error == (
        "serial character '\\x7f' (0x7F) is not in GS1 character set 82"
    )
    assert decode_epc(sgtin(5, 1, 1, "")).error == "serial is empty"
    after_padding = sgtin(5, 1, 1, "A\x00B")
    assert decode_epc(after_padding).error == "serial has data after its zero padding"


# -- properties -----------------------------------------------------------------------------------


@st.composite
def sgtin_fields(draw: st.DrawFn) -> tuple[int, str, str]:
    partition = draw(st.integers(0, 6))
    _, company_digits, _, item_digits = SGTIN_TABLE[partition]
    company = draw(st.text("0123456789", min_size=company_digits, max_size=company_digits))
    item = draw(st.text("0123456789", min_size=item_digits, max_size=item_digits))
    return partition, company, item


@given(sgtin_fields(), st.integers(0, 7), st.integers(0, 2**38 - 1), st.booleans())
@settings(max_examples=300)
def test_sgtin_96_round_trip(
    fields: tuple[int, str, str], filter_: int, serial: int, with_pc: bool
) -> None:
    partition, company, item = fields
    hex_text = sgtin(partition, int(company), int(item), serial, filter_=filter_)
    result = decode_epc(("3000" if with_pc else "") + hex_text, strip_pc=with_pc)
    _check_sgtin(result, "sgtin-96", filter_, partition, company, item, str(serial))


@given(sgtin_fields(), st.integers(0, 7), st.text(sorted(CSET82), min_size=1, max_size=20))
@settings(max_examples=300)
def test_sgtin_198_round_trip(fields: tuple[int, str, str], filter_: int, serial: str) -> None:
    partition, company, item = fields
    hex_text = sgtin(partition, int(company), int(item), serial, filter_=filter_)
    result = decode_epc("6800" + hex_text, strip_pc=True)  # 13 words
    _check_sgtin(result, "sgtin-198", filter_, partition, company, item, serial)


def _check_sgtin(
    result: EpcResult,
    scheme: str,
    filter_: int,
    partition: int,
    company: str,
    item: str,
    serial: str,
) -> None:
    assert result.ok, result.error
    assert (result.scheme, result.filter, result.partition) == (scheme, filter_, partition)
    assert (result.company_prefix, result.item_ref, result.serial) == (company, item, serial)
    assert result.gtin is not None
    assert Gtin.parse(result.gtin).value == result.gtin  # biip accepts the check digit
    assert result.gtin[:-1] == item[0] + company + item[1:]
    assert result.element_string == f"(01){result.gtin}(21){serial}"
    # TDS Table A-1: the characters a URI component must escape.
    escapes = {'"': "%22", "%": "%25", "&": "%26", "/": "%2F", "<": "%3C", ">": "%3E", "?": "%3F"}
    uri_serial = "".join(escapes.get(char, char) for char in serial)
    assert result.pure_uri == f"urn:epc:id:sgtin:{company}.{item}.{uri_serial}"
    assert result.tag_uri == f"urn:epc:tag:{scheme}:{filter_}.{company}.{item}.{uri_serial}"


@given(st.integers(0, 6), st.data())
@settings(max_examples=300)
def test_sscc_96_round_trip(partition: int, data: st.DataObject) -> None:
    _, company_digits, _, ref_digits = SSCC_TABLE[partition]
    company = data.draw(st.text("0123456789", min_size=company_digits, max_size=company_digits))
    serial_ref = data.draw(st.text("0123456789", min_size=ref_digits, max_size=ref_digits))
    result = decode_epc(sscc(partition, int(company), int(serial_ref)))
    assert result.ok, result.error
    assert (result.company_prefix, result.serial_ref, result.reserved) == (company, serial_ref, 0)
    payload = serial_ref[0] + company + serial_ref[1:]
    assert result.sscc == payload + str(gs1_check_digit(payload))
    assert Sscc.parse(result.sscc).value == result.sscc
    assert result.pure_uri == f"urn:epc:id:sscc:{company}.{serial_ref}"
    assert result.tag_uri == f"urn:epc:tag:sscc-96:3.{company}.{serial_ref}"
    assert result.element_string == f"(00){result.sscc}"


@given(st.text(), st.booleans())
@settings(max_examples=300)
def test_any_text_never_raises(text: str, strip_pc: bool) -> None:
    json.dumps(decode_epc(text, strip_pc=strip_pc).as_dict())


@given(st.binary(max_size=40), st.booleans())
@settings(max_examples=500)
def test_any_hex_never_raises(data: bytes, strip_pc: bool) -> None:
    for header in (b"", b"\x30", b"\x31", b"\x36"):
        result = decode_epc((header + data).hex(), strip_pc=strip_pc)
        assert result.ok == (result.error is None)
        json.dumps(result.as_dict())
