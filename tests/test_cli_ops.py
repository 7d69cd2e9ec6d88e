"""Operator commands against real simulators: devices test, buffer status, export, simulate, run."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
from typer.testing import CliRunner

from gxpgate.agent.cli.main import app
from gxpgate.simulators.modbus_sim import ModbusSimulator

from .sealed import fill

runner = CliRunner()


def test_devices_test_reads_each_device_and_reports_unreachable(
    tmp_path: Path, write_config
) -> None:
    async def main() -> None:
        async with ModbusSimulator() as sim:
            config = write_config(sim.port)
            result = await asyncio.to_thread(
                runner.invoke, app, ["devices", "test", "--config", str(config)]
            )
            assert result.exit_code == 0, result.output
            assert "probe-1:" in result.output
            assert "input 0..3: temperature, humidity" in result.output
            assert "good" in result.output
            sim.set_fault(3, "no_answer")
            result = await asyncio.to_thread(
                runner.invoke, app, ["devices", "test", "probe-3", "--config", str(config)]
            )
            assert result.exit_code == 1
            assert "UNREACHABLE: no response within 300 ms" in result.output
            assert "probe-1:" not in result.output
        unknown = runner.invoke(app, ["devices", "test", "nope", "--config", str(config)])
        assert unknown.exit_code == 2
        assert "no device 'nope'" in unknown.stderr

    asyncio.run(main())


def test_buffer_status_and_export_window(tmp_path: Path, write_config, signing_key) -> None:
    config = write_config()
    outbox = fill(tmp_path / "buffer.db", signing_key[1], 30)  # readings at 10:00:00 + i s
    outbox.set_acked_through(12)
    outbox.close()
    status = runner.invoke(app, ["buffer", "status", "--config", str(config)])
    assert status.exit_code == 0, status.output
    assert "records held     30" in status.output
    assert "pending upload   18" in status.output
    assert "acked through    12" in status.output
    assert "oldest pending   2026-11-21T10:00:12.000000Z" in status.output
    out = tmp_path / "window.jsonl"
    result = runner.invoke(
        app,
        ["export", "--config", str(config), "--out", str(out),
         "--since", "2026-11-21T10:00:05Z", "--until", "2026-11-21T11:00:10+01:00"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    seqs = [orjson.loads(line)["seq"] for line in out.read_bytes().splitlines()]
    assert seqs == list(range(6, 11))
    bad = runner.invoke(
        app, ["export", "--config", str(config), "--out", str(out), "--since", "yesterday"]
    )
    assert bad.exit_code == 2
    assert "--since: not an ISO 8601 time" in bad.stderr


def test_run_refuses_open_key_damaged_buffer_and_foreign_key(
    tmp_path: Path, write_config, signing_key
) -> None:
    config = write_config()
    key_path = signing_key[0]
    os.chmod(key_path, 0o640)
    result = runner.invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 1
    assert "mode 0640 lets other users read the signing key" in result.stderr
    os.chmod(key_path, 0o600)

    from gxpgate.agent.evidence import generate_key_file

    other = generate_key_file(tmp_path / "other.key")
    fill(tmp_path / "buffer.db", other, 5).close()  # a chain signed by another key
    result = runner.invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 1
    assert "restore the original key file" in result.stderr

    (tmp_path / "buffer.db").unlink()
    (tmp_path / "buffer.db.witness").unlink()  # else the deletion is refused as damage
    fill(tmp_path / "buffer.db", signing_key[1], 5).close()
    with sqlite3.connect(tmp_path / "buffer.db") as conn:
        conn.execute("UPDATE records SET value = 9.04 WHERE seq = 5 AND value = 5.04")
    result = runner.invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 1
    assert "chain tail fails verification: seq 5: hash does not match" in result.stderr


def test_run_refuses_a_missing_broker_password_file(write_config) -> None:
    config = write_config(
        extra_devices='[alarms.mqtt]\nusername = "gw"\npassword_file = "broker.password"\n'
    )
    result = runner.invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 1
    assert "alarms.mqtt.password_file:" in result.stderr
    assert "broker.password is not a readable file" in result.stderr


def _first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


def test_simulate_commands_listen_and_answer(tmp_path: Path, signing_key) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    modbus = subprocess.Popen(
        [sys.executable, "-m", "gxpgate", "simulate", "modbus", "--port", "0"],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        line = _first_line(modbus)
        assert line.startswith("Modbus TCP simulator listening on 127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        assert port > 0
    finally:
        modbus.send_signal(signal.SIGINT)
        assert modbus.wait(10) == 0
    pub = tmp_path / "pub.pem"
    pub.write_text(
        runner.invoke(app, ["keys", "show", "--key", str(signing_key[0])]).output.split("\n", 1)[1]
    )
    service = subprocess.Popen(
        [sys.executable, "-m", "gxpgate", "simulate", "quality-service", "--public-key", str(pub),
         "--port", "0", "--db", str(tmp_path / "qs.db")],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        line = _first_line(service)
        url = line.rsplit(" ", 1)[1]
        answer = httpx.get(f"{url}/v1/evidence/cursor", params={"gw": "gw-x", "chain": "c"})
        assert answer.json() == {"acked_through": 0}
    finally:
        service.send_signal(signal.SIGINT)
        service.wait(10)


def test_operator_commands_do_not_create_a_buffer(tmp_path: Path, write_config) -> None:
    config = write_config()
    for args in (["buffer", "status"], ["export", "--out", str(tmp_path / "x.jsonl")]):
        result = runner.invoke(app, [*args, "--config", str(config)])
        assert result.exit_code == 1
        assert "no buffer yet" in result.stderr
    assert not (tmp_path / "buffer.db").exists()
