"""A damaged buffer is refused, never started over (issue 14 item 5).

Real files, real ``gxpgate run`` processes: a lost write-ahead log, an emptied or replaced
``buffer.db`` and a damaged record body each stop the start with a message that says what is
wrong and what an operator can do; ``gxpgate buffer reset`` sets the files aside, and the new
chain's first records cite the one it replaces.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from gxpgate.agent.cli.main import app
from gxpgate.simulators.modbus_sim import ModbusSimulator

from .running import Running, exported, until

ROOT = Path(__file__).resolve().parents[1]


def gxpgate_run(config: Path, seconds: float = 30) -> subprocess.CompletedProcess[str]:
    """Start the agent; stop it once it is up (or return how it refused)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gxpgate", "run", "--config", str(config)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=3)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=seconds)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def seal_some(config: Path, port: int) -> str:
    async def main() -> str:
        async with Running(config) as agent:
            await until(lambda: agent.outbox.last_seq >= 12)
            return agent.outbox.chain

    return asyncio.run(main())


def with_simulator(test: Callable[[int], None]) -> None:
    async def main() -> None:
        async with ModbusSimulator() as sim:
            await asyncio.to_thread(test, sim.port)

    asyncio.run(main())


def test_a_lost_write_ahead_log_is_refused(tmp_path: Path, write_config) -> None:
    def test(port: int) -> None:
        config = write_config(port, poll=0.05)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "gxpgate", "run", "--config", str(config)], env=env,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wal = tmp_path / "buffer.db-wal"
        deadline = time.monotonic() + 30
        while not (wal.exists() and wal.stat().st_size > 64 * 1024):
            assert time.monotonic() < deadline, "the agent never committed 64 KiB"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # the records committed since the last checkpoint
        proc.wait()  # are in the -wal only
        wal.unlink()
        (tmp_path / "buffer.db-shm").unlink(missing_ok=True)
        refused = gxpgate_run(config)
        assert refused.returncode == 1, refused.stdout
        assert "gxpgate buffer reset" in refused.stdout
        assert "write-ahead log" in refused.stdout or "holds no chain" in refused.stdout
        assert "Traceback" not in refused.stdout

    with_simulator(test)


def test_an_emptied_buffer_is_refused_then_reset_cites_the_old_chain(
    tmp_path: Path, write_config
) -> None:
    def test(port: int) -> None:
        config = write_config(port)
        chain = seal_some(config, port)
        (tmp_path / "buffer.db").write_bytes(b"")
        refused = gxpgate_run(config)
        assert refused.returncode == 1, refused.stdout
        assert f"holds no chain (empty), but chain {chain} held records" in refused.stdout
        assert (tmp_path / "buffer.db").stat().st_size == 0, "nothing minted over it"
        runner = CliRunner()
        unsure = runner.invoke(app, ["buffer", "reset", "--config", str(config)])
        assert unsure.exit_code == 2
        assert "--yes" in unsure.output
        reset = runner.invoke(app, ["buffer", "reset", "--config", str(config), "--yes"])
        assert reset.exit_code == 0, reset.output
        assert f"citing chain {chain}" in reset.output
        assert list(tmp_path.glob("buffer.db.damaged-*"))
        started = gxpgate_run(config)
        assert started.returncode == 0, started.stdout
        records = exported(config)
        assert records[0]["chain"] != chain
        cited = [r["data"] for r in records if r["data"].get("event") == "chain_replaced"]
        assert cited
        assert cited[0]["previous"]["chain"] == chain

    with_simulator(test)


def test_a_buffer_replaced_by_another_chain_is_refused(tmp_path: Path, write_config) -> None:
    def test(port: int) -> None:
        config = write_config(port)
        seal_some(config, port)
        other = tmp_path / "other"
        other.mkdir()
        shutil.copy(config, other / "gxpgate.toml")
        seal_some(other / "gxpgate.toml", port)
        shutil.copy(other / "buffer.db", tmp_path / "buffer.db")
        refused = gxpgate_run(config)
        assert refused.returncode == 1, refused.stdout
        assert "the file was replaced" in refused.stdout

    with_simulator(test)


def test_a_damaged_record_body_is_refused_at_start(tmp_path: Path, write_config) -> None:
    def test(port: int) -> None:
        config = write_config(port)
        seal_some(config, port)
        with sqlite3.connect(tmp_path / "buffer.db") as conn:
            conn.execute("UPDATE records SET value = value + 1 WHERE seq = 5")
        conn.close()
        refused = gxpgate_run(config)
        assert refused.returncode == 1, refused.stdout
        assert "record 5 is damaged" in refused.stdout

    with_simulator(test)
