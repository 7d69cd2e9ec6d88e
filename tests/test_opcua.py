"""The OPC UA driver in the agent, against the OPC UA simulator over real TCP."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gxpgate.agent.cli.main import app
from gxpgate.drivers.opcua import ensure_application_certificate
from gxpgate.simulators.opcua_sim import OpcUaSimulator

from .running import Running, exported, until

runner = CliRunner()

POINTS = ("temperature", "humidity", "door_open")
UNITS = {"temperature": "Cel", "humidity": "%", "door_open": "1"}


def opcua_device(
    sim: OpcUaSimulator,
    *,
    mode: str = "subscription",
    zones: tuple[str, ...] = ("cold-room-1",),
    by_path: bool = False,
    extra: str = "",
    security: str = "",
) -> str:
    points = []
    for zone in zones:
        for point in POINTS:
            name = f"{zone}.{point}" if len(zones) > 1 else point
            where = (
                f'browse_path = "{sim.browse_path(zone, point)}"'
                if by_path
                else f'node_id = "{sim.node_id(zone, point)}"'
            )
            unit = UNITS[point]
            watched = "" if unit != "1" else ", monitored = false"  # the door: no rule on it
            points.append(f'points."{name}" = {{ {where}, unit = "{unit}"{watched} }}')
    lines = "\n".join(points)
    return f"""
[devices.bms]
type = "opcua"
endpoint = "{sim.endpoint}"
zone = "cold-1"
mode = "{mode}"
poll_interval_secs = 0.2
publishing_interval_ms = 100
sampling_interval_ms = 50
timeout_ms = 1000
reconnect_max_secs = 0.5
{extra}
{lines}
{security}
"""


def readings(config: Path, device: str = "bms") -> list[dict]:
    return [r for r in exported(config) if r["device"] == device and r["kind"] == "reading"]


def audits(config: Path, device: str = "bms") -> list[str]:
    return [
        r["data"]["event"]
        for r in exported(config)
        if r["device"] == device and r["kind"] == "audit"
    ]


def test_subscription_delivers_changes_with_source_timestamps(tmp_path: Path, write_config) -> None:
    async def main() -> None:
        async with OpcUaSimulator(update_interval_secs=0.1) as sim:
            config = write_config(extra_devices=opcua_device(sim, by_path=True), poll=5)
            async with Running(config) as agent:
                streamer = next(p for p in agent.pollers if p.device == "bms")
                await until(lambda: streamer.batches >= 3, what="subscription data")
                await sim.set_value("cold-room-1", "temperature", 7.25)
                await until(
                    lambda: any(r["value"] == 7.25 for r in readings(config)), what="the change"
                )
        got = readings(config)
        assert {r["point"] for r in got} == set(POINTS)
        assert {r["zone"] for r in got} == {"cold-1"}
        change = next(r for r in got if r["value"] == 7.25)
        assert change["quality"] == "good"
        assert change["unit"] == "Cel"
        assert change["src_at"] is not None
        assert change["src_at"] <= change["at"]

    asyncio.run(main())


def test_polling_reads_every_point_within_server_read_limit(tmp_path: Path, write_config) -> None:
    zones = ("cold-room-1", "freezer-1", "ambient-1")

    async def main() -> None:
        async with OpcUaSimulator(max_nodes_per_read=2) as sim:
            device = opcua_device(sim, mode="polling", zones=zones)
            config = write_config(extra_devices=device, poll=5)
            async with Running(config) as agent:
                poller = next(p for p in agent.pollers if p.device == "bms")
                await until(lambda: poller.polls >= 3, what="three polls")
        got = readings(config)
        names = {r["point"] for r in got}
        assert names == {f"{z}.{p}" for z in zones for p in POINTS}, "9 points with 2 per read"
        assert {r["quality"] for r in got} == {"good"}
        freezer = [r["value"] for r in got if r["point"] == "freezer-1.temperature"]
        assert all(-19.0 < v < -17.0 for v in freezer), freezer

    asyncio.run(main())


def test_server_restart_recovers_without_agent_restart(tmp_path: Path, write_config) -> None:
    async def main() -> None:
        async with OpcUaSimulator(update_interval_secs=0.1) as sim:
            config = write_config(extra_devices=opcua_device(sim), poll=5)
            async with Running(config) as agent:
                streamer = next(p for p in agent.pollers if p.device == "bms")
                await until(lambda: streamer.batches >= 3)
                await sim.stop()
                await until(lambda: not streamer.online, what="offline after server stop")
                before = len(readings(config))
                await sim.start()
                await until(lambda: streamer.online, within=30, what="online after restart")
                await sim.set_value("cold-room-1", "temperature", 3.5)
                await until(lambda: any(r["value"] == 3.5 for r in readings(config)))
                assert len(readings(config)) > before
        assert audits(config) == ["device_offline", "device_online"]

    asyncio.run(main())


def test_bad_and_uncertain_status(tmp_path: Path, write_config) -> None:
    async def main() -> None:
        async with OpcUaSimulator(update_interval_secs=0.1) as sim:
            config = write_config(extra_devices=opcua_device(sim), poll=5)
            async with Running(config) as agent:
                streamer = next(p for p in agent.pollers if p.device == "bms")
                await until(lambda: streamer.batches >= 2)
                await sim.set_bad("cold-room-1", "temperature", "BadSensorFailure")
                await until(lambda: any(r["quality"] == "bad" for r in readings(config)))
                await sim.set_bad("cold-room-1", "humidity", "UncertainLastUsableValue")
                await until(lambda: any(r["quality"] == "uncertain" for r in readings(config)))
        got = readings(config)
        bad = next(r for r in got if r["quality"] == "bad")
        assert bad["point"] == "temperature"
        assert bad["value"] is None, "a bad value is never used as a measurement"
        assert bad["data"]["error"] == "BadSensorFailure"
        uncertain = next(r for r in got if r["quality"] == "uncertain")
        assert uncertain["data"]["status"] == "UncertainLastUsableValue"
        assert uncertain["value"] is not None

    asyncio.run(main())


@pytest.mark.parametrize("mode", ["SignAndEncrypt", "Sign"])
def test_secure_session_and_untrusted_server(tmp_path: Path, write_config, mode: str) -> None:
    cert, key = tmp_path / "gw" / "cert.der", tmp_path / "gw" / "key.pem"
    created, _ = ensure_application_certificate(cert, key, "urn:gxpgate:test", "localhost")
    assert created
    assert key.stat().st_mode & 0o777 == 0o600
    other_cert, other_key = tmp_path / "other" / "cert.der", tmp_path / "other" / "key.pem"
    ensure_application_certificate(other_cert, other_key, "urn:other", "localhost")

    async def main() -> None:
        async with OpcUaSimulator(
            security="basic256sha256", cert_dir=tmp_path / "server", trusted_client_certs=[cert],
            update_interval_secs=0.1,
        ) as sim:  # fmt: skip

            def security(trusted: Path) -> str:
                return f"""
