"""GS1 barcode scans: symbology identifier, element strings, dates, check digits.

Pure logic for the scanner drivers: :func:`parse_scan` turns the text a scanner sends into a
:class:`ScanResult` and never raises for bad input; a scan that cannot be trusted comes back with
``error`` set (invalid) or ``ambiguities`` set (valid, but readable two ways). Only
programming errors raise (e.g. :func:`gs1_check_digit` given a non-numeric payload).

The GS1 Application Identifier table, the AI formats, the symbology table and the check-digit
algorithm are biip's. What biip does not do, and this module adds on top of it:

- **Reference date.** biip resolves two-digit years against the wall clock; custody decoding must
  be reproducible, so dates are resolved here against ``reference_date`` with the century rule of
  the GS1 General Specifications §7.12 (YY − current YY in 51…99 → previous century, in −99…−50
  → next century, else the current one). Day ``00`` means the last day of the month and is
  allowed only for AIs 11–17 (§3.4.2–3.4.7); such dates are flagged ``day_omitted``.
- **Character set.** Element strings must be GS1 AI encodable character set 82 (§7.11); biip's
  ``\\d`` also accepts non-ASCII digits.
- **Separators.** A variable-length field must be followed by FNC1 (``<GS>``, ASCII 29) unless
  it is last (§7.8.5, Figure 7.8.5-2 lists the predefined-length AIs that need none). biip quietly
  cuts a variable field at its maximum length and reads on; here that is an error.
- **Check digits** (§7.9.1) of every AI that carries one (SSCC, GTIN, GLN, GDTI, GCN, GSIN, GRAI,
  ITIP, GSRN), one error per scan naming the AI.
- **Repeated AIs** with different values are invalid (§4.14); repeats with the same value are
  kept once in :attr:`ScanResult.ai`.
- **Empty values** (biip accepts AI 30 with no digits).

How a scan is classified
------------------------
An AIM symbology identifier (ISO/IEC 15424: ``]`` + code character + modifier) at the start is
split off and kept as given. ``]C1`` GS1-128, ``]e0`` GS1 DataBar, ``]d2`` GS1 DataMatrix,
``]Q3`` GS1 QR and ``]J1`` GS1 DotCode carry GS1 element strings by definition: anything that
does not parse is an error. An ``http(s)://`` text whose path holds a GS1 primary key
(``/01/…``, ``/00/…``, ``/414/…`` …) is a GS1 Digital Link, kind ``gs1_digital_link``: its
path and query AIs (percent-decoded) are validated exactly as the same data as element strings
(a month 13, a 21-character lot, a ``#`` or a space in a lot, a 15-digit GTIN are errors, not a
plain web address), and then the URI by biip's Digital Link rules. The bracketed human-readable
form printed under every barcode, ``(01)09506000134352(17)271231(10)LOT-42``, is read with biip
and validated the same way (kind ``gs1``). Without an identifier the text is taken as GS1
when it contains a ``<GS>`` or when it starts with a known AI whose data matches that AI's
format; otherwise it is ``non_gs1`` and kept raw, as is everything behind another identifier
(``]C0`` plain Code 128, ``]Q1`` QR, ``]E0`` EAN/UPC…). Scanners should be set to transmit AIM
identifiers: without one, the digits of an EAN-13 such as ``4012345…`` also read as a valid AI
(401).

Surrounding spaces, CR/LF and ``<GS>`` are ignored (keyboard-wedge suffixes, a transmitted
leading FNC1); ``raw`` keeps the text exactly as received.

The ambiguity rule
------------------
A missing ``<GS>`` after a variable-length field cannot be seen in the data: the field simply
runs on. The spec reading (the field runs to the next ``<GS>`` or the end) is the one returned,
and the scan is flagged as ambiguous when a variable-length value ``v`` (terminated by ``<GS>``
or the end) can be split as ``v = head + tail`` (``head`` non-empty) such that

1. ``head`` is itself a valid value for that AI,
2. ``tail`` parses completely as one or more valid element strings (formats, check digits,
   dates, separators) whose first AI has a predefined length, and
3. the whole alternative message is valid too (no AI repeated with a different value).

Example: ``10ABCD123417261231`` reads as lot ``ABCD123417261231`` and is flagged because
``(10)ABCD1234(17)261231`` is equally valid. Restricting ``tail`` to start with a
predefined-length AI (GTIN, SSCC, dates, measures…) keeps false alarms rare: values such as
lot ``X21Y`` are not flagged although ``(10)X(21)Y`` would parse, because that reading would
make every lot containing ``10``/``21`` suspect. Numeric lots ending in ``20`` + two digits can
still be flagged through AI 20 (variant): that is the price of catching a missing separator.
Such scans are not :attr:`ScanResult.ok`; a driver must not pick an alternative itself.
"""

