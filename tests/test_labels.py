"""Real labels (issue 15 items 2 and 3): GS1 Digital Link URIs with invalid data are rejected
like the same data as element strings, not kept as a valid web address; the bracketed
human-readable form printed under every barcode is parsed and validated."""

from __future__ import annotations

from datetime import date

import pytest
from typer.testing import CliRunner

from gxpgate.agent.cli.main import app
from gxpgate.drivers.gs1 import parse_scan

REF = date(2026, 12, 5)
DL = "https://id.gs1.org/01/09506000134352/10/"


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        (DL + "ABC?17=271340", "(17) date 271340: month 13 does not exist"),
        (DL + "ABCDEFGHIJKLMNOPQRSTU", "(10) data runs past its maximum length"),
        (DL + "AB%23C", "character '#'"),
        (DL + "AB%E9C", "character 'é'"),
        (DL + "AB%20C", "character ' '"),
        ("https://id.gs1.org/01/095060001343521", "no GS1 Application Identifier"),
    ],
)
def test_digital_link_with_invalid_data_is_an_invalid_scan(uri: str, reason: str) -> None:
    scan = parse_scan(uri, reference_date=REF)
    assert scan.kind == "gs1_digital_link"
    assert not scan.ok
    assert reason in (scan.error or "")
    result = CliRunner().invoke(app, ["scan", "decode", uri])
    assert result.exit_code == 2, result.output


def test_valid_digital_links_and_plain_urls_are_what_they_were() -> None:
    scan = parse_scan(DL + "ABC?17=271231&linkType=gs1:pip", reference_date=REF)
    assert scan.ok
    assert scan.ai == {"01": "09506000134352", "10": "ABC", "17": "271231"}
    plain = parse_scan("https://example.com/products/01/", reference_date=REF)
    assert (plain.kind, plain.ok) == ("non_gs1", True)


def test_the_bracketed_human_readable_form_is_parsed_and_validated() -> None:
    text = "(01)09506000134352(17)271231(10)LOT-42(21)SN0001"
    scan = parse_scan(text, reference_date=REF)
    assert (scan.kind, scan.ok) == ("gs1", True)
    assert scan.ai == {"01": "09506000134352", "17": "271231", "10": "LOT-42", "21": "SN0001"}
    wrong = parse_scan("(01)09506000134353(17)271231(10)LOT-42", reference_date=REF)
    assert not wrong.ok
    assert "check digit" in (wrong.error or "")
    month = parse_scan("(01)09506000134352(17)271340", reference_date=REF)
    assert "month 13 does not exist" in (month.error or "")
    result = CliRunner().invoke(app, ["scan", "decode", "(01)09506000134353(10)X"])
    assert result.exit_code == 2
