"""The daemon loads what its config uses, and no more (issue 17: memory).

Each library a gateway does not use still costs resident memory once imported: httpx's own
command-line client (rich, pygments: 5.7 MiB), prometheus_client with metrics off, paho without
MQTT, sqlite-utils once the buffer exists. ``gxpgate run`` runs here as a user starts it, in a
process of its own, against the Modbus simulator; once it has sealed readings it lists what it
has imported and stops itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from gxpgate.simulators.modbus_sim import ModbusSimulator

REPO = Path(__file__).resolve().parents[1]

# The child: `gxpgate run`, and a thread that waits for it to seal readings, prints sys.modules
# and stops the daemon as systemd would (SIGTERM).
CHILD = r"""
import json, os, signal, sqlite3, sys, threading, time

def sealed():
    try:
        db = sqlite3.connect(f"file:{sys.argv[2]}?mode=ro", uri=True)
        try:
            return db.execute(
                "SELECT count(*) FROM records JOIN names ON names.id = records.kind"
                " WHERE names.name = 'reading'"
            ).fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0

def report():
    before = sealed()  # a restart finds the records of the run before
    deadline = time.monotonic() + 60
    while sealed() < before + 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    found = {"polled": sealed() >= before + 10, "modules": sorted(sys.modules)}
    print("MODULES " + json.dumps(found), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=report, daemon=True).start()
from gxpgate.agent.cli.main import app
app(["run", "--config", sys.argv[1]], prog_name="gxpgate")
"""

UNUSED_BY_EVERY_GATEWAY = ("rich", "pygments")  # httpx's CLI
UNUSED_WITHOUT_MQTT = ("paho",)


def roots(modules: list[str]) -> set[str]:
    return {name.partition(".")[0] for name in modules}


async def run_daemon(config: Path) -> list[str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(config),
        str(config.parent / "buffer.db"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(child.communicate(), 90)
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGKILL)
            await child.wait()
    assert child.returncode == 0, (out + err).decode()[-3000:]
    lines = [line for line in out.decode().splitlines() if line.startswith("MODULES ")]
    assert lines, f"the daemon listed no modules: {err.decode()[-3000:]}"
    report = json.loads(lines[-1].removeprefix("MODULES "))
    assert report["polled"], "the daemon sealed no readings within 60 s"
    modules: list[str] = report["modules"]
    return modules


def test_the_daemon_loads_only_the_libraries_its_config_uses(write_config: Any) -> None:
    async def main() -> tuple[set[str], set[str]]:
        async with ModbusSimulator() as sim:
            # First start: a new buffer, metrics served.
            config = write_config(sim.port, "http://127.0.0.1:9")
            first = roots(await run_daemon(config))
            # Restart on the same buffer, metrics off.
            config = write_config(sim.port, "http://127.0.0.1:9", metrics="enabled = false")
            second = roots(await run_daemon(config))
        return first, second

    first, second = asyncio.run(main())
    # What every run needs is there, so the listing is the daemon's own.
    for loaded in (first, second):
        assert {"gxpgate", "httpx", "pymodbus", "nacl", "pydantic"} <= loaded
        assert not loaded & {*UNUSED_BY_EVERY_GATEWAY, *UNUSED_WITHOUT_MQTT}
    # Metrics and a new buffer load their libraries; without them neither is loaded.
    assert {"prometheus_client", "sqlite_utils"} <= first
    assert not second & {"prometheus_client", "sqlite_utils"}


def test_httpx_command_line_client_still_runs_when_called() -> None:
    # The agent keeps httpx's CLI from loading at import; calling it must load and run it.
    done = subprocess.run(
        [sys.executable, "-c", "import gxpgate.agent, httpx; httpx.main(['--help'])"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Usage" in done.stdout
    assert "--method" in done.stdout