[devices.bms.security]
policy = "Basic256Sha256"
mode = "{mode}"
certificate_file = "{cert}"
private_key_file = "{key}"
server_certificate_file = "{trusted}"
application_uri = "urn:gxpgate:test"
"""

            assert sim.server_certificate_path is not None
            config = write_config(
                extra_devices=opcua_device(sim, security=security(sim.server_certificate_path)),
                poll=5,
            )
            async with Running(config) as agent:
                streamer = next(p for p in agent.pollers if p.device == "bms")
                await until(lambda: streamer.batches >= 2, what="encrypted session data")
            assert {r["quality"] for r in readings(config)} == {"good"}

            wrong = write_config(
                extra_devices=opcua_device(sim, security=security(other_cert)),
                poll=5,
                name="wrong.toml",
            )
            wrong.write_text(wrong.read_text().replace('path = "buffer.db"', 'path = "wrong.db"'))
            async with Running(wrong) as agent:
                streamer = next(p for p in agent.pollers if p.device == "bms")
                await until(lambda: not streamer.online, what="refused")
                assert streamer.last_error is not None
                assert "untrusted server certificate" in streamer.last_error
            assert readings(wrong) == [], "no values from an untrusted server"

    asyncio.run(main())


def test_devices_test_lists_opcua_points(tmp_path: Path, write_config) -> None:
    async def main() -> None:
        async with OpcUaSimulator() as sim:
            config = write_config(extra_devices=opcua_device(sim, by_path=True))
            result = await asyncio.to_thread(
                runner.invoke, app, ["devices", "test", "bms", "--config", str(config)]
            )
        assert result.exit_code == 0, result.output
        assert "opcua opc.tcp://" in result.output
        assert "temperature" in result.output
        assert "good" in result.output

    asyncio.run(main())


def test_credentials_file_and_wrong_password(tmp_path: Path, write_config) -> None:
    creds = tmp_path / "bms.credentials"
    creds.write_text("gateway\ns3cret-pass\n")

    async def main() -> None:
        async with OpcUaSimulator(
            users={"gateway": "s3cret-pass"}, update_interval_secs=0.1
        ) as sim:
            extra = f'credentials_file = "{creds}"'
            config = write_config(extra_devices=opcua_device(sim, extra=extra), poll=5)
            async with Running(config) as agent:
                streamer = next(p for p in agent.pollers if p.device == "bms")
                await until(lambda: streamer.batches >= 2, what="data with a password")
            creds.write_text("gateway\nwrong\n")
            wrong = write_config(
                extra_devices=opcua_device(sim, extra=extra), poll=5, name="wrong.toml"
            )
            wrong.write_text(wrong.read_text().replace('path = "buffer.db"', 'path = "w.db"'))
            async with Running(wrong) as agent:
                streamer = next(p for p in agent.pollers if p.device == "bms")
                await until(lambda: not streamer.online, what="refused")
                assert streamer.last_error is not None
                assert "wrong" not in streamer.last_error, "the password is never echoed"
        assert readings(wrong) == []

    asyncio.run(main())


def test_certificate_command_and_simulate_opcua(tmp_path: Path, write_config) -> None:
    security = """
[devices.bms.security]
policy = "Basic256Sha256"
mode = "Sign"
certificate_file = "opcua/cert.der"
private_key_file = "opcua/key.pem"
server_certificate_file = "opcua/server.der"
"""
    config = write_config(
        extra_devices=f"""
[devices.bms]
type = "opcua"
endpoint = "opc.tcp://127.0.0.1:4840/"
zone = "cold-1"
points.t = {{ node_id = "ns=2;s=x", unit = "Cel" }}
{security}"""
    )
    result = runner.invoke(app, ["opcua", "certificate", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "(created)" in result.output
    assert re.search(r"SHA-1 thumbprint [0-9a-f]{40}\b", result.output), result.output
    assert (tmp_path / "opcua" / "cert.der").is_file()
    assert (tmp_path / "opcua" / "key.pem").stat().st_mode & 0o777 == 0o600
    again = runner.invoke(app, ["opcua", "certificate", "--config", str(config)])
    assert "(exists)" in again.output
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gxpgate", "simulate", "opcua", "--port", "0"],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("OPC UA simulator listening on opc.tcp://127.0.0.1:"), first
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
