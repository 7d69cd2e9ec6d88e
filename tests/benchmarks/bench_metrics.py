"""Metrics benchmark: what one scrape costs, and whether scrapes stall the event loop.

Run from the repository root::

    .venv/bin/python -m tests.benchmarks.bench_metrics [--devices 50] [--points 20] [--secs 5]

A script, not a pytest test. The real agent (:class:`tests.running.Running`) polls
``--devices`` Modbus TCP devices of ``--points`` points each (half float32 temperatures in
``°C``, half humidities in ``%``; zone ``cold-1`` with the built-in ``refrigerated`` rules, so
the alarm engine holds a machine per rule and point; all read unit 1, which stays near 5 °C, so
no alarm is raised) on the in-process Modbus simulator every second, with the metrics endpoint
on a free port. Measured once every device is up:

1. :func:`gxpgate.agent.health.snapshot.take_snapshot` (through ``Agent.snapshot``) on the event
   loop (it runs once a second): median and p99 of 500 calls.
2. Rendering the exposition in a thread (``generate_latest``: the snapshot's families, the
   outbox reads, prometheus-client's process collector): median of 200.
3. A scrape over HTTP (httpx, in a thread, back to back): median and p99 of 200, and its size.
4. Event-loop lag: a task sleeping 10 ms at a time records how late it wakes, for ``--secs``
   each: without scrapes, with a thread scraping 10 times a second (Prometheus scrapes every
   15 s to 1 min), and with one scraping back to back; p99 and worst lateness of each. The
   scrapes run in another thread, so they can delay the loop only through the GIL (at most a
   switch interval, 5 ms, at a time).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from prometheus_client import generate_latest

from gxpgate.agent.evidence import generate_key_file
from gxpgate.agent.service.runtime import Agent
from gxpgate.simulators.modbus_sim import ModbusSimulator
from tests.broker import free_port
from tests.running import Running, until

from .reporting import Report, cpu_model, note, package_version


def config_text(key: Path, sim_port: int, devices: int, points: int) -> str:
    lines = [
        f"""
[gateway]
id = "gw-bench"
site = "Bench"

[signing]
key_file = "{key}"

[buffer]
path = "buffer.db"

[zones.cold-1]
profile = "refrigerated"

[metrics]
port = {free_port()}
"""
    ]
    for n in range(devices):
        lines.append(
            f'\n[devices.probe-{n}]\ntype = "modbus_tcp"\nhost = "127.0.0.1"\nport = {sim_port}\n'
            f'unit_id = 1\nzone = "cold-1"\npoll_interval_secs = 1\n'
        )
        for p in range(points):
            if p % 2:
                spec = '{ table = "input", address = 2, type = "float32", unit = "%" }'
            else:
                spec = '{ table = "input", address = 0, type = "float32", unit = "Cel" }'
            lines.append(f"points.p{p} = {spec}\n")
    return "".join(lines)


def quantiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return (
        statistics.median(ordered),
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        ordered[-1],
    )


async def lateness(secs: float) -> list[float]:
    loop = asyncio.get_running_loop()
    late: list[float] = []
    end = loop.time() + secs
    while loop.time() < end:
        start = time.perf_counter()
        await asyncio.sleep(0.010)
        late.append((time.perf_counter() - start - 0.010) * 1000)
    return late


async def measure(report: Report, agent: Agent, secs: float) -> None:
    assert agent.metrics is not None
    metrics = agent.metrics
    report.section("Snapshot on the event loop (once a second)")
    times = []
    for _ in range(500):
        start = time.perf_counter_ns()
        agent.snapshot()
        times.append((time.perf_counter_ns() - start) / 1000)
    median, p99, _ = quantiles(times)
    report.add("snapshot_median_us", "take_snapshot, median", median, "µs", below=1000)
    report.add("snapshot_p99_us", "take_snapshot, p99", p99, "µs")

    report.section("One scrape (in the HTTP thread)")

    def render() -> list[float]:
        out = []
        for _ in range(200):
            start = time.perf_counter_ns()
            generate_latest(metrics.registry)
            out.append((time.perf_counter_ns() - start) / 1e6)
        return out

    median, p99, _ = quantiles(await asyncio.to_thread(render))
    report.add("render_median_ms", "generate_latest (with the outbox reads), median", median, "ms")
    report.add("render_p99_ms", "generate_latest, p99", p99, "ms")
    stop = threading.Event()
    sizes: list[int] = []

    def scrape(count: int | None, every: float = 0.0) -> list[float]:
        out = []
        with httpx.Client(trust_env=False, timeout=10) as client:
            while not stop.is_set() and (count is None or len(out) < count):
                start = time.perf_counter_ns()
                answer = client.get(metrics.url)
                out.append((time.perf_counter_ns() - start) / 1e6)
                sizes.append(len(answer.content))
                stop.wait(every)
        return out

    median, p99, _ = quantiles(await asyncio.to_thread(scrape, 200))
    report.add("scrape_median_ms", "HTTP scrape round trip, median", median, "ms", below=50)
    report.add("scrape_p99_ms", "HTTP scrape round trip, p99", p99, "ms")
    report.add("scrape_bytes", "exposition size (uncompressed)", float(sizes[-1]), "bytes")

    report.section("Event-loop lateness of a 10 ms sleep")
    _, idle_p99, idle_max = quantiles(await lateness(secs))
    report.add("lag_idle_p99_ms", "without scrapes, p99", idle_p99, "ms")
    report.add("lag_idle_max_ms", "without scrapes, worst", idle_max, "ms")
    for key, label, every in (("10hz", "10 scrapes/s", 0.1), ("flat_out", "back to back", 0.0)):
        stop.clear()
        scraper = asyncio.create_task(asyncio.to_thread(scrape, None, every))
        before = len(sizes)
        try:
            _, p99, worst = quantiles(await lateness(secs))
        finally:
            stop.set()
            await scraper
        rate = (len(sizes) - before) / secs
        report.add(f"lag_{key}_p99_ms", f"scraping {label} ({rate:.0f}/s), p99", p99, "ms")
        report.add(f"lag_{key}_max_ms", f"scraping {label}, worst", worst, "ms")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--secs", type=float, default=5.0)
    args = parser.parse_args()
    report = Report("metrics")
    started = time.monotonic()

    async def run(workdir: Path) -> None:
        key = workdir / "signing.key"
        generate_key_file(key)
        async with ModbusSimulator() as sim:
            config = workdir / "gxpgate.toml"
            config.write_text(config_text(key, sim.port, args.devices, args.points))
            async with Running(config) as agent:
                note(f"{args.devices} devices x {args.points} points; waiting for every device")
                await until(lambda: all(p.up for p in agent.pollers), 60, "every device up")
                assert agent.alarms is not None
                machines = sum(1 for _ in agent.alarms.engine.machines)
                report.text(f"alarm engine: {machines} rule machines")
                await measure(report, agent, args.secs)

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp)))
    report.summary()
    machine = {
        "cpu": cpu_model(),
        "python": sys.version.split()[0],
        "prometheus_client": package_version("prometheus-client"),
    }
    params = {"devices": args.devices, "points": args.points, "secs": args.secs}
    print(report.as_json(machine, time.monotonic() - started, params))
    return 0 if not report.errors else 1


if __name__ == "__main__":
    sys.exit(main())
