"""GS1 scan parsing: the shared vectors, the rules biip does not cover, and properties."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gxpgate.drivers.gs1 import (
    CSET82,
    GS,
    Element,
    ScanResult,
    escape_text,
    gs1_check_digit,
    parse_scan,
)

from .vectors import load_vectors

# The century rule depends on the reference date: every test pins it.
REF = date(2026, 11, 21)


VECTORS = load_vectors()


def scan(text: str, ref: date = REF) -> ScanResult:
    return parse_scan(text.replace("<GS>", GS), reference_date=ref)


def elements_of(result: ScanResult) -> list[tuple[str, str, date | None]]:
    return [(e.ai, e.value, e.date) for e in result.elements]


# -- shared vectors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vector", VECTORS["gs1_scans"], ids=[v["input_repr"] for v in VECTORS["gs1_scans"]]
)
def test_scan_vectors(vector: dict[str, Any]) -> None:
    result = scan(vector["input_repr"])
    assert result.ok, result.problem
    assert result.kind == "gs1"
    assert result.symbology == vector["symbology"]
    assert result.hri == vector["hri"]
    as_json = json.loads(json.dumps(result.as_dict()))
    assert [{k: e[k] for k in ("ai", "value", "date")} for e in as_json["elements"]] == vector[
        "elements"
    ]
    assert as_json["ai"] == {e["ai"]: e["value"] for e in vector["elements"]}
    assert as_json["raw"] == vector["input_repr"].replace("<GS>", "\\x1d")


@pytest.mark.parametrize(
    "vector", VECTORS["gs1_dates"], ids=[v["element_string"] for v in VECTORS["gs1_dates"]]
)
def test_date_vectors(vector: dict[str, str]) -> None:
    result = scan(vector["element_string"])
    assert result.ok, result.problem
    (element,) = result.elements
    assert element.date == date.fromisoformat(vector["date"])
    assert element.day_omitted == vector["element_string"].endswith("00")


@pytest.mark.parametrize(
    "vector", VECTORS["gs1_check_digit"], ids=[v["payload"] for v in VECTORS["gs1_check_digit"]]
)
def test_check_digit_vectors(vector: dict[str, Any]) -> None:
    assert gs1_check_digit(vector["payload"]) == vector["check_digit"]


@pytest.mark.parametrize("payload", ["", "12a4", "١٢٣", " 123"])
def test_check_digit_rejects_non_ascii_digits(payload: str) -> None:
    with pytest.raises(ValueError, match="ASCII digits"):
        gs1_check_digit(payload)


# -- symbology and classification ---------------------------------------------------------------


@pytest.mark.parametrize("symbology", ["]C1", "]e0", "]d2", "]Q3", "]J1"])
def test_gs1_symbologies_are_stripped_and_kept(symbology: str) -> None:
    result = scan(f"{symbology}00106141412345678908")
    assert result.ok
    assert result.symbology == symbology
    assert result.ai == {"00": "106141412345678908"}


@pytest.mark.parametrize("symbology", ["]d2", "]C1"])
def test_gs1_symbology_requires_gs1_data(symbology: str) -> None:
    result = scan(f"{symbology}HELLO")
    assert result.kind == "gs1"
    assert result.error is not None
    assert "no GS1 Application Identifier" in result.error


@pytest.mark.parametrize(
    ("text", "symbology"),
    [
        ("]C0ABC-123", "]C0"),  # Code 128 without FNC1
        ("]d1010950110102091710A", "]d1"),  # plain Data Matrix: not GS1 even if it looks so
        ("]Q1https://example.com/x", "]Q1"),
        ("]E05901234123457", "]E0"),
        ("]Z9whatever", "]Z9"),
        ("HELLO WORLD", None),
        ("A-01-02", None),
        ("12345", None),  # would be AI 12, but its data does not fit the format
        ("5901234123457", None),  # no AI starts with 59
        ("https://example.com/path?q=1", None),
        ("]", None),
        ("]C", None),
    ],
)
def test_non_gs1_is_kept_raw(text: str, symbology: str | None) -> None:
    result = scan(text)
    assert result.kind == "non_gs1"
    assert result.ok, result.problem
    assert result.symbology == symbology
    assert result.elements == ()
    assert result.ai == {}
    assert result.hri is None
    assert result.raw == text


def test_edges_ignored_raw_kept() -> None:
    text = "\x1d0109501101020917\r\n"
    result = scan(text)
    assert result.ai == {"01": "09501101020917"}
    assert result.raw == text
    assert result.as_dict()["raw"] == "\\x1d0109501101020917\\x0d\\x0a"


def test_raw_escaping_is_reversible_and_printable() -> None:
    assert escape_text("a\x1db\\x1dc\x00\x7f\u2028é") == "a\\x1db\\\\x1dc\\x00\\x7f\\u2028é"
    result = scan("]C0TEXT\x07\\")
    assert result.as_dict()["raw"] == "]C0TEXT\\x07\\\\"


def test_custody_scan_shape() -> None:
    result = scan("]d2010950110102091710L1<GS>17261231")
    assert result.custody_scan() == {
        "raw": "]d2010950110102091710L1\\x1d17261231",
        "symbology": "]d2",
        "ai": {"01": "09501101020917", "10": "L1", "17": "261231"},
    }


def test_json_shape() -> None:
    result = scan("]d201095011010209173712<GS>1726120010ABC")
    assert result.as_dict() == {
        "kind": "gs1",
        "raw": "]d201095011010209173712\\x1d1726120010ABC",
        "symbology": "]d2",
        "elements": [
            {
                "ai": "01",
                "title": "GTIN",
                "value": "09501101020917",
                "date": None,
                "day_omitted": False,
                "quantity": None,
            },
            {
                "ai": "37",
                "title": "COUNT",
                "value": "12",
                "date": None,
                "day_omitted": False,
                "quantity": 12,
            },
            {
                "ai": "17",
                "title": "USE BY or EXPIRY",
                "value": "261200",
                "date": "2026-12-31",
                "day_omitted": True,
                "quantity": None,
            },
            {
                "ai": "10",
                "title": "BATCH/LOT",
                "value": "ABC",
                "date": None,
                "day_omitted": False,
                "quantity": None,
            },
        ],
        "ai": {"01": "09501101020917", "37": "12", "17": "261200", "10": "ABC"},
        "hri": "(01)09501101020917(37)12(17)261200(10)ABC",
        "ambiguities": [],
        "ok": True,
        "error": None,
    }


# -- invalid GS1 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("]d20109501101020918", "(01)09501101020918: check digit is 8, expected 7"),
        ("]C100106141412345678909", "(00)106141412345678909: check digit is 9, expected 8"),
        ("]C14141234567890123", "(414)1234567890123: check digit is 3, expected 8"),
        ("]d2010950110102091717261300", "(17) date 261300: month 13 does not exist"),
        ("]d2010950110102091717270230", "(17) date 270230: 2027-02 has no day 30"),
        ("]d20109501101020", "(01) data '09501101020' is too short for its format N2+N14 (trunc"),
        ("]d20109501<GS>21X", "(01) data '09501' is too short for its format N2+N14"),
        ("]d2010950110102091799", "(99) has no data"),
        ("]d210<GS>21X", "(10) has no data"),
        ("]d2", "no data after the symbology identifier"),
        ("", "empty scan"),
        ("   ", "empty scan"),
        ("]d2010950110102091730", "(30) has no data"),
        ("]C12310", "no GS1 Application Identifier at position 0: '2310'"),
        ("]d210ABC<GS>10ABD", "(10) appears twice with different values: 'ABC' and 'ABD'"),
        (
            "]d210ABC\x0721X",
            "character '\\x07' at position 5 is not allowed in GS1 element strings",
        ),
        ("]d201٠٩٥٠١١٠١٠٢٠٩١٧", "character '٠' at position 2 is not allowed"),
        ("]d210" + "A" * 21, "(10) data runs past its maximum length (N2+X..20) with no <GS>"),
        ("]d270062601", "(7006) data '2601' is too short for its format N4+N6 (truncated?)"),
        ("]d21726013", "(17) data '26013' is too short"),
        ("]d21726013A", "(17) data '26013A' does not match its format N2+N6"),
        ("]d27006260100", "(7006) date 260100: 2026-01 has no day 00"),
        ("]d270032601012460", "(7003) time 2460 is not a valid time of day"),
    ],
)
def test_invalid_gs1_reports_reason(text: str, reason: str) -> None:
    result = scan(text)
    assert result.error is not None
    assert result.error.startswith(reason), result.error
    assert not result.ok
    assert result.elements == ()
    assert result.problem == result.error


def test_identical_repeats_are_allowed_and_kept_once() -> None:
    result = scan("]d210ABC<GS>10ABC")
    assert result.ok
    assert len(result.elements) == 2
    assert result.ai == {"10": "ABC"}


def test_datetime_ais() -> None:
    result = scan("]d27003261231235943242612319999<GS>800826123112")
    assert result.ok, result.problem
    assert [e.date for e in result.elements] == [date(2026, 12, 31)] * 3


def test_date_range_ai_7007() -> None:
    ok = scan("]d27007210101210131")
    assert ok.ok
    assert ok.elements[0].date == date(2021, 1, 1)
    assert scan("]d27007210101211331").error == "(7007) date 211331: month 13 does not exist"


# -- century rule (General Specifications §7.12) ----------------------------------------------


@pytest.mark.parametrize(
    ("ref", "yy", "year"),
    [
        (date(2026, 11, 21), "75", 2075),  # +49: this century
        (date(2026, 11, 21), "76", 2076),  # +50: this century
        (date(2026, 11, 21), "77", 1977),  # +51: previous century
        (date(2026, 11, 21), "00", 2000),
        (date(2075, 1, 1), "25", 2125),  # -50: next century
        (date(2075, 1, 1), "26", 2026),  # -49: this century
        (date(2099, 6, 1), "00", 2100),  # -99: next century
        (date(2001, 6, 1), "99", 1999),  # +98: previous century
        (date(2000, 1, 1), "50", 2050),
        (date(2000, 1, 1), "51", 1951),
    ],
)
def test_century_rule(ref: date, yy: str, year: int) -> None:
    result = scan(f"17{yy}0101", ref)
    assert result.elements[0].date == date(year, 1, 1)


def test_day_00_uses_the_resolved_century_for_february() -> None:
    # 2000 is a leap year, 2100 is not: "000200" means a different last day.
    assert scan("17000200", date(2026, 1, 1)).elements[0].date == date(2000, 2, 29)
    assert scan("17000200", date(2099, 1, 1)).elements[0].date == date(2100, 2, 28)
    assert scan("17000229", date(2099, 1, 1)).error == "(17) date 000229: 2100-02 has no day 29"


# -- ambiguity ------------------------------------------------------------------------------------


def test_lot_followed_by_expiry_without_gs_is_flagged() -> None:
    result = scan("]d2010950110102091710ABCD123417261231")
    assert result.error is None
    assert not result.ok
    assert result.ai["10"] == "ABCD123417261231"  # the spec reading, not a guess
    (ambiguity,) = result.ambiguities
    assert ambiguity.ai == "10"
    assert ambiguity.alternatives == ("(10)ABCD1234(17)261231",)
    assert result.problem is not None
    assert "(10)ABCD1234(17)261231" in result.problem


def test_alternative_may_continue_with_a_variable_field() -> None:
    result = scan("]d2010950110102091710A1726123121B")
    (ambiguity,) = result.ambiguities
    assert ambiguity.alternatives == ("(10)A(17)261231(21)B",)


def test_ambiguity_in_the_middle_of_a_scan() -> None:
    result = scan("]d210ABC17261231<GS>21XYZ")
    assert [a.alternatives for a in result.ambiguities] == [("(10)ABC(17)261231",)]


@pytest.mark.parametrize(
    "text",
    [
        "]d2010950110102091710ABCD1234<GS>17261231",  # separated properly
        "]Q3010061414112345210ABC123",  # "123" is no valid element string
        "]d2010950110102091710X21Y",  # variable-length tails are not suspected
        "]d2010950110102091710ABC17261331",  # month 13: the tail is no valid element
        "]d2010950110102091717261231<GS>10ABC17270101",  # alternative would repeat (17) differently
        "]d2010950110102091710ABC0109501101020918",  # tail GTIN with a bad check digit
    ],
)
def test_not_ambiguous(text: str) -> None:
    result = scan(text)
    assert result.ok, result.problem


# -- GS1 Digital Link ---------------------------------------------------------------------------


def test_digital_link() -> None:
    result = scan("]Q1https://id.gs1.org/01/09506000134352/10/AB%2FC?17=261231")
    assert result.ok, result.problem
    assert result.kind == "gs1_digital_link"
    assert result.ai == {"01": "09506000134352", "10": "AB/C", "17": "261231"}
    assert result.elements[2].date == date(2026, 12, 31)


def test_digital_link_with_bad_check_digit_is_an_error() -> None:
    result = scan("https://id.gs1.org/01/09506000134353")
    assert result.kind == "gs1_digital_link"
    assert result.error == "(01)09506000134353: check digit is 3, expected 2"


# -- properties -----------------------------------------------------------------------------------

gs1_alphabet = st.sampled_from(sorted(CSET82 | {GS}))
prefixes = st.sampled_from(["", "]d2", "]C1", "]Q3", "]e0", "]C0", "]Q1", "https://x.org/"])


@given(st.text())
@settings(max_examples=400)
def test_any_text_never_raises(text: str) -> None:
    _check_invariants(parse_scan(text, reference_date=REF))


@given(st.binary())
@settings(max_examples=200)
def test_any_bytes_never_raise(data: bytes) -> None:
    _check_invariants(parse_scan(data.decode("latin-1"), reference_date=REF))


@given(prefixes, st.text(alphabet=gs1_alphabet, max_size=60))
@settings(max_examples=600)
def test_gs1_like_text_never_raises(prefix: str, body: str) -> None:
    _check_invariants(parse_scan(prefix + body, reference_date=REF))


def _check_invariants(result: ScanResult) -> None:
    as_json = json.loads(json.dumps(result.as_dict()))
    assert as_json["raw"].isprintable()
    if result.error is not None:
        assert result.elements == ()
        assert not result.ok
    if result.kind == "non_gs1":
        assert result.elements == ()
    if result.ok and result.kind != "non_gs1":
        assert result.elements
        assert result.hri == "".join(f"({e.ai}){e.value}" for e in result.elements)
        assert list(result.ai) == list(dict.fromkeys(e.ai for e in result.elements))


# Generators for valid element strings: (ai, value, expected date, needs <GS> when not last).
Generated = tuple[str, str, date | None]


def _with_check_digit(payload: str) -> str:
    return payload + str(gs1_check_digit(payload))


def _fixed_digits(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789", min_size=n, max_size=n)


@st.composite
def gs1_dates(draw: st.DrawFn, ai: str, *, day_00: bool = True, hhmm: bool = False) -> Generated:
    year = draw(st.integers(REF.year - 49, REF.year + 50))  # the §7.12 window around REF
    month = draw(st.integers(1, 12))
    last = (date(year + month // 12, month % 12 + 1, 1) - date(year, month, 1)).days
    day = draw(st.integers(0 if day_00 else 1, last))
    value = f"{year % 100:02d}{month:02d}{day:02d}"
    if hhmm:
        value += f"{draw(st.integers(0, 23)):02d}{draw(st.integers(0, 59)):02d}"
    return ai, value, date(year, month, day or last)


cset82_text = st.text(alphabet=sorted(CSET82), min_size=1, max_size=20)

element_strategies: dict[str, st.SearchStrategy[Generated]] = {
    "00": _fixed_digits(17).map(lambda p: ("00", _with_check_digit(p), None)),
    "01": _fixed_digits(13).map(lambda p: ("01", _with_check_digit(p), None)),
    "10": cset82_text.map(lambda v: ("10", v, None)),
    "21": cset82_text.map(lambda v: ("21", v, None)),
    "11": gs1_dates("11"),
    "15": gs1_dates("15"),
    "17": gs1_dates("17"),
    "30": st.integers(0, 99_999_999).map(lambda n: ("30", str(n), None)),
    "37": st.integers(0, 99_999_999).map(lambda n: ("37", str(n), None)),
    "3103": _fixed_digits(6).map(lambda v: ("3103", v, None)),
    "7003": gs1_dates("7003", day_00=False, hhmm=True),
}


@st.composite
def gs1_messages(draw: st.DrawFn) -> tuple[str, list[Generated]]:
    ais = draw(st.lists(st.sampled_from(sorted(element_strategies)), min_size=1, unique=True))
    elements = [draw(element_strategies[ai]) for ai in ais]
    parts: list[str] = [draw(st.sampled_from(["", "]d2", "]C1", "]Q3"]))]
    for index, (ai, value, _) in enumerate(elements):
        parts.append(ai + value)
        variable = ai in ("10", "21", "30", "37", "7003")  # 7003 is fixed but needs a <GS>
        last = index == len(elements) - 1
        if (variable and not last) or (draw(st.booleans()) and draw(st.booleans())):
            parts.append(GS)  # required after variable fields, allowed after any field
    return "".join(parts), elements


@given(gs1_messages())
@settings(max_examples=400)
def test_valid_messages_round_trip(message: tuple[str, list[Generated]]) -> None:
    text, expected = message
    result = parse_scan(text, reference_date=REF)
    assert result.error is None, (text, result.error)
    got = elements_of(result)
    assert [(ai, value) for ai, value, _ in got] == [(ai, value) for ai, value, _ in expected]
    for (ai, _, resolved), element in zip(expected, result.elements, strict=True):
        assert element.date == resolved
        if ai in ("11", "15", "17"):
            assert element.day_omitted == element.value.endswith("00")
    assert result.hri == "".join(f"({ai}){value}" for ai, value, _ in expected)
    for ambiguity in result.ambiguities:
        # Flags only ever concern variable-length fields, re-read as that field plus more.
        assert ambiguity.ai in ("10", "21", "30", "37")
        for alternative in ambiguity.alternatives:
            assert alternative.startswith(f"({ambiguity.ai})")
            assert len(alternative) > len(f"({ambiguity.ai}){ambiguity.value}")


def test_element_dataclass_is_frozen() -> None:
    element = Element("10", "A", "BATCH/LOT")
    with pytest.raises(AttributeError):
        element.value = "B"  # type: ignore[misc]
