"""EPC binary decoding for RFID reads, per the GS1 EPC Tag Data Standard (TDS 2.x).

Pure logic for the RFID reader drivers: :func:`decode_epc` turns the hex of a tag's EPC bank into
an :class:`EpcResult` and never raises for bad tag data; undecodable reads come back with
``error`` set and the hex kept as read. biip does not decode EPC binary, so the bit layouts are
written here, as data:

- ``_SCHEMES``: header → scheme (TDS §14.2, Table 14-1): SGTIN-96 ``0x30`` and SGTIN-198
  ``0x36`` (§14.5.1), SSCC-96 ``0x31`` (§14.5.2). Every scheme is header, filter (3 bits),
  partition (3 bits), company prefix + reference (split by the partition table), then one tail
  field: a 38-bit integer serial, a 140-bit 7-bit-ASCII serial, or 24 reserved zero bits.
- ``_SGTIN_PARTITIONS`` / ``_SSCC_PARTITIONS``: the partition tables (§14.5.1 Table 14-2,
  §14.5.2 Table 14-5), bits and digits of company prefix and reference per partition value.

Decoding follows §14.4 with the "Partition" and "String" methods of §14.3: a company prefix or
reference whose integer has more digits than its partition allows, a partition value of 7, a
7-bit serial with characters outside GS1 character set 82 (TDS Table A-1) or with data after its
zero padding, and non-zero SSCC-96 reserved bits are all errors; bits after the scheme's length
(a 96-bit EPC in a larger EPC bank) are ignored, as the TDT binary patterns do.

From the fields: the GTIN-14 (indicator digit + company prefix + item reference + check digit,
§7.3) or the SSCC-18 (extension digit + company prefix + serial reference + check digit, §7.4),
with the check digit from :func:`gxpgate.drivers.gs1.gs1_check_digit`; the EPC tag URI (§12.3) with
the filter value, the pure identity URI (§6.3.1, §6.3.2), in which a string serial escapes
``" % & / < > ?`` as ``%XX`` (Table A-1), and the GS1 element string in HRI form.

The PC word (EPC Gen2 / TDS §15.1.1) may lead the hex (``strip_pc=True``): its top five bits
give the EPC length in 16-bit words, which is then used instead of the scheme's own length, and a
set toggle bit (``0x0100``) means an ISO/IEC 15961 UII rather than a GS1 EPC. An XPC word is
not expected between PC and EPC (memory layout, not a Gen2 backscatter reply with XI set).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Final, Literal

from gxpgate.drivers.gs1 import CSET82, escape_text, gs1_check_digit

__all__ = ["EpcResult", "decode_epc"]


@dataclass(frozen=True, slots=True)
class _Partition:
    company_bits: int
    company_digits: int
    reference_bits: int
    reference_digits: int


# TDS §14.5.1, Table 14-2: reference = indicator digit + item reference.
_SGTIN_PARTITIONS: Final = (
    _Partition(40, 12, 4, 1),
    _Partition(37, 11, 7, 2),
    _Partition(34, 10, 10, 3),
    _Partition(30, 9, 14, 4),
    _Partition(27, 8, 17, 5),
    _Partition(24, 7, 20, 6),
    _Partition(20, 6, 24, 7),
)

# TDS §14.5.2, Table 14-5: reference = extension digit + serial reference.
_SSCC_PARTITIONS: Final = (
    _Partition(40, 12, 18, 5),
    _Partition(37, 11, 21, 6),
    _Partition(34, 10, 24, 7),
    _Partition(30, 9, 28, 8),
    _Partition(27, 8, 31, 9),
    _Partition(24, 7, 34, 10),
    _Partition(20, 6, 38, 11),
)

_Tail = Literal["integer serial", "string serial", "reserved"]


@dataclass(frozen=True, slots=True)
class _Scheme:
    name: str
    """Tag URI scheme name, e.g. ``sgtin-96``."""
    key: Literal["sgtin", "sscc"]
    bits: int
    partitions: tuple[_Partition, ...]
    tail: _Tail
    tail_bits: int


_HEADER_BITS: Final = 8
_FILTER_BITS: Final = 3
_PARTITION_BITS: Final = 3
_CHAR_BITS: Final = 7  # the "String" method of TDS §14.3: 7-bit ASCII, zero-padded

_SCHEMES: Final[dict[int, _Scheme]] = {
    0x30: _Scheme("sgtin-96", "sgtin", 96, _SGTIN_PARTITIONS, "integer serial", 38),
    0x31: _Scheme("sscc-96", "sscc", 96, _SSCC_PARTITIONS, "reserved", 24),
    0x36: _Scheme("sgtin-198", "sgtin", 198, _SGTIN_PARTITIONS, "string serial", 140),
}

# Other headers of TDS Table 14-1, named in the error so a technician knows what the tag holds.
_OTHER_HEADERS: Final[dict[int, str]] = {
    0x00: "unprogrammed tag",
    0x2C: "gdti-96",
    0x2D: "gsrn-96",
    0x2E: "gsrnp-96",
    0x2F: "usdod-96",
    0x32: "sgln-96",
    0x33: "grai-96",
    0x34: "giai-96",
    0x35: "gid-96",
    0x37: "grai-170",
    0x38: "giai-202",
    0x39: "sgln-195",
    0x3A: "gdti-113",
    0x3B: "adi-var",
    0x3C: "cpi-96",
    0x3D: "cpi-var",
    0x3E: "gdti-174",
    0x3F: "sgcn-96",
    0x40: "itip-110",
    0x41: "itip-212",
}

# Characters of character set 82 that a pure identity URI must percent-escape (Table A-1).
_URI_ESCAPES: Final = {char: f"%{ord(char):02X}" for char in '"%&/<>?'}

_PC_LENGTH_SHIFT: Final = 11  # PC bits 15..11: EPC length in words
_PC_TOGGLE: Final = 0x0100  # PC bit 8: 1 = ISO/IEC 15961 AFI follows, not a GS1 EPC


@dataclass(frozen=True, slots=True)
class EpcResult:
    """One decoded EPC. On ``error`` the fields decoded before the problem are kept."""

    hex: str
    """The EPC as read, uppercase hex without the PC word (the input, escaped, when not hex)."""
    pc: str | None = None
    """The PC word as four hex digits when the input carried it."""
    scheme: str | None = None
    """``sgtin-96``, ``sscc-96``, ``sgtin-198``; for other known headers their name."""
    filter: int | None = None
    partition: int | None = None
    company_prefix: str | None = None
    item_ref: str | None = None
    """SGTIN: indicator digit + item reference, as in the EPC URIs."""
    serial_ref: str | None = None
    """SSCC: extension digit + serial reference, as in the EPC URIs."""
    reserved: int | None = None
    """SSCC-96: the 24 reserved bits (0 in every valid tag)."""
    serial: str | None = None
    """SGTIN serial (AI 21) as text: SGTIN-96 holds a decimal integer without leading zeros."""
    gtin: str | None = None
    sscc: str | None = None
    tag_uri: str | None = None
    pure_uri: str | None = None
    element_string: str | None = None
    """GS1 element string in HRI form, e.g. ``(01)80614141123458(21)6789``."""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "hex": self.hex,
            "pc": self.pc,
            "scheme": self.scheme,
            "filter": self.filter,
            "partition": self.partition,
            "company_prefix": self.company_prefix,
            "item_ref": self.item_ref,
            "serial_ref": self.serial_ref,
            "reserved": self.reserved,
            "serial": self.serial,
            "gtin": self.gtin,
            "sscc": self.sscc,
            "tag_uri": self.tag_uri,
            "pure_uri": self.pure_uri,
            "element_string": self.element_string,
            "ok": self.ok,
            "error": self.error,
        }

    def custody_scan(self) -> dict[str, Any]:
        """``data.scan`` of a custody record for an RFID read (CONTRACT §1)."""
        return {"epc_hex": self.hex, "uri": self.pure_uri}


class _Invalid(Exception):
    """Internal: the bits are not a valid EPC of the scheme; the message is the reason."""


def decode_epc(hex_text: str, *, strip_pc: bool = False) -> EpcResult:
    """Decode the EPC bank read as ``hex_text``; with ``strip_pc`` it starts with the PC word.

    Whitespace and a leading ``0x`` are ignored. Never raises for bad input.
    """
    text = "".join(hex_text.split())
    if text[:2].lower() == "0x":
        text = text[2:]
    if not text:
        return EpcResult(hex="", error="empty EPC")
    if not all(char in string.hexdigits for char in text):
        return EpcResult(hex=escape_text(text), error="not hexadecimal")
    text = text.upper()
    if not strip_pc:
        return _decode(text, int(text, 16), 4 * len(text), None)
    if len(text) < 4:
        return EpcResult(hex=text, error="shorter than the 16-bit PC word")
    pc, epc_text = int(text[:4], 16), text[4:]
    pc_hex = text[:4]
    if pc & _PC_TOGGLE:
        return EpcResult(
            hex=epc_text,
            pc=pc_hex,
            error=f"PC toggle bit set: an ISO/IEC 15961 UII (AFI 0x{pc & 0xFF:02X}), not a GS1 EPC",
        )
    words = pc >> _PC_LENGTH_SHIFT
    if words == 0:
        return EpcResult(hex=epc_text, pc=pc_hex, error="PC word gives an EPC length of 0")
    if len(epc_text) < 4 * words:
        return EpcResult(
            hex=epc_text,
            pc=pc_hex,
            error=f"PC word gives {16 * words} EPC bits, only {4 * len(epc_text)} were read",
        )
    epc_text = epc_text[: 4 * words]
    return _decode(epc_text, int(epc_text, 16), 16 * words, pc_hex)


class _Reader:
    """MSB-first reader over the ``length`` bits of ``value``."""

    def __init__(self, value: int, length: int) -> None:
        self._value = value
        self._length = length
        self._pos = 0

    def read(self, bits: int) -> int:
        self._pos += bits
        return (self._value >> (self._length - self._pos)) & ((1 << bits) - 1)


def _decode(hex_text: str, value: int, length: int, pc: str | None) -> EpcResult:
    fields: dict[str, Any] = {"hex": hex_text, "pc": pc}
    try:
        _decode_into(fields, value, length)
    except _Invalid as exc:
        return EpcResult(**fields, error=str(exc))
    return EpcResult(**fields)


def _decode_into(fields: dict[str, Any], value: int, length: int) -> None:
    """Fill ``fields`` with what the bits say; raise :class:`_Invalid` at the first problem."""
    if length < _HEADER_BITS:
        raise _Invalid(f"{length} bits are too short for an EPC header")
    header = value >> (length - _HEADER_BITS)
    scheme = _SCHEMES.get(header)
    if scheme is None:
        name = _OTHER_HEADERS.get(header)
        fields["scheme"] = name
        what = f" ({name})" if name else ""
        supported = ", ".join(s.name for s in _SCHEMES.values())
        raise _Invalid(f"EPC header 0x{header:02X}{what} is not decoded; only {supported} are")
    fields["scheme"] = scheme.name
    if length < scheme.bits:
        raise _Invalid(f"{scheme.name} needs {scheme.bits} bits, only {length} were read")
    bits = _Reader(value, length)
    bits.read(_HEADER_BITS)
    fields["filter"] = bits.read(_FILTER_BITS)
    fields["partition"] = partition_value = bits.read(_PARTITION_BITS)
    if partition_value >= len(scheme.partitions):
        raise _Invalid(f"partition value {partition_value} does not exist")
    partition = scheme.partitions[partition_value]
    company = _digits(bits.read(partition.company_bits), partition.company_digits, "company prefix")
    reference_name = "item reference" if scheme.key == "sgtin" else "serial reference"
    reference = _digits(
        bits.read(partition.reference_bits), partition.reference_digits, reference_name
    )
    tail = bits.read(scheme.tail_bits)
    fields["company_prefix"] = company
    if scheme.key == "sgtin":
        serial = _serial(scheme, tail)
        gtin_payload = reference[0] + company + reference[1:]
        gtin = gtin_payload + str(gs1_check_digit(gtin_payload))
        uri_serial = "".join(_URI_ESCAPES.get(char, char) for char in serial)
        fields.update(
            item_ref=reference,
            serial=serial,
            gtin=gtin,
            tag_uri=f"urn:epc:tag:{scheme.name}:{fields['filter']}.{company}.{reference}."
            f"{uri_serial}",
            pure_uri=f"urn:epc:id:sgtin:{company}.{reference}.{uri_serial}",
            element_string=f"(01){gtin}(21){serial}",
        )
    else:
        fields["reserved"] = tail
        if tail:
            raise _Invalid(f"{scheme.name} reserved bits must be zero, got 0x{tail:X}")
        sscc_payload = reference[0] + company + reference[1:]
        sscc = sscc_payload + str(gs1_check_digit(sscc_payload))
        fields.update(
            serial_ref=reference,
            sscc=sscc,
            tag_uri=f"urn:epc:tag:{scheme.name}:{fields['filter']}.{company}.{reference}",
            pure_uri=f"urn:epc:id:sscc:{company}.{reference}",
            element_string=f"(00){sscc}",
        )


def _digits(number: int, digits: int, what: str) -> str:
    """The "Partition" decoding of one field: at most ``digits`` digits, zero-padded."""
    if number >= 10**digits:
        raise _Invalid(f"{what} field {number} has more than the {digits} digits of its partition")
    return str(number).zfill(digits)


def _serial(scheme: _Scheme, tail: int) -> str:
    if scheme.tail == "integer serial":
        return str(tail)
    # "String" decoding: 7-bit characters, then all-zero padding to the end of the field.
    chars: list[str] = []
    count = scheme.tail_bits // _CHAR_BITS
    for index in range(count):
        code = (tail >> (scheme.tail_bits - _CHAR_BITS * (index + 1))) & 0x7F
        if code == 0:
            if tail & ((1 << (scheme.tail_bits - _CHAR_BITS * (index + 1))) - 1):
                raise _Invalid("serial has data after its zero padding")
            break
        char = chr(code)
        if char not in CSET82:
            raise _Invalid(
                f"serial character '{escape_text(char)}' (0x{code:02X}) is not in GS1 "
                "character set 82"
            )
        chars.append(char)
    if not chars:
        raise _Invalid("serial is empty")
    return "".join(chars)