from __future__ import annotations

import calendar
import functools
import re
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

if TYPE_CHECKING:
    from biip import ParseConfig
    from biip.gs1_application_identifiers import GS1ApplicationIdentifier
    from biip.gs1_element_strings import GS1ElementString

# biip is imported where a scan is parsed or a check digit computed, not with this module:
# importing it loads GS1's company-prefix table, ~20 MiB of RSS, which a gateway that only
# watches temperatures (and the config validator) never needs.

__all__ = [
    "CSET82",
    "GS",
    "Ambiguity",
    "Element",
    "ScanKind",
    "ScanResult",
    "escape_text",
    "gs1_check_digit",
    "gs1_date",
    "parse_scan",
]

GS: Final = "\x1d"
"""ASCII 29 group separator: how scanners transmit FNC1 between element strings."""

CSET82: Final = frozenset(
    "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
)
"""GS1 AI encodable character set 82 (General Specifications §7.11, Figure 7.11-1)."""

ScanKind = Literal["gs1", "gs1_digital_link", "non_gs1"]


# Dates are resolved here, not by biip (see the module docstring), so biip must not reject a
# date against its own wall-clock century.
@functools.cache
def _biip_config() -> ParseConfig:
    from biip import ParseConfig

    return ParseConfig(gs1_element_strings_verify_date=False)


@functools.cache
def _gs1_symbologies() -> frozenset[str]:
    from biip.symbology import GS1Symbology

    return frozenset(f"]{s.value}" for s in GS1Symbology.with_gs1_messages())


_AIM_ID: Final = re.compile(r"\][A-Za-z][0-9A-Za-z]")
_EDGE: Final = " \t\r\n" + GS

# AI → (start, end) of the digits that end in a GS1 check digit (§7.9.1). GTIN (01/02/03),
# SSCC (00) and GLN (41x) are also checked by biip; its error is the fallback message.
_CHECK_DIGIT_SPANS: Final[dict[str, tuple[int, int]]] = {
    "00": (0, 18),
    "01": (0, 14),
    "02": (0, 14),
    "03": (0, 14),
    **{f"41{n}": (0, 13) for n in range(8)},
    "253": (0, 13),  # GDTI
    "255": (0, 13),  # GCN
    "402": (0, 17),  # GSIN
    "8003": (0, 14),  # GRAI, with its leading filler 0
    "8006": (0, 14),  # ITIP
    "8017": (0, 18),  # GSRN provider
    "8018": (0, 18),  # GSRN recipient
    "8026": (0, 14),  # ITIP content
}

_DateRest = Literal["", "date?", "hhmm", "hhmm|9999", "hhmm?", "hh[mm[ss]]"]

# AI → (day 00 allowed, what may follow the leading YYMMDD). §3.4.x for the formats; biip's
# AI patterns have already checked the lengths and that these are digits.
_DATE_AIS: Final[dict[str, tuple[bool, _DateRest]]] = {
    "11": (True, ""),
    "12": (True, ""),
    "13": (True, ""),
    "15": (True, ""),
    "16": (True, ""),
    "17": (True, ""),
    "4324": (False, "hhmm|9999"),
    "4325": (False, "hhmm|9999"),
    "4326": (False, ""),
    "7003": (False, "hhmm"),
    "7006": (False, ""),
    "7007": (False, "date?"),  # harvest date or date range YYMMDD[YYMMDD]
    "7011": (False, "hhmm?"),
    "8008": (False, "hh[mm[ss]]"),
}

_QUANTITY_AIS: Final = frozenset({"30", "37"})


def gs1_check_digit(payload: str) -> int:
    """The GS1 mod-10 check digit (General Specifications §7.9.1) for ASCII digits ``payload``.

    Raises ``ValueError`` when ``payload`` is empty or not ASCII digits: callers pass data they
    have already validated, so that is a programming error.
    """
    if not payload or not payload.isascii() or not payload.isdigit():
        raise ValueError(f"check digit payload must be ASCII digits, got {payload!r}")
    from biip.checksums import gs1_standard_check_digit

    return gs1_standard_check_digit(payload)


