"""Config loading: the example is valid and complete; every error names file, path and reason."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from gxpgate.agent.cli.main import app
from gxpgate.config import example_config_text, load_config
from gxpgate.config.exceptions_model import ExceptionsConfig
from gxpgate.config.model import ClockConfig, GatewayConfig, MetricsConfig, UplinkConfig, ZoneConfig
from gxpgate.config.mqtt_model import MqttUplinkConfig
from gxpgate.config.products import HoldItem, HoldListConfig, ProductItem, ProductsConfig
from gxpgate.config.profiles import BUILTIN_PROFILES
from gxpgate.config.rules_model import (
    AlarmRoutes,
    AlarmsConfig,
    CoilOutput,
    CommLossRule,
    FaultRule,
    LimitRule,
    MktRule,
    MqttAlarmOutput,
    QuantityRules,
    RateRule,
    StorageProfile,
)
from gxpgate.drivers.filedrop_model import CsvColumn, CsvDropDevice
from gxpgate.drivers.logger_model import LoggerPoint, SerialLoggerDevice
from gxpgate.drivers.modbus_model import ModbusPoint, ModbusRtuBus, ModbusRtuDevice, ModbusTcpDevice
from gxpgate.drivers.opcua_model import OpcUaDevice, OpcUaPoint, OpcUaSecurity
from gxpgate.drivers.scanner_model import BarcodeScannerDevice, RfidReaderDevice
from gxpgate.drivers.serial_model import SerialLine

runner = CliRunner()


def test_example_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "example.toml"
    result = runner.invoke(app, ["config", "example"])
    assert result.exit_code == 0
    path.write_text(result.output)
    loaded = load_config(path)
    assert loaded.config.gateway.id == "gw-basel-dc1"
    assert (
        loaded.config.devices["cold-room-1-probe"].points["temperature"].calibration_offset == -0.1
    )
    check = runner.invoke(app, ["config", "validate", "--syntax-only", str(path)])
    assert check.exit_code == 0, check.output
    assert "valid" in check.output
    # On this machine there is no /etc/gxpgate/signing.key: what `run` needs is checked too.
    full = runner.invoke(app, ["config", "validate", str(path)])
    assert full.exit_code == 2
    assert "signing.key_file: /etc/gxpgate/signing.key: no such key file" in full.output


def _field_names(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields)


@pytest.mark.parametrize(
    "model",
    [
        GatewayConfig,
        ModbusTcpDevice,
        ModbusRtuDevice,
        ModbusRtuBus,
        ModbusPoint,
        OpcUaDevice,
        OpcUaPoint,
        OpcUaSecurity,
        CsvDropDevice,
        CsvColumn,
        SerialLoggerDevice,
        LoggerPoint,
        SerialLine,
        BarcodeScannerDevice,
        RfidReaderDevice,
        ZoneConfig,
        StorageProfile,
        QuantityRules,
        LimitRule,
        RateRule,
        MktRule,
        FaultRule,
        CommLossRule,
        AlarmsConfig,
        MqttAlarmOutput,
        CoilOutput,
        AlarmRoutes,
        ClockConfig,
        MetricsConfig,
        UplinkConfig,
        MqttUplinkConfig,
        ProductsConfig,
        ProductItem,
        HoldListConfig,
        HoldItem,
        ExceptionsConfig,
    ],
)
def test_example_documents_every_field(model: type[BaseModel]) -> None:
    # Every key a user can set appears in the example, set or commented out.
    text = example_config_text()
    missing = [
        name
        for name in _field_names(model)
        if f"{name} =" not in text and f"[{name}" not in text and f".{name}" not in text
    ]
    assert not missing, f"example.toml does not show {model.__name__} fields {missing}"
    for sub in ("gateway", "signing", "buffer"):  # [uplink]: both variants are in the list
        section = GatewayConfig.model_fields[sub].annotation
        names = _field_names(
            section
            if isinstance(section, type)
            else GatewayConfig.model_fields[sub].annotation.__args__[0]
        )
        absent = [n for n in names if f"{n} =" not in text]
        assert not absent, f"[{sub}] keys missing from the example: {absent}"


def _example_with(tmp_path: Path, old: str, new: str) -> Path:
    text = example_config_text()
    assert old in text
    path = tmp_path / "site.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "where", "why"),
    [
        (
            "unit_id = 1\n",
            "unit_id = 1\nunit_idd = 2\n",
            "devices.cold-room-1-probe.unit_idd",
            "unknown key",
        ),
        (
            'type = "float32"',
            'type = "float"',
            "devices.cold-room-1-probe.points.temperature.type",
            "'float32'",
        ),
        (
            "port = 502",
            "port = 70000",
            "devices.cold-room-1-probe.port",
            "less than or equal to 65535",
        ),
        (
            'type = "modbus_tcp"\nhost = "192.0.2.10"',
            'type = "bacnet"\nhost = "192.0.2.10"',
            "devices.cold-room-1-probe",
            "unknown device type 'bacnet'",
        ),
        (
            'profile = "refrigerated"',
            'profile = "fridge"',
            "zones.cold-room-1",
            "unknown storage profile 'fridge'",
        ),
        (
            'zone = "cold-room-1"\npoll',
            'zone = "cold-room-9"\npoll',
            "devices.cold-room-1-probe.zone",
            "unknown zone 'cold-room-9'",
        ),
        (
            'id = "gw-basel-dc1"',
            'id = "GW Basel"',
            "gateway.id",
            "'GW Basel' must be 1 to 63 lowercase letters, digits or hyphens, starting with",
        ),
        (
            'table = "discrete"',
            'table = "holding"',
            "devices.cold-room-1-probe.points.door_open",
            "registers need a type",
        ),
        (
            'token_file = "/etc/gxpgate/uplink.token"',
            'token_file = "/etc/gxpgate/uplink.token"\ntoken = "s3cret-value"',
            "uplink",
            "set token or token_file, not both",
        ),
    ],
)
def test_errors_name_file_path_and_reason(
    tmp_path: Path, old: str, new: str, where: str, why: str
) -> None:
    path = _example_with(tmp_path, old, new)
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}: {where}" in result.stderr
    assert why in result.stderr
    assert "Traceback" not in result.stderr


def test_secret_never_echoed_in_errors(tmp_path: Path) -> None:
    path = _example_with(tmp_path, 'token_file = "/etc/gxpgate/uplink.token"', "token = 123456789")
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 2
    assert "uplink.token" in result.stderr
    assert "123456789" not in result.stderr


def test_missing_unreadable_and_broken_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    result = runner.invoke(app, ["config", "validate", str(missing)])
    assert result.exit_code == 2
    assert f"{missing}: file not found" in result.stderr

    broken = tmp_path / "broken.toml"
    broken.write_text("[gateway\nid = 1\n")
    result = runner.invoke(app, ["config", "validate", str(broken)])
    assert result.exit_code == 2
    assert f"{broken}: invalid TOML" in result.stderr
    assert "line 1" in result.stderr

    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    result = runner.invoke(app, ["config", "validate", str(binary)])
    assert result.exit_code == 2
    assert "not UTF-8" in result.stderr


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    text = example_config_text().replace('"/var/lib/gxpgate/buffer.db"', '"state/buffer.db"')
    path = tmp_path / "site.toml"
    path.write_text(text)
    cfg = load_config(path).config
    assert cfg.buffer.path == tmp_path / "state" / "buffer.db"
    assert tomllib.loads(text)["buffer"]["path"] == "state/buffer.db"


def test_config_env_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GXPGATE_CONFIG", str(tmp_path / "env.toml"))
    result = runner.invoke(app, ["buffer", "status"])
    assert result.exit_code == 2
    assert f"{tmp_path / 'env.toml'}: file not found" in result.stderr


@pytest.mark.parametrize(
    ("old", "new", "where", "why"),
    [
        (
            'node_id = "ns=2;s=freezer-1.temperature"\n',
            'node_id = "ns=2;s=freezer-1.temperature"\nbrowse_path = "0:Objects/x"\n',
            "devices.freezer-bms.points.temperature",
            "exactly one of node_id or browse_path",
        ),
        (
            'mode = "SignAndEncrypt"',
            'mode = "None"',
            "devices.freezer-bms.security",
            "policy None goes with mode None",
        ),
        (
            'server_certificate_file = "/etc/gxpgate/opcua/freezer-bms.der"\n',
            "",
            "devices.freezer-bms.security",
            "needs server_certificate_file",
        ),
        (
            'endpoint = "opc.tcp://192.0.2.20:4840/"',
            'endpoint = "http://192.0.2.20/"',
            "devices.freezer-bms.endpoint",
            "'http://192.0.2.20/' must be an opc.tcp:// URL with a host",
        ),
        (
            'mode = "subscription"',
            'mode = "push"',
            "devices.freezer-bms.mode",
            "'subscription' or 'polling'",
        ),
    ],
)
def test_opcua_config_errors(tmp_path: Path, old: str, new: str, where: str, why: str) -> None:
    path = _example_with(tmp_path, old, new)
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}: {where}" in result.stderr
    assert why in result.stderr


def test_every_builtin_profile_is_cited_and_documented() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    for name, profile in BUILTIN_PROFILES.items():
        assert f"| `{name}` |" in readme, f"README's profile table lacks {name}"
        if profile.temperature or profile.humidity:
            assert profile.citation, f"built-in profile {name} has rules but no citation"


def test_zone_overrides_and_site_profiles_are_checked(tmp_path: Path) -> None:
    text = example_config_text()
    text = text.replace('profile = "controlled-room"', 'profile = "vaccine-fridg"', 1)
    text = text.replace('profile = "frozen"', 'profile = "loop-a"', 1)
    text = text.replace("high = { limit = 7.5,", "low = { limit = 9.0 }\nhigh = { limit = 7.5,", 1)
    text += """
