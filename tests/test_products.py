"""Product master and hold list: CSV parsing and validation (every problem named by file and
line), inline entries, lookups (exact GTIN over prefix, longest prefix), and `config validate`.

Malformed files are data (tests/cases/products/*_malformed.csv): each ``# error: TEXT`` comment
says what the problems of the next data line must contain."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gxpgate.agent.cli.main import app
from gxpgate.agent.evidence import generate_key_file
from gxpgate.config import load_config
from gxpgate.config.policy_files import load_policy, parse_hold_csv, parse_products_csv
from gxpgate.config.products import (
    HoldEntry,
    HoldList,
    PolicyError,
    Problem,
    ProductFlag,
    ProductMaster,
    ProductRule,
)
from gxpgate.config.rules_model import StorageProfile

CASES = Path(__file__).parent / "cases" / "products"
SITE_PROFILES = {
    "vaccine-fridge": StorageProfile(description="Vaccines", extends="refrigerated"),
}
runner = CliRunner()


def expected_errors(path: Path) -> dict[int, list[str]]:
    """Line number → the texts its problems must contain, from ``# error:`` comments."""
    expected: dict[int, list[str]] = {}
    pending: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("# error: "):
            pending.append(line.removeprefix("# error: "))
        elif pending and not line.startswith("#"):
            expected[number], pending = pending, []
    assert not pending, f"{path.name}: an '# error:' comment at the end names no line"
    return expected


def assert_problems_match(problems: list[Problem], path: Path) -> None:
    expected = expected_errors(path)
    assert expected, "a malformed case with no expected errors tests nothing"
    by_line: dict[int | None, list[str]] = {}
    for problem in problems:
        assert problem.path == str(path)
        assert str(problem).startswith(f"{path}:{problem.line}: ")
        by_line.setdefault(problem.line, []).append(problem.message)
    assert set(by_line) == set(expected), "lines with problems differ from the # error: lines"
    for line, texts in expected.items():
        assert len(by_line[line]) == len(texts), (line, by_line[line])
        for text in texts:
            assert any(text in message for message in by_line[line]), (line, text, by_line[line])


# -- products -----------------------------------------------------------------------------------


def test_products_csv_with_bom_comments_blank_lines_and_any_column_order() -> None:
    path = CASES / "products.csv"
    problems: list[Problem] = []
    rules = parse_products_csv(path.read_bytes(), path, SITE_PROFILES, problems)
    assert problems == []
    by_source = {rule.source: rule for rule in rules}
    assert by_source["products.csv:5"] == ProductRule(
        gtin="00614141000012",
        prefix=None,
        profile="vaccine-fridge",
        tos_allowance_hours=72.0,
        flags=frozenset({ProductFlag.DO_NOT_FREEZE}),
        name="Vaccine X, 10 x 0.5 ml",
        source="products.csv:5",
    )
    insulin = by_source["products.csv:6"]
    assert insulin.tos_allowance_hours == 36.5
    assert insulin.flags == {ProductFlag.DO_NOT_FREEZE, ProductFlag.DO_NOT_REFRIGERATE}
    tablets = by_source["products.csv:7"]
    assert (tablets.gtin, tablets.tos_allowance_hours, tablets.flags) == (
        "00614141000036",  # GTIN-13 right-justified, as AI 01 carries it
        None,
        frozenset(),
    )
    assert by_source["products.csv:9"].prefix == "00614141"
    assert by_source["products.csv:10"].tos_allowance_hours == 0.0
    assert by_source["products.csv:11"].flags == {ProductFlag.DO_NOT_FREEZE}
    assert len(rules) == 6  # the row of empty fields is no rule


def test_malformed_product_lines_are_all_reported_with_file_and_line() -> None:
    path = CASES / "products_malformed.csv"
    problems: list[Problem] = []
    rules = parse_products_csv(path.read_bytes(), path, SITE_PROFILES, problems)
    assert_problems_match(problems, path)
    assert [rule.source for rule in rules] == [
        "products_malformed.csv:2",
        "products_malformed.csv:33",
    ]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("profile,flags\nrefrigerated,\n", 1, "required column 'gtin' is missing"),
        ("gtin\n00614141000012\n", 1, "required column 'profile' is missing"),
        ("gtin,profile,shelf\n", 1, "unknown column 'shelf'; known: gtin, profile,"),
        ("gtin,profile,GTIN\n", 1, "column 'gtin' appears twice"),
        ("gtin;profile\n00614141000012;refrigerated\n", 1, "fields are separated by ','"),
        ("# only a comment\n\n", None, "no header row (columns: gtin,profile,"),
        ('gtin,profile\n"00614141000012,refrigerated\n', 2, "not a CSV line"),
        (b"gtin,profile\n00614141000012,caf\xe9\n".decode("latin-1"), 2, "not UTF-8 text"),
    ],
)
def test_product_file_structure_errors(
    tmp_path: Path, text: str, line: int | None, message: str
) -> None:
    path = tmp_path / "products.csv"
    raw = text.encode("latin-1")
    problems: list[Problem] = []
    assert parse_products_csv(raw, path, {}, problems) == []
    assert [(p.line, message in p.message) for p in problems] == [(line, True)], problems