def escape_text(text: str) -> str:
    """``text`` with backslash and non-printable characters escaped (``\\x1d``, ``\\u2028``).

    Reversible (a backslash becomes ``\\\\``), so the escaped ``raw`` of an evidence record
    (CONTRACT §1) still says exactly what the scanner sent.
    """
    out: list[str] = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char.isprintable():
            out.append(char)
        else:
            code = ord(char)
            if code <= 0xFF:
                out.append(f"\\x{code:02x}")
            elif code <= 0xFFFF:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Element:
    """One GS1 element string: AI and data, with the meaning where this module resolves one."""

    ai: str
    value: str
    title: str
    """biip's data title of the AI, e.g. ``BATCH/LOT``."""
    date: date | None = None
    """The calendar date of a date AI (its leading YYMMDD), century per §7.12."""
    day_omitted: bool = False
    """The data said day ``00``: ``date`` is the last day of that month."""
    quantity: int | None = None
    """Count of trade items or units for AI 30 (variable count) and AI 37 (count in a unit)."""

    @property
    def hri(self) -> str:
        return f"({self.ai}){self.value}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ai": self.ai,
            "title": self.title,
            "value": self.value,
            "date": self.date.isoformat() if self.date else None,
            "day_omitted": self.day_omitted,
            "quantity": self.quantity,
        }


@dataclass(frozen=True, slots=True)
class Ambiguity:
    """A variable-length element that could also be read as several (see the module doc)."""

    ai: str
    value: str
    alternatives: tuple[str, ...]
    """Each alternative reading of this element, in HRI form, e.g. ``(10)ABCD(17)261231``."""

    @property
    def reason(self) -> str:
        others = " or ".join(self.alternatives)
        return (
            f"({self.ai}){self.value} could also be {others} if a <GS> separator is missing; "
            "the data cannot tell"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "ai": self.ai,
            "value": self.value,
            "alternatives": list(self.alternatives),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What one scan says. ``elements`` is empty for ``non_gs1`` scans and for errors."""

    raw: str
    """The text exactly as received (escaped only in :meth:`as_dict`)."""
    symbology: str | None
    """The AIM symbology identifier as given (``]d2``), ``None`` when the scanner sent none."""
    kind: ScanKind
    elements: tuple[Element, ...] = ()
    ambiguities: tuple[Ambiguity, ...] = ()
    error: str | None = None
    """Why the scan is invalid GS1 (check digit, date, format, truncation, empty scan)."""

    @property
    def ok(self) -> bool:
        """Valid and unambiguous: safe to record as it reads."""
        return self.error is None and not self.ambiguities

    @property
    def problem(self) -> str | None:
        """One line saying why the scan is not :attr:`ok`, ``None`` when it is."""
        if self.error is not None:
            return self.error
        if self.ambiguities:
            return "ambiguous: " + "; ".join(a.reason for a in self.ambiguities)
        return None

    @property
    def ai(self) -> dict[str, str]:
        """AI → value, in scan order (the first of identical repeats)."""
        mapping: dict[str, str] = {}
        for element in self.elements:
            mapping.setdefault(element.ai, element.value)
        return mapping

    @property
    def hri(self) -> str | None:
        """Human-readable interpretation, ``(01)…(17)…``; ``None`` without elements."""
        return "".join(e.hri for e in self.elements) or None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (``raw`` escaped)."""
        return {
            "kind": self.kind,
            "raw": escape_text(self.raw),
            "symbology": self.symbology,
            "elements": [e.as_dict() for e in self.elements],
            "ai": self.ai,
            "hri": self.hri,
            "ambiguities": [a.as_dict() for a in self.ambiguities],
            "ok": self.ok,
            "error": self.error,
        }

    def custody_scan(self) -> dict[str, Any]:
        """``data.scan`` of a custody record for a barcode (CONTRACT §1)."""
        return {"raw": escape_text(self.raw), "symbology": self.symbology, "ai": self.ai}


class _Invalid(Exception):
    """Internal: the data is not valid GS1; the message is the user-facing reason."""


