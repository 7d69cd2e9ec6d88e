"""Soak: the agent's memory against a quality service that keeps restarting empty.

``gxpgate run`` (a subprocess, as systemd runs it) polls a Modbus simulator and forwards to the
quality-service simulator, which is stopped and started again every ``--flap-secs`` with an
empty database, so the agent keeps re-sending its whole backlog. The agent's RSS is sampled
every few seconds; the script prints the samples and the least-squares slope in MiB per hour
over the second half of the run (the first half includes warm-up). It also prints how long
delivery takes to resume after each restart.

    python -m tests.benchmarks.bench_uplink_soak [--minutes 3] [--flap-secs 10]
        [--checkout DIR]   # run the agent from another checkout (before/after on one machine)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from gxpgate.agent.evidence import generate_key_file
from gxpgate.simulators.modbus_sim import ModbusSimulator
from gxpgate.simulators.quality_service import QualityServiceSimulator

from .reporting import note

GW = "gw-soak"
ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
[gateway]
id = "{gw}"
site = "Soak"
[signing]
key_file = "{key}"
[buffer]
path = "{folder}/buffer.db"
commit_interval_ms = 100
[metrics]
enabled = false
[uplink]
url = "{url}"
batch_max_records = 500
backoff_initial_secs = 0.5
backoff_max_secs = 300
timeout_secs = 5
[zones.cold-1]
profile = "refrigerated"
[devices.probe-1]
type = "modbus_tcp"
host = "127.0.0.1"
port = {port}
unit_id = 1
zone = "cold-1"
poll_interval_secs = 0.1
points.temperature = {{ table = "input", address = 0, type = "float32", unit = "Cel" }}
points.humidity = {{ table = "input", address = 2, type = "float32", unit = "%" }}
"""


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def slope_per_hour(samples: Sequence[tuple[float, float]]) -> float:
    if len(samples) < 3:
        return float("nan")
    times = [t for t, _ in samples]
    values = [v for _, v in samples]
    return statistics.linear_regression(times, values).slope * 3600


async def soak(args: argparse.Namespace, folder: Path) -> dict[str, object]:
    key = folder / "signing.key"
    public = generate_key_file(key).public_key()
    checkout, python = args.checkout, args.python
    samples: list[tuple[float, float]] = []
    resumes: list[float] = []
    async with ModbusSimulator() as sim:
        qs = QualityServiceSimulator(folder / "qs-0.db", [public]).start()
        port = qs.port
        config = folder / "gxpgate.toml"
        config.write_text(
            CONFIG.format(gw=GW, key=key, folder=folder, url=qs.url, port=sim.port),
            encoding="utf-8",
        )
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        proc = await asyncio.create_subprocess_exec(
            str(python), "-m", "gxpgate", "run", "--config", str(config),
            cwd=checkout, env=env, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        started = time.monotonic()
        end = started + args.minutes * 60
        flaps = 0
        next_flap = started + args.flap_secs
        try:
            while time.monotonic() < end:
                await asyncio.sleep(args.sample_secs)
                if proc.returncode is not None:
                    raise RuntimeError(f"the agent exited with {proc.returncode}")
                samples.append((time.monotonic() - started, rss_mib(proc.pid)))
                if time.monotonic() >= next_flap:
                    flaps += 1
                    qs.stop()
                    await asyncio.sleep(args.down_secs)
                    qs = QualityServiceSimulator(
                        folder / f"qs-{flaps}.db", [public], port=port
                    ).start()
                    back = time.monotonic()
                    while not qs.chains():
                        await asyncio.sleep(0.1)
                        if time.monotonic() - back > 120:
                            break
                    resumes.append(time.monotonic() - back)
                    next_flap = time.monotonic() + args.flap_secs
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
            qs.stop()
    half = [s for s in samples if s[0] >= samples[-1][0] / 2] if samples else []
    return {
        "checkout": str(checkout),
        "minutes": args.minutes,
        "flaps": len(resumes),
        "rss_first_mib": round(samples[0][1], 1) if samples else None,
        "rss_last_mib": round(samples[-1][1], 1) if samples else None,
        "rss_max_mib": round(max(v for _, v in samples), 1) if samples else None,
        "slope_mib_per_hour_second_half": round(slope_per_hour(half), 1),
        "resume_secs_median": round(statistics.median(resumes), 2) if resumes else None,
        "resume_secs_max": round(max(resumes), 2) if resumes else None,
        "samples": [(round(t), round(v, 1)) for t, v in samples],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--flap-secs", type=float, default=10.0, help="service up between restarts")
    parser.add_argument("--down-secs", type=float, default=3.0, help="service down per restart")
    parser.add_argument("--sample-secs", type=float, default=5.0)
    parser.add_argument("--checkout", default=None, help="run the agent from this checkout")
    args = parser.parse_args(argv)
    args.checkout = Path(args.checkout).resolve() if args.checkout else ROOT
    venv = args.checkout / ".venv" / "bin" / "python"
    args.python = venv if venv.exists() else Path(sys.executable)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        note(f"soak: {args.minutes:g} min, service restarts empty every {args.flap_secs:g} s")
        result = asyncio.run(soak(args, Path(tmp)))
    for key, value in result.items():
        if key != "samples":
            print(f"{key:<34} {value}")
    print("rss samples (s, MiB):", result["samples"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