def test_exact_gtin_beats_prefixes_and_the_longest_prefix_wins() -> None:
    def rule(key: str, profile: str) -> ProductRule:
        exact = not key.endswith("*")
        digits = key.rstrip("*")
        return ProductRule(
            gtin=digits if exact else None,
            prefix=None if exact else digits,
            profile=profile,
            tos_allowance_hours=None,
            flags=frozenset(),
            name=None,
            source="test",
        )

    master = ProductMaster(
        [
            rule("0*", "controlled-room"),
            rule("00614141*", "refrigerated"),
            rule("006141419*", "frozen"),
            rule("00614141999996", "cool"),
        ]
    )
    assert len(master) == 4

    def profile(gtin: str) -> str | None:
        found = master.lookup(gtin)
        return None if found is None else found.profile

    assert profile("00614141999996") == "cool"  # exact, though two prefixes match too
    assert profile("00614141999989") == "frozen"  # the longer of two prefixes
    assert profile("00614141000012") == "refrigerated"
    assert profile("04012345000016") == "controlled-room"
    assert profile("14012345000013") is None  # no prefix of it listed
    assert profile("0614141999996") == "cool"  # GTIN-13 as written on a label
    assert profile("0061414") is None  # not a GTIN: no prefix matches a fragment


def test_inline_and_file_entries_together_and_duplicates_across_them(tmp_path: Path) -> None:
    (tmp_path / "products.csv").write_text(
        "gtin,profile,tos_allowance_hours\n"
        "00614141000029,refrigerated,48\n"
        "0614141000012,refrigerated,\n",  # the inline GTIN, written as GTIN-13
        encoding="utf-8",
    )
    config = tmp_path / "gxpgate.toml"
    config.write_text(
        MINIMAL
        + """
[products]
file = "products.csv"
[[products.items]]
gtin = "00614141000012"
profile = "refrigerated"
[[products.items]]
gtin = "00614141*"
profile = "controlled-room"
""",
        encoding="utf-8",
    )
    loaded = load_config(config)
    with pytest.raises(PolicyError) as caught:
        load_policy(loaded.config, loaded.path)
    assert caught.value.lines() == [
        f"{tmp_path / 'products.csv'}:3: gtin 00614141000012 is already listed at "
        "gxpgate.toml:products.items.0"
    ]
    raw = b"gtin,profile,tos_allowance_hours\n00614141000029,refrigerated,48\n"
    (tmp_path / "products.csv").write_bytes(raw)
    policy = load_policy(loaded.config, loaded.path)
    inline = policy.product("00614141000012")
    assert inline is not None
    assert inline.source == "gxpgate.toml:products.items.0"
    from_file = policy.product("00614141000029")
    assert from_file is not None
    assert (from_file.source, from_file.tos_allowance_hours) == ("products.csv:2", 48.0)
    other = policy.product("00614141000036")
    assert other is not None
    assert other.profile == "controlled-room"
    source = policy.products_source
    assert source.path == tmp_path / "products.csv"
    assert source.sha256 == hashlib.sha256(raw).hexdigest()
    assert (source.entries, source.inline_entries) == (1, 2)
    assert source.inline_sha256 is not None
    assert policy.version.products_sha256 == source.sha256
    assert policy.holds_source.path is None
    assert policy.version.hold_list_sha256 is None
    assert policy.version.hold_list_inline_sha256 is None


# -- hold list ----------------------------------------------------------------------------------


def test_hold_list_csv_and_lookups() -> None:
    path = CASES / "holds.csv"
    problems: list[Problem] = []
    holds = HoldList(parse_hold_csv(path.read_bytes(), path, problems))
    assert problems == []
    assert len(holds) == 4
    lot_hold = holds.lookup("00614141000012", "L2305A", None)
    assert lot_hold == HoldEntry(
        "QA hold, deviation DEV-2026-114", "holds.csv:3", "00614141000012", "L2305A", None
    )
    # The same lot number is held for a second product (GTIN-13 in the file) but not a third.
    other = holds.lookup("00614141000029", "L2305A", None)
    assert other is not None
    assert other.source == "holds.csv:6"
    assert holds.lookup("00614141000036", "L2305A", None) is None
    assert holds.lookup(None, "L2305A", None) is None  # the lot alone does not say which
    recall = holds.lookup("04012345000016", "RCL-17", None)
    assert recall is not None
    assert (recall.gtin, recall.lot, recall.source) == (None, "RCL-17", "holds.csv:4")
    assert holds.lookup(None, "RCL-17", None) == recall
    assert holds.lookup(None, "rcl-17", None) is None  # AI 10 is case-sensitive
    pallet = holds.lookup("00614141000036", "X1", "106141411234567897")
    assert pallet is not None
    assert pallet.reason == "Pallet damaged in transit"
    assert holds.lookup(None, None, "106141419999999991") is None