def parse_scan(raw: str, *, reference_date: date) -> ScanResult:
    """Decode one scan. Never raises for bad scanner data: see ``error`` and ``ambiguities``."""
    symbology: str | None = None
    payload = raw.strip(_EDGE)
    if _AIM_ID.match(payload):
        symbology, payload = payload[:3], payload[3:].strip(_EDGE)
    if symbology in _gs1_symbologies():
        return _gs1_message(raw, symbology, payload, reference_date)
    if not payload:
        what = "no data after the symbology identifier" if symbology else "empty scan"
        return ScanResult(raw, symbology, "non_gs1", error=what)
    if payload[:8].lower().startswith(("http://", "https://")):
        return _digital_link(raw, symbology, payload, reference_date)
    if symbology is None and _BRACKETED.match(payload):
        return _bracketed(raw, payload, reference_date)
    if symbology is None and _looks_like_gs1(payload):
        return _gs1_message(raw, symbology, payload, reference_date)
    return ScanResult(raw, symbology, "non_gs1")


def _looks_like_gs1(payload: str) -> bool:
    from biip import ParseError
    from biip.gs1_element_strings import GS1ElementString

    if GS in payload:
        return True
    if not set(payload) <= CSET82:
        return False
    try:
        GS1ElementString.extract(payload, config=_biip_config())
    except ParseError:
        return False
    return True


def _gs1_message(raw: str, symbology: str | None, payload: str, ref: date) -> ScanResult:
    try:
        if not payload:
            raise _Invalid("no data after the symbology identifier")
        elements = _parse_elements(payload, ref)
        _check_repeats(elements)
    except _Invalid as exc:
        return ScanResult(raw, symbology, "gs1", error=str(exc))
    return ScanResult(raw, symbology, "gs1", tuple(elements), _ambiguities(elements, ref))


_DL_PRIMARY_KEYS = frozenset(
    {"00", "01", "253", "255", "401", "402", "414", "417", "8003", "8004", "8006", "8010",
     "8013", "8017", "8018"}
)  # fmt: skip
"""AIs that may start a GS1 Digital Link URI's path (GS1 Digital Link standard 1.2, §4)."""

_BRACKETED = re.compile(r"^\(\d{2,4}\)")
_BRACKETED_PAIR = re.compile(r"\((\d{2,4})\)([^(]*)")


def _dl_pairs(payload: str) -> list[tuple[str, str]] | None:
    """The (AI, value) pairs of a GS1 Digital Link URI's path and query, percent-decoded;
    None when the path holds no GS1 primary key (an ordinary web address)."""
    parts = urlsplit(payload)
    segments = parts.path.split("/")
    start = next(
        (i for i, seg in enumerate(segments[:-1]) if seg in _DL_PRIMARY_KEYS and segments[i + 1]),
        None,
    )
    if start is None:
        return None
    path = segments[start:]
    if len(path) % 2:
        path.append("")  # an AI without a value: the element-string check says so
    pairs = [(path[i], unquote(path[i + 1], encoding="latin-1")) for i in range(0, len(path), 2)]
    for key, value in parse_qsl(parts.query, keep_blank_values=True, encoding="latin-1"):
        if key.isdigit():  # other parameters (linkType, …) are not GS1 data
            pairs.append((key, value))
    return pairs


def _digital_link(raw: str, symbology: str | None, payload: str, ref: date) -> ScanResult:
    from biip import ParseError
    from biip.gs1_digital_link_uris import GS1DigitalLinkURI

    pairs = _dl_pairs(payload)
    if pairs is None:
        return ScanResult(raw, symbology, "non_gs1")  # a plain URL is not GS1 data
    try:
        elements = _parse_elements(GS.join(ai + value for ai, value in pairs), ref)
        _check_repeats(elements)
    except _Invalid as exc:
        return ScanResult(raw, symbology, "gs1_digital_link", error=str(exc))
    try:
        GS1DigitalLinkURI.parse(payload, config=_biip_config())  # the URI's own structure rules
    except (ParseError, ValueError) as exc:
        why = f"not a valid GS1 Digital Link URI: {exc}"
        return ScanResult(raw, symbology, "gs1_digital_link", error=why)
    return ScanResult(raw, symbology, "gs1_digital_link", tuple(elements))


