"""One agent per buffer, and a stop that never waits for the disk (issue 14 item 6).

Real ``gxpgate run`` processes: a second one on the same buffer exits 2 naming the first's pid
and touches nothing; the first goes on and stops cleanly. An agent whose writes fail (a full
disk) still stops on SIGTERM well within systemd's TimeoutStopSec=30s, and says how many
records it could not keep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .running import exported
from .test_disk_full import fill, small_disk  # noqa: F401  (the fixture)

ROOT = Path(__file__).resolve().parents[1]


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "gxpgate", "run", "--config", str(config)],
            env=env, stdout=err, stderr=subprocess.STDOUT,
        )  # fmt: skip


def wait_for(log: Path, text: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while text not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged within {within} s:\n{log.read_text()}")
        time.sleep(0.05)


def test_a_second_agent_on_the_same_buffer_exits_2_naming_the_first(
    tmp_path: Path, write_config
) -> None:
    config = write_config()  # its Modbus device is unreachable: offline readings, still sealed
    first = start(config, tmp_path / "first.log")
    try:
        wait_for(tmp_path / "first.log", "agent.started")
        second = subprocess.run(
            [sys.executable, "-m", "gxpgate", "run", "--config", str(config)],
            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert f"another gxpgate (pid {first.pid}) is running" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.poll() is None, "the first one runs on"
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
    records = exported(config)
    starts = [r for r in records if r["kind"] == "audit" and r["data"]["event"] == "agent_started"]
    assert len(starts) == 1, "the second one sealed nothing"
    assert records[-1]["data"]["event"] == "agent_stopped"
    # The kernel releases the lock with its holder: the next start needs no clean-up.
    again = start(config, tmp_path / "again.log")
    wait_for(tmp_path / "again.log", "agent.started")
    again.send_signal(signal.SIGKILL)
    again.wait(10)
    after_kill = start(config, tmp_path / "after-kill.log")
    wait_for(tmp_path / "after-kill.log", "agent.started")
    after_kill.send_signal(signal.SIGTERM)
    assert after_kill.wait(30) == 0


@pytest.mark.usefixtures("small_disk")
def test_an_agent_whose_writes_fail_stops_within_the_stop_timeout(
    tmp_path: Path,
    write_config,
    small_disk: Path,  # noqa: F811
) -> None:
    config = write_config(poll=0.05)
    buffer = f'path = "{small_disk}/buffer.db"\nreserve_mb = 0'
    config.write_text(config.read_text().replace('path = "buffer.db"', buffer))
    log = tmp_path / "agent.log"
    proc = start(config, log)
    try:
        wait_for(log, "agent.started")
        fill(small_disk)
        wait_for(log, "buffer.write_failed")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert took < 25, f"stop took {took:.1f} s"
    assert code == 1, text
    assert "buffer.unsaved records=" in text
    assert "records were lost" in text