def test_malformed_hold_lines_are_all_reported_with_file_and_line() -> None:
    path = CASES / "holds_malformed.csv"
    problems: list[Problem] = []
    entries = parse_hold_csv(path.read_bytes(), path, problems)
    assert_problems_match(problems, path)
    assert [entry.source for entry in entries] == ["holds_malformed.csv:2"]


def test_hold_file_needs_a_lot_or_sscc_column(tmp_path: Path) -> None:
    path = tmp_path / "holds.csv"
    problems: list[Problem] = []
    assert parse_hold_csv(b"gtin,reason\n", path, problems) == []
    assert [str(p) for p in problems] == [f"{path}:1: the header needs a column 'lot' or 'sscc'"]


# -- the config's inline entries and `gxpgate config validate` ----------------------------------


MINIMAL = """
[gateway]
id = "gw-test"
site = "Test"
[signing]
key_file = "signing.key"
[buffer]
path = "buffer.db"
[zones.cold]
profile = "refrigerated"
"""


@pytest.mark.parametrize(
    ("extra", "where", "why"),
    [
        (
            '[[products.items]]\ngtin = "00614141000011"\nprofile = "refrigerated"\n',
            "products.items.0.gtin",
            "gtin '00614141000011' fails its check digit",
        ),
        (
            '[[products.items]]\ngtin = "00614141000012"\nprofile = "fridge"\n',
            "products.items.0.profile",
            "unknown storage profile 'fridge'",
        ),
        (
            '[[products.items]]\ngtin = "00614141*"\nprofile = "cool"\nflags = ["keep_cold"]\n',
            "products.items.0.flags.0",
            "'do_not_freeze' or 'do_not_refrigerate'",
        ),
        (
            '[[products.items]]\ngtin = "00614141*"\nprofile = "cool"\ntos_allowance_hours = -2\n',
            "products.items.0.tos_allowance_hours",
            "greater than or equal to 0",
        ),
        (
            '[[products.items]]\ngtin = "0614141*"\nprofile = "cool"\n'
            '[[products.items]]\ngtin = "0614141*"\nprofile = "frozen"\n',
            "products",
            "items 0 and 1 both list gtin prefix 0614141*",
        ),
        (
            '[[hold_list.items]]\nsscc = "106141411234567890"\nreason = "damaged"\n',
            "hold_list.items.0.sscc",
            "fails its check digit",
        ),
        (
            '[[hold_list.items]]\ngtin = "00614141000012"\nreason = "recall"\n',
            "hold_list.items.0",
            "a gtin alone is not a hold",
        ),
        (
            '[[hold_list.items]]\nlot = "L1"\nreason = " "\n',
            "hold_list.items.0.reason",
            "' ' must not be blank",
        ),
        (
            '[[hold_list.items]]\nlot = "L1"\nreason = "a"\n'
            '[[hold_list.items]]\nlot = "L1"\nreason = "b"\n',
            "hold_list",
            "items 0 and 1 both list lot 'L1'",
        ),
        ('[products]\nfile = "products.csv"\ncolumns = 5\n', "products.columns", "unknown key"),
    ],
)
def test_inline_entry_errors_name_the_field(
    tmp_path: Path, extra: str, where: str, why: str
) -> None:
    path = tmp_path / "gxpgate.toml"
    path.write_text(MINIMAL + extra, encoding="utf-8")
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 2, result.output
    assert f"{path}: {where}: " in result.stderr
    assert why in result.stderr


def test_config_validate_checks_the_files_and_exits_2_naming_file_and_line(
    tmp_path: Path,
) -> None:
    products = tmp_path / "erp" / "products.csv"
    products.parent.mkdir()
    products.write_text(
        "gtin,profile,flags\n00614141000012,refrigerated,do_not_freeze\n", encoding="utf-8"
    )
    holds = tmp_path / "holds.csv"
    holds.write_text("lot,reason\nL1,QA hold\n", encoding="utf-8")
    path = tmp_path / "gxpgate.toml"
    generate_key_file(tmp_path / "signing.key")  # validate checks what run needs, the key too
    path.write_text(
        MINIMAL + '[products]\nfile = "erp/products.csv"\n[hold_list]\nfile = "holds.csv"\n'
        "[metrics]\nenabled = false\n",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert f"{products}: valid — products, 1 entries; sha256 " in result.output
    assert f"{holds}: valid — hold list, 1 entries" in result.output

    products.write_text(
        "gtin,profile,flags\n"
        "00614141000012,refrigerated,do_not_freeze\n"
        "# a comment line\n"
        "00614141000011,refrigerated,\n"
        "00614141000029,refrigerated,no_ice\n",
        encoding="utf-8",
    )
    holds.unlink()
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{products}:4: gtin '00614141000011' fails its check digit",
        f"{products}:5: flag 'no_ice' is unknown; flags: do_not_freeze, do_not_refrigerate",
        f"{holds}: file not found (hold_list.file)",
    ]