def _bracketed(raw: str, payload: str, ref: date) -> ScanResult:
    """The human-readable form ``(01)…(10)…``: biip knows where each AI's value ends (a lot may
    hold brackets); the data is then checked as the element string it stands for."""
    from biip import ParseError
    from biip.gs1_messages import GS1Message

    try:
        message = GS1Message.parse_hri(payload, config=_biip_config())
        pairs = [(es.ai.ai, es.value) for es in message.element_strings]
    except (ParseError, ValueError):
        pairs = _BRACKETED_PAIR.findall(payload)  # for the reason, as the element string gives it
    try:
        elements = _parse_elements(GS.join(ai + value for ai, value in pairs), ref)
        _check_repeats(elements)
    except _Invalid as exc:
        return ScanResult(raw, None, "gs1", error=str(exc))
    if "".join(f"({e.ai}){e.value}" for e in elements) != payload.replace(GS, ""):
        return ScanResult(raw, None, "gs1", error="bracketed GS1 text that does not parse whole")
    return ScanResult(raw, None, "gs1", tuple(elements), _ambiguities(elements, ref))


def _parse_elements(data: str, ref: date) -> list[Element]:
    """Element strings of ``data`` (symbology and edge separators already removed)."""
    from biip import ParseError
    from biip.gs1_application_identifiers import GS1ApplicationIdentifier
    from biip.gs1_element_strings import GS1ElementString

    for index, char in enumerate(data):
        if char not in CSET82 and char != GS:
            raise _Invalid(
                f"character '{escape_text(char)}' at position {index} is not allowed in GS1 "
                "element strings (character set 82)"
            )
    elements: list[Element] = []
    pos = 0
    while pos < len(data):
        rest = data[pos:]
        try:
            ai = GS1ApplicationIdentifier.extract(rest)
        except ParseError:
            raise _Invalid(
                f"no GS1 Application Identifier at position {pos}: {rest[:8]!r}"
            ) from None
        try:
            es = GS1ElementString.extract(rest, config=_biip_config())
        except ParseError:
            field = rest[len(ai.ai) :].split(GS, 1)[0]
            at_end = pos + len(ai.ai) + len(field) == len(data)
            raise _Invalid(_format_reason(ai, field, ref, at_end=at_end)) from None
        element = _element(es, ref)
        end = pos + len(es)
        if _is_variable(ai) and end < len(data) and data[end] != GS:
            raise _Invalid(
                f"({ai.ai}) data runs past its maximum length ({ai.format}) with no <GS> "
                f"separator at position {end}"
            )
        elements.append(element)
        pos = end
        while pos < len(data) and data[pos] == GS:
            pos += 1
    return elements


def _format_reason(ai: GS1ApplicationIdentifier, field: str, ref: date, *, at_end: bool) -> str:
    """Why biip's pattern for ``ai`` rejected ``field`` (the data up to the next <GS>)."""
    if not field:
        return f"({ai.ai}) has no data"
    if ai.ai in _DATE_AIS and len(field) >= 6 and field[:6].isdigit():
        _yymmdd(ai.ai, field[:6], ref, day_00_allowed=_DATE_AIS[ai.ai][0])  # names the date
    # Data that more characters would complete was cut short: by the end of the scan (a
    # truncated read or symbol) or by a <GS> too early.
    if any(re.fullmatch(ai.pattern, ai.ai + field + "0" * n) for n in range(1, 19)):
        hint = " (truncated?)" if at_end else ""
        return f"({ai.ai}) data {field!r} is too short for its format {ai.format}{hint}"
    return f"({ai.ai}) data {field!r} does not match its format {ai.format}"


def _element(es: GS1ElementString, ref: date) -> Element:
    """Validate one biip element string and add what this module resolves (date, quantity)."""
    ai, value = es.ai.ai, es.value
    if not value:
        raise _Invalid(f"({ai}) has no data")
    if not set(value) <= CSET82:
        # Digital Link values are percent-decoded by biip and can hold anything.
        raise _Invalid(f"({ai}) data {value!r} has characters outside GS1 character set 82")
    span = _CHECK_DIGIT_SPANS.get(ai)
    if span is not None:
        digits = value[span[0] : span[1]]
        expected = gs1_check_digit(digits[:-1])
        if int(digits[-1]) != expected:
            raise _Invalid(f"({ai}){value}: check digit is {digits[-1]}, expected {expected}")
    library_error = es.gtin_error or es.sscc_error or es.gln_error
    if library_error:
        raise _Invalid(f"({ai}){value}: {library_error}")
    resolved, day_omitted = _resolve_date(ai, value, ref)
    quantity = int(value) if ai in _QUANTITY_AIS else None
    return Element(ai, value, es.ai.data_title, resolved, day_omitted, quantity)


