"""Units and unmonitored points (issue 14 item 13): a unit written as a label prints it would
switch a cold room's rules off without a word; now it is refused with the UCUM code to write,
and a point no rule watches in a zone with a storage profile is named, unless it says
``monitored = false``."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gxpgate.agent.alarms.points import point_rules
from gxpgate.agent.cli.main import app
from gxpgate.config import load_config

runner = CliRunner()

PROBE = """
[devices.probe-7]
type = "modbus_tcp"
host = "127.0.0.1"
unit_id = 1
zone = "cold-1"
points.temperature = {{ table = "input", address = 0, type = "float32"{extra} }}
"""


def validate(write_config, extra: str, more: str = "") -> tuple[int, str]:
    config = write_config(modbus=False, extra_devices=PROBE.format(extra=extra) + more)
    result = runner.invoke(app, ["config", "validate", str(config)])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("unit", "code"), [("°C", "Cel"), ("degC", "Cel"), ("C", "Cel"), ("%RH", "%")]
)
def test_a_common_spelling_is_refused_with_the_code_to_write(
    write_config, unit: str, code: str
) -> None:
    status, output = validate(write_config, f', unit = "{unit}"')
    assert status == 2, output
    assert "devices.probe-7.points.temperature.unit" in output
    assert f"is not a UCUM code: write '{code}'" in output


def test_an_unknown_unit_is_refused_with_the_list(write_config) -> None:
    status, output = validate(write_config, ', unit = "furlongs"')
    assert status == 2
    assert "unit 'furlongs' is not one gxpgate knows; use a UCUM code: Cel, " in output


def test_a_point_no_rule_watches_is_named_with_the_ways_out(write_config) -> None:
    status, output = validate(write_config, "")  # no unit: "1", no quantity, no rule
    assert status == 2, output
    assert (
        "devices.probe-7.points.temperature: unmonitored: no rule watches it (unit '1';" in output
    )
    assert "monitored = false" in output


def test_monitored_false_or_a_point_rule_makes_it_valid(write_config, tmp_path: Path) -> None:
    status, output = validate(write_config, ", monitored = false")
    assert status == 0, output
    rule = '\n[zones.cold-1.points."probe-7.temperature"]\nhigh = { limit = 8.0 }\n'
    status, output = validate(write_config, "", rule)
    assert status == 0, output


def test_a_cel_point_gets_its_profiles_rules_and_an_unmonitored_one_none(write_config) -> None:
    config = write_config(modbus=False, extra_devices=PROBE.format(extra=', unit = "Cel"'))
    loaded = load_config(config)
    rules = {(r.device, r.point): r.rules for r in point_rules(loaded.config)}
    assert rules[("probe-7", "temperature")].watches()
    config.write_text(config.read_text().replace('unit = "Cel"', 'unit = "Cel", monitored = false'))
    rules = {(r.device, r.point): r.rules for r in point_rules(load_config(config).config)}
    assert not rules[("probe-7", "temperature")].watches()


def test_errors_of_unrelated_sections_come_in_one_pass(write_config) -> None:
    config = write_config(modbus=False, extra_devices=PROBE.format(extra=""))
    config.write_text(config.read_text().replace('id = "gw-test"', 'id = "GW_1"'))
    result = runner.invoke(app, ["config", "validate", str(config)])
    assert result.exit_code == 2
    assert "gateway.id: 'GW_1' must be 1 to 63 lowercase letters" in result.output
    assert "devices.probe-7.points.temperature: unmonitored" in result.output
