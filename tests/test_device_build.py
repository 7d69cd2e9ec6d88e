"""Each device's config model builds its own source (issue 16 item 2): no factory with an
``if type ==`` chain, no ``getattr`` probing of the models. The driver is imported inside
``build``, so loading and validating a config loads no protocol library."""

from __future__ import annotations

import math
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from gxpgate.agent.alarms.points import point_rules
from gxpgate.config import GatewayConfig, example_config_text, load_config
from gxpgate.config.model import DeviceConfig
from gxpgate.drivers.base import BuildContext, is_pushed
from gxpgate.drivers.filedrop import CsvDropSource
from gxpgate.drivers.logger import LoggerSource
from gxpgate.drivers.modbus_model import ModbusRtuBus, ModbusRtuDevice
from gxpgate.drivers.modbus_rtu import ModbusRtuSource
from gxpgate.drivers.modbus_tcp import ModbusTcpSource
from gxpgate.drivers.opcua import OpcUaSource
from gxpgate.drivers.scanner import BarcodeScannerSource, RfidReaderSource

ROOT = Path(__file__).resolve().parent.parent

BUILDS = {
    "modbus_tcp": ModbusTcpSource,
    "modbus_rtu": ModbusRtuSource,
    "opcua": OpcUaSource,
    "serial_logger": LoggerSource,
    "csv_drop": CsvDropSource,
    "barcode_scanner": BarcodeScannerSource,
    "rfid_reader": RfidReaderSource,
}


def _device_models() -> list[type[BaseModel]]:
    union = typing.get_args(DeviceConfig)[0]  # Annotated[A | B | …, Field(discriminator=…)]
    return list(typing.get_args(union))


def _type_of(model: type[BaseModel]) -> str:
    (tag,) = typing.get_args(model.model_fields["type"].annotation)
    return str(tag)


@pytest.fixture
def example(tmp_path: Path) -> GatewayConfig:
    path = tmp_path / "gxpgate.toml"
    path.write_text(example_config_text())
    return load_config(path).config


@pytest.mark.parametrize("model", _device_models(), ids=_type_of)
def test_every_device_model_builds_its_source_and_says_how_it_reports(
    model: type[BaseModel],
) -> None:
    assert callable(getattr(model, "build", None)), f"{model.__name__} has no build()"
    for name in ("report_interval_secs", "changes_only"):
        assert isinstance(getattr(model, name, None), property), f"{model.__name__}.{name}"
    assert _type_of(model) in BUILDS, "a new device type: add its source to BUILDS"


def test_each_type_builds_its_own_source(example: GatewayConfig) -> None:
    # The example config has a device of every type, so this covers the whole union.
    assert {dev.type for dev in example.devices.values()} == set(BUILDS)
    ctx = BuildContext(buses=example.buses)
    for dev_id, dev in example.devices.items():
        source = dev.build(dev_id, ctx)
        assert type(source) is BUILDS[dev.type], dev_id
        assert source.device_id == dev_id
        assert source.config is dev
        assert source.describe()


def test_slaves_of_one_bus_share_one_bus_object() -> None:
    buses = {"rs485-1": ModbusRtuBus(port="/dev/ttyUSB0"), "rs485-2": ModbusRtuBus(port="/x")}

    def slave(bus: str, unit_id: int) -> ModbusRtuDevice:
        point = {"table": "input", "address": 0, "type": "float32", "unit": "Cel"}
        return ModbusRtuDevice.model_validate(
            {
                "type": "modbus_rtu",
                "bus": bus,
                "unit_id": unit_id,
                "zone": "z",
                "points": {"t": point},
            }
        )

    ctx = BuildContext(buses=buses)
    first = slave("rs485-1", 1).build("first", ctx)
    second = slave("rs485-1", 2).build("second", ctx)
    other = slave("rs485-2", 1).build("other", ctx)
    assert first.bus is second.bus
    assert other.bus is not first.bus
    assert first.bus.config is buses["rs485-1"]
    assert other.bus.config is buses["rs485-2"]
    assert set(ctx.rtu_buses) == {"rs485-1", "rs485-2"}
    # A second build (a second `devices test`) starts from a fresh context: its own buses.
    again = slave("rs485-1", 1).build("first", BuildContext(buses=buses))
    assert again.bus is not first.bus