[profiles.loop-a]
description = "a"
extends = "loop-b"

[profiles.loop-b]
description = "b"
extends = "loop-a"

[zones.dock-1.points."no-such-device.temperature"]
high = { limit = 1.0 }
"""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 2
    out = result.output
    assert "low (9) is above high (7.5)" in out
    # Field errors stop before the cross-references; fix that one and look at the rest.
    path.write_text(text.replace("low = { limit = 9.0 }\n", "", 1))
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 2
    out = result.output
    assert "zones.ambient-a.profile: unknown storage profile 'vaccine-fridg'" in out
    assert "zones.freezer-1.profile: profiles extend each other in a cycle" in out
    assert "zones.dock-1.points.no-such-device.temperature: no point" in out


@pytest.mark.parametrize(
    ("old", "new", "where", "why"),
    [
        (
            'record = "every_sample"',
            'record = "sometimes"',
            "devices.cold-room-1-probe.record",
            "'every_sample' or 'interval'",
        ),
        (
            "record_deadband = 0.2",
            "record_deadband = -0.2",
            "devices.cold-room-1-probe.record_deadband",
            "greater than or equal to 0",
        ),
        (
            "record_deadband = 2.0",
            "record_deadband = -1",
            "devices.cold-room-1-probe.points.humidity.record_deadband",
            "greater than or equal to 0",
        ),
    ],
)
def test_recording_policy_errors(tmp_path: Path, old: str, new: str, where: str, why: str) -> None:
    path = _example_with(tmp_path, old, new)
    result = runner.invoke(app, ["config", "validate", "--syntax-only", str(path)])
    assert result.exit_code == 2
    assert f"{path}: {where}" in result.stderr
    assert why in result.stderr
