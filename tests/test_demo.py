"""``gxpgate demo`` as a newcomer runs it: simulators, outage, summary, verifiable files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs_scripted_outage_and_verifies(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--seconds", "12", "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "network outage" in out
    assert "uplink.failing" in out
    assert "uplink.recovered" in out
    assert "excursion: cold-room-2" in out
    assert "device.offline device=ambient-a-probe" in out
    assert "freezer-1 OPC UA server restarts" in out
    assert "-18.0" in out or "-17.9" in out, "freezer values arrive over OPC UA"
    assert "data logger cable pulled" in out
    assert "logger_enrolled" in out
    assert "logger_clock" in out
    assert "back-filled readings" in out
    # Received at the dock door (TCP scanner), put away into cold-room-2 (serial scanner).
    assert "dock-door-1 receives" in out
    lots_line = next(line for line in out.splitlines() if "lots in cold-room-2" in line)
    assert "(10)LOT-A1" in lots_line, lots_line
    assert "(10)LOT-B7" in lots_line, lots_line
    # The excursion alarms (naming the lots put away there), is acknowledged through the
    # control socket, and clears.
    assert "acknowledged by demo.qa" in out
    summary = out.split("\nsummary\n", 1)[1]
    alarm = next(
        line for line in summary.splitlines() if "cold-room-2-probe.temperature.high" in line
    )
    assert "active → acknowledged → cleared" in alarm, alarm
    assert "(10)LOT-A1" in alarm, alarm
    assert "verification: PASSED" in out
    assert "quality service copy  OK" in out
    for name in ("gxpgate.toml", "signing.key", "signing.pub.pem", "buffer.db", "evidence.jsonl"):
        assert (workdir / name).is_file(), name
    assert (workdir / "signing.key").stat().st_mode & 0o777 == 0o600
    check = subprocess.run(
        [sys.executable, "-m", "agent", "verify", str(workdir / "evidence.jsonl"),
         "--public-key", str(workdir / "signing.pub.pem")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    valid = subprocess.run(
        [sys.executable, "-m", "agent", "config", "validate", str(workdir / "gxpgate.toml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert valid.returncode == 0, valid.stderr
    # A second run in the same workdir continues the same chain.
    again = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--seconds", "3", "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    first_chain = out.split("chain ", 1)[1].split(",", 1)[0]
    assert f"chain {first_chain}" in again.stdout