def test_how_each_device_reports(example: GatewayConfig) -> None:
    seen = {}
    for dev in example.devices.values():
        seen[dev.type] = (dev.report_interval_secs, dev.changes_only)
    freezer = example.devices["freezer-bms"]
    assert freezer.type == "opcua"
    assert freezer.mode == "subscription"
    assert seen["opcua"] == (freezer.publishing_interval_ms / 1000, True)
    polled = freezer.model_copy(update={"mode": "polling", "poll_interval_secs": 7.0})
    assert (polled.report_interval_secs, polled.changes_only) == (7.0, False)
    for kind in ("modbus_tcp", "modbus_rtu", "serial_logger"):
        assert seen[kind][1] is False
    assert seen["csv_drop"][1] is True  # files come when someone brings one
    for kind in ("barcode_scanner", "rfid_reader"):
        assert seen[kind] == (math.inf, True)


def test_point_rules_take_the_models_word(example: GatewayConfig) -> None:
    found = point_rules(example)
    assert found
    for rules in found:
        dev = example.devices[rules.device]
        assert rules.interval_secs == dev.report_interval_secs
        assert rules.changes_only is dev.changes_only
    # Custody devices have no points, so no rules.
    assert {r.device for r in found} == {d for d, dev in example.devices.items() if dev.points}


def test_an_opcua_subscription_is_streamed_and_polling_is_polled(example: GatewayConfig) -> None:
    ctx = BuildContext(buses=example.buses)
    pushed = {dev.type for d, dev in example.devices.items() if is_pushed(dev.build(d, ctx))}
    # Scanners and readers push too; the agent runs them as custody streams.
    assert pushed == {"opcua", "barcode_scanner", "rfid_reader"}
    freezer = example.devices["freezer-bms"].model_copy(update={"mode": "polling"})
    assert not is_pushed(freezer.build("freezer-bms", ctx))


LAZY = """
import sys
from pathlib import Path

from config import example_config_text, load_config

path = Path(sys.argv[1])
path.write_text(example_config_text())
config = load_config(path).config
for dev in config.devices.values():
    dev.report_interval_secs, dev.changes_only, dev.points
loaded = sorted(m for m in ("pymodbus", "asyncua", "serial") if m in sys.modules)
print(" ".join(loaded) or "none")
"""


def test_loading_a_config_imports_no_protocol_library(tmp_path: Path) -> None:
    # `gxpgate config validate` runs this code: the drivers are imported by build() only.
    result = subprocess.run(
        [sys.executable, "-c", LAZY, str(tmp_path / "gxpgate.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == "none"


RUN_WITHOUT_SCANNERS = """
import asyncio
import sys
from pathlib import Path

from gxpgate.simulators.modbus_sim import ModbusSimulator
from tests.running import Running, until


async def main() -> None:
    async with ModbusSimulator(port=int(sys.argv[2])):
        async with Running(Path(sys.argv[1])) as agent:
            await until(lambda: agent.outbox.last_seq >= 20, what="readings sealed")


asyncio.run(main())
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] == "biip")) or "none")
"""


def test_a_gateway_without_scanners_never_loads_the_gs1_company_prefix_table(
    write_config,
) -> None:
    # biip loads GS1's company-prefix table when imported (~20 MiB of RSS): only a scan, a
    # check digit or a company prefix lookup may import it.
    from tests.broker import free_port

    port = free_port()
    config = write_config(port)
    result = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_SCANNERS, str(config), str(port)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "none"
