"""``gxpgate scan decode``: the sub-app on its own, through Typer's test runner."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from gxpgate.agent.cli.scan import app, scan_text

from .vectors import load_vectors

VECTORS = load_vectors()
REF = ["--date", "2026-11-21"]

runner = CliRunner()


def run(*args: str) -> tuple[int, dict[str, Any] | None, str]:
    result = runner.invoke(app, ["decode", *args])
    output = json.loads(result.stdout) if result.stdout.strip() else None
    return result.exit_code, output, result.stderr


@pytest.mark.parametrize("spelling", ["<GS>", "<gs>", "\\x1d", "\\x1D", "\x1d"])
@pytest.mark.parametrize(
    "vector", VECTORS["gs1_scans"], ids=[v["input_repr"] for v in VECTORS["gs1_scans"]]
)
def test_gs1_vectors(vector: dict[str, Any], spelling: str) -> None:
    code, output, stderr = run(vector["input_repr"].replace("<GS>", spelling), *REF)
    assert code == 0, stderr
    assert output is not None
    assert output["symbology"] == vector["symbology"]
    assert output["hri"] == vector["hri"]
    assert [{k: e[k] for k in ("ai", "value", "date")} for e in output["elements"]] == vector[
        "elements"
    ]
    assert stderr == ""


@pytest.mark.parametrize("vector", VECTORS["epc"], ids=[v["scheme"] for v in VECTORS["epc"]])
def test_epc_vectors(vector: dict[str, Any]) -> None:
    for args in (["--epc", vector["hex"]], ["--epc", "3000" + vector["hex"], "--pc"]):
        code, output, stderr = run(*args)
        assert code == 0, stderr
        assert output is not None
        assert output["pure_uri"] == vector["pure_uri"]
        assert output["element_string"] == vector["element_string"]


def test_date_sets_the_century() -> None:
    _, in_2026, _ = run("17600101", "--date", "2026-11-21")
    _, in_2000, _ = run("17600101", "--date", "2000-01-01")
    assert in_2026 is not None
    assert in_2000 is not None
    assert in_2026["elements"][0]["date"] == "2060-01-01"
    assert in_2000["elements"][0]["date"] == "1960-01-01"


def test_date_defaults_to_today() -> None:
    code, output, _ = run("10ABC")
    assert code == 0
    assert output is not None
    assert output["ai"] == {"10": "ABC"}


def test_non_gs1_is_printed_raw() -> None:
    code, output, _ = run("]C0HELLO\\x1d")
    assert code == 0
    assert output is not None
    assert output["kind"] == "non_gs1"
    assert output["raw"] == "]C0HELLO\\x1d"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["]d20109501101020918", *REF], "(01)09501101020918: check digit is 8, expected 7"),
        (["]d2010950110102091717261300", *REF], "(17) date 261300: month 13 does not exist"),
        (["]C10109501101", *REF], "(01) data '09501101' is too short for its format N2+N14"),
        (["", *REF], "empty scan"),
        (["]d2010950110102091710ABCD123417261231", *REF], "ambiguous: (10)ABCD123417261231"),
        (["--epc", "3474257BF7194E4000001A85"], "EPC 3474257BF7194E4000001A85: EPC header 0x34"),
        (["--epc", "xyz"], "EPC xyz: not hexadecimal"),
        (["--epc", ""], "EPC (empty): empty EPC"),
        (["--epc", "3000", "--pc"], "EPC 3000: PC word gives 96 EPC bits"),
    ],
)
def test_invalid_input_exits_2_with_reason(args: list[str], reason: str) -> None:
    code, output, stderr = run(*args)
    assert code == 2
    assert stderr.startswith(f"gxpgate: {reason}"), stderr
    assert output is not None
    assert output["ok"] is False


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ([], "give either TEXT or --epc HEX"),
        (["10ABC", "--epc", "30"], "give either TEXT or --epc HEX"),
        (["10ABC", "--pc"], "--pc applies to --epc only"),
        (["--epc", "30", "--date", "2026-01-01"], "--date applies to barcode text, not to --epc"),
        (["10ABC", "--date", "21.11.2026"], "--date: not a date (YYYY-MM-DD): '21.11.2026'"),
    ],
)
def test_bad_usage_exits_2(args: list[str], reason: str) -> None:
    code, output, stderr = run(*args)
    assert code == 2
    assert output is None
    assert stderr == f"gxpgate: {reason}\n"


def test_scan_text_spellings() -> None:
    assert scan_text("a<GS>b\\x1dc\x1dd<gs>e") == "a\x1db\x1dc\x1dd\x1de"
    assert scan_text("\\\\x") == "\\\\x"


def test_help_lists_decode() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "decode" in result.stdout