def _is_variable(ai: GS1ApplicationIdentifier) -> bool:
    # biip's format strings follow the GS1 syntax dictionary: "X..20" is up to 20 characters,
    # "[+N6]" an optional component. Either makes the length variable.
    return ".." in ai.format or "[" in ai.format


def _resolve_date(ai: str, value: str, ref: date) -> tuple[date | None, bool]:
    layout = _DATE_AIS.get(ai)
    if layout is None:
        return None, False
    day_00_allowed, rest_layout = layout
    first, day_omitted = _yymmdd(ai, value[:6], ref, day_00_allowed)
    rest = value[6:]
    if rest_layout == "date?" and rest:
        _yymmdd(ai, rest, ref, day_00_allowed=False)
    elif (
        rest_layout.startswith("hh")
        and rest
        and not (rest_layout == "hhmm|9999" and rest == "9999")
    ):
        _time(ai, rest)
    return first, day_omitted


def gs1_date(ai: str, value: str, reference_date: date) -> date | None:
    """The date a date AI's value (e.g. ``("17", "261200")``) names, century per §7.12 against
    ``reference_date``, day ``00`` as the month's last day; None when it names none."""
    try:
        return _resolve_date(ai, value, reference_date)[0]
    except (_Invalid, ValueError):
        return None


def _yymmdd(ai: str, text: str, ref: date, day_00_allowed: bool) -> tuple[date, bool]:
    year = _century_year(int(text[:2]), ref)
    month, day = int(text[2:4]), int(text[4:6])
    if not 1 <= month <= 12:
        raise _Invalid(f"({ai}) date {text}: month {text[2:4]} does not exist")
    last = calendar.monthrange(year, month)[1]
    if day == 0 and day_00_allowed:
        return date(year, month, last), True
    if not 1 <= day <= last:
        raise _Invalid(f"({ai}) date {text}: {year}-{month:02d} has no day {text[4:6]}")
    return date(year, month, day), False


def _century_year(yy: int, ref: date) -> int:
    """Four-digit year for two-digit ``yy`` relative to ``ref`` (General Specifications §7.12)."""
    century = ref.year - ref.year % 100
    difference = yy - ref.year % 100
    if 51 <= difference <= 99:
        century -= 100
    elif -99 <= difference <= -50:
        century += 100
    return century + yy


def _time(ai: str, text: str) -> None:
    limits = (23, 59, 59)
    for index in range(0, len(text), 2):
        if int(text[index : index + 2]) > limits[index // 2]:
            raise _Invalid(f"({ai}) time {text} is not a valid time of day")


def _check_repeats(elements: list[Element]) -> None:
    seen: dict[str, str] = {}
    for element in elements:
        before = seen.setdefault(element.ai, element.value)
        if before != element.value:
            raise _Invalid(
                f"({element.ai}) appears twice with different values: {before!r} and "
                f"{element.value!r}"
            )


def _ambiguities(elements: list[Element], ref: date) -> tuple[Ambiguity, ...]:
    from biip.gs1_application_identifiers import GS1ApplicationIdentifier

    found: list[Ambiguity] = []
    for index, element in enumerate(elements):
        ai = GS1ApplicationIdentifier.extract(element.ai)
        if not _is_variable(ai):
            continue
        alternatives = [
            reading
            for split in range(1, len(element.value))
            if (reading := _alternative(elements, index, split, ref)) is not None
        ]
        if alternatives:
            found.append(Ambiguity(element.ai, element.value, tuple(alternatives)))
    return tuple(found)


def _alternative(elements: list[Element], index: int, split: int, ref: date) -> str | None:
    """HRI of element ``index`` re-read as head + further elements, if that reading is valid."""
    from biip import ParseError
    from biip.gs1_application_identifiers import GS1ApplicationIdentifier
    from biip.gs1_element_strings import GS1ElementString

    element = elements[index]
    head, tail = element.value[:split], element.value[split:]
    try:
        first_ai = GS1ApplicationIdentifier.extract(tail)
    except ParseError:
        return None
    if first_ai.separator_required:
        return None
    try:
        head_element = _element(
            GS1ElementString.parse(element.ai + head, config=_biip_config()), ref
        )
        tail_elements = _parse_elements(tail, ref)
        _check_repeats([*elements[:index], head_element, *tail_elements, *elements[index + 1 :]])
    except (_Invalid, ParseError):
        return None
    return head_element.hri + "".join(e.hri for e in tail_elements)
