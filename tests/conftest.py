"""Shared fixtures: keys, configs, and a guard against tests that leave threads behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gxpgate.agent.evidence import generate_key_file

pytest_plugins = ["tests.broker"]  # the mqtt_broker fixtures


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    while True:
        left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not left, f"test left threads running: {[t.name for t in left]}"


@pytest.fixture
def signing_key(tmp_path: Path) -> tuple[Path, Ed25519PrivateKey]:
    path = tmp_path / "signing.key"
    return path, generate_key_file(path)


ConfigWriter = Callable[..., Path]


@pytest.fixture
def write_config(tmp_path: Path, signing_key: tuple[Path, Ed25519PrivateKey]) -> ConfigWriter:
    """Write a gateway config for a Modbus simulator at ``port`` and a service at ``url``."""

    def write(
        port: int = 1,
        url: str | None = None,
        *,
        poll: float = 0.2,
        batch: int = 1000,
        extra_devices: str = "",
        name: str = "gxpgate.toml",
        modbus: bool = True,
        metrics: str | None = None,
    ) -> Path:
        uplink = (
            f'[uplink]\nurl = "{url}"\nbatch_max_records = {batch}\n'
            "backoff_initial_secs = 0.05\nbackoff_max_secs = 0.5\ntimeout_secs = 5\n"
            if url
            else ""
        )
        probes = _MODBUS_PROBES.format(port=port, poll=poll) if modbus else ""
        if metrics is None:
            from tests.broker import free_port  # imported here: it is also a plugin, rewritten

            # A port each, so agents of parallel test runs never contend for the default.
            metrics = f"port = {free_port()}"
        text = f"""
[gateway]
id = "gw-test"
site = "Test site"

[signing]
key_file = "{signing_key[0]}"

[buffer]
path = "buffer.db"
commit_interval_ms = 20

{uplink}
[zones.cold-1]
profile = "refrigerated"

[zones.ambient]
profile = "controlled-room"

[metrics]
{metrics}

{probes}{extra_devices}
"""
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


_MODBUS_PROBES = """[devices.probe-1]
type = "modbus_tcp"
host = "127.0.0.1"
port = {port}
unit_id = 1
zone = "cold-1"
poll_interval_secs = {poll}
timeout_ms = 300
reconnect_max_secs = 0.5
points.temperature = {{ table = "input", address = 0, type = "float32", unit = "Cel" }}
points.humidity = {{ table = "input", address = 2, type = "float32", unit = "%" }}
points.door_open = {{ table = "discrete", address = 0, monitored = false }}

[devices.probe-3]
type = "modbus_tcp"
host = "127.0.0.1"
port = {port}
unit_id = 3
zone = "ambient"
poll_interval_secs = {poll}
timeout_ms = 300
reconnect_max_secs = 0.5

# No unit: no rule watches it, which a zone with a profile allows only when said so.
[devices.probe-3.points.temperature]
table = "holding"
address = 100
type = "int16"
scale = 0.1
monitored = false
"""
