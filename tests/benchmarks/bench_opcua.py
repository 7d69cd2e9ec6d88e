"""OPC UA subscription benchmark: change-to-sealed-record latency and agent CPU at 1,000 items.

Run from the repository root::

    .venv/bin/python -m tests.benchmarks.bench_opcua [--items 1000] [--seconds 30]
        [--publishing-ms 1000]

A script, not a pytest test (pytest does not collect ``bench_*.py``; keep it that way). It
prints one table per pass, a summary of the targets, and finally one JSON line with every
figure. Progress notes go to stderr.

Set-up.

- The OPC UA simulator (:class:`gxpgate.simulators.opcua_sim.OpcUaSimulator`) runs in a child
  process (this module with ``--child-sim``), so its CPU is not the agent's. Monitored items are the
  ``temperature`` and ``humidity`` points of ``ceil(items / 2)`` zones (the first ``items`` of
  them): the analog points, the ones that change continuously on a real site; ``door_open`` is
  not monitored. Drift is off and the simulator's own update task idles, so the only writes are
  the benchmark's: every item gets a new value once a second through
  :meth:`~gxpgate.simulators.opcua_sim.OpcUaSimulator.set_value`, which writes at once with
  SourceTimestamp = the simulator's clock at the change. The items are written in ``--slices``
  equal slices spread over the second (default 20, one every 50 ms), so changes fall at every
  phase of the publishing cycle and the latency distribution covers it; ``--slices 1`` writes
  them all in one burst.
- The real :class:`gxpgate.agent.service.runtime.Agent` runs in this process with one ``opcua``
  device in subscription mode holding every item, no uplink. A
  :class:`gxpgate.agent.recording.recorder.Recorder` listener (called after each durable commit)
  takes, for every committed reading whose change happened in the measurement window: change ->
  commit = ``time.time() - src_at`` and change -> acquisition = ``at - src_at`` (``at`` is taken by
  the driver as asyncua hands it the notification). Both clocks are this machine's wall clock.
- ``sampling_interval_ms`` is 100 by default: well under the publishing interval, as on a real
  site where the server samples faster than it publishes. The asyncua server behind the
  simulator does not sample at all (it reports a change when the variable is written and
  revises the sampling interval to the publishing interval), so here the setting changes
  nothing; on a sampling server it would add up to one sampling interval.
- Pass 1 uses the config model's default ``buffer.commit_interval_ms`` (200 ms, the group
  commit window, part of the latency); pass 2 sets it to 20 ms (``--fast-commit-ms``) to show
  its effect. Each pass starts a fresh agent and buffer against the same simulator, warms up
  (``--warmup`` seconds, the first publishes ignored), measures for ``--seconds`` and then waits
  for the window's changes to be committed.

Target: p99 of change -> commit below one publishing interval + 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import logging
import math
import os
import platform
import queue
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.benchmarks.reporting import BenchError, Report, cpu_model, note, package_version

REPO_ROOT = Path(__file__).resolve().parents[2]
GW = "gw-bench-opcua"
DEVICE = "bms"
ZONE = "cold-1"
MONITORED_POINTS = ("temperature", "humidity")
UNITS = {"temperature": "Cel", "humidity": "%"}
BASE_VALUES = {"temperature": 5.0, "humidity": 45.0}
TARGET_MARGIN_MS = 100.0
CHILD_START_SECS = 60.0
AGENT_START_SECS = 60.0
SIM_UPDATE_IDLE_SECS = 3600.0  # the simulator's own update task: effectively never


def quiet_asyncua() -> None:
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)


def zone_name(index: int) -> str:
    return f"z{index:04d}"


def monitored_items(items: int) -> list[tuple[str, str]]:
    """The first ``items`` of (zone, point) over ceil(items / 2) zones, two points each."""
    zones = math.ceil(items / len(MONITORED_POINTS))
    keys = [(zone_name(z), p) for z in range(zones) for p in MONITORED_POINTS]
    return keys[:items]


# -- the simulator child ---------------------------------------------------------------------


@dataclass
class ChangerStats:
    rounds: int = 0
    late_slices: int = 0
    max_lag_secs: float = 0.0


async def change_every_second(
    sim: Any, keys: Sequence[tuple[str, str]], slices: int, stats: ChangerStats
) -> None:
    """Give every item a new value once a second, in ``slices`` slices spread over the second."""
    loop = asyncio.get_running_loop()
    bounds = [len(keys) * j // slices for j in range(slices + 1)]
    start = loop.time() + 0.2
    tick = 0
    while True:
        due = start + tick / slices
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            stats.late_slices += 1
        slice_index, round_index = tick % slices, tick // slices
        for i in range(bounds[slice_index], bounds[slice_index + 1]):
            zone, point = keys[i]
            # (round + i) % 97 differs from one round to the next, so every write is a change
            value = BASE_VALUES[point] + 0.01 * ((round_index + i) % 97)
            await sim.set_value(zone, point, value)
        stats.max_lag_secs = max(stats.max_lag_secs, loop.time() - due)
        if slice_index == slices - 1:
            stats.rounds += 1
        tick += 1


async def child_sim_main(items: int, slices: int) -> int:
    """Serve the simulator; print one JSON line (endpoint, node ids), then answer commands from
    stdin, one JSON line each: ``count A B`` (changes with SourceTimestamp in [A, B)) and
    ``stats``. EOF or anything else stops it."""
    quiet_asyncua()
    from gxpgate.simulators.opcua_sim import OpcUaSimulator, ZoneSpec

    keys = monitored_items(items)
    zones = [ZoneSpec(zone_name(z), drift=False) for z in range(math.ceil(items / 2))]
    stamps: list[float] = []
    recording = False

    def clock() -> float:
        # The simulator reads its clock once per write and uses it as the SourceTimestamp.
        now = time.time()
        if recording:
            stamps.append(now)
        return now

    sim = OpcUaSimulator(zones, update_interval_secs=SIM_UPDATE_IDLE_SECS, clock=clock)
    stats = ChangerStats()
    async with sim:
        nodes = {f"{zone}.{point}": sim.node_id(zone, point) for zone, point in keys}
        hello = {"endpoint": sim.endpoint, "ns": sim.namespace_index, "nodes": nodes}
        print(json.dumps(hello), flush=True)
        recording = True
        changer = asyncio.create_task(change_every_second(sim, keys, slices, stats))
        try:
            while True:
                line = await asyncio.to_thread(sys.stdin.readline)
                cmd, *arg = line.split() or [""]
                if changer.done():
                    changer.result()  # raises what stopped it
                if cmd == "count":
                    low, high = float(arg[0]), float(arg[1])
                    n = bisect.bisect_left(stamps, high) - bisect.bisect_left(stamps, low)
                    out: dict[str, Any] = {"changes": n}
                elif cmd == "stats":
                    out = {
                        "rounds": stats.rounds,
                        "late_slices": stats.late_slices,
                        "max_lag_ms": stats.max_lag_secs * 1000,
                        "changes": len(stamps),
                    }
                else:
                    break
                print(json.dumps(out), flush=True)
        finally:
            changer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await changer
    return 0


class SimChild:
    """The simulator process: started, talked to over stdin/stdout, always killed."""

    def __init__(self, items: int, slices: int, stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        self._stderr: IO[bytes] = open(stderr_path, "wb")  # noqa: SIM115 - closed in close()
        command = [
            sys.executable,
            "-m",
            "tests.benchmarks.bench_opcua",
            "--child-sim",
            "--items",
            str(items),
            "--slices",
            str(slices),
        ]
        self.proc = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="sim-stdout", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def receive(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"simulator silent for {timeout:.0f} s{self._tail()}") from None
        if line is None:
            raise BenchError(f"simulator exited ({self.proc.poll()}){self._tail()}")
        try:
            doc: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            raise BenchError(f"simulator said {line.strip()!r}{self._tail()}") from None
        return doc

    def ask(self, command: str, timeout: float = 10.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise BenchError(f"simulator gone: {exc}{self._tail()}") from exc
        return self.receive(timeout)

    def cpu_secs(self) -> float:
        """utime + stime of the child from /proc/<pid>/stat."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rpartition(")")[2].split()
        # after the ")" of comm: fields[0] is field 3 (state); utime and stime are 14 and 15
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            self._stderr.flush()
            text = self.stderr_path.read_text(encoding="utf-8", errors="replace").strip()
            if text:
                return f"; its stderr ends:\n{text[-2000:]}"
        return ""

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(OSError):
                    assert self.proc.stdin is not None
                    self.proc.stdin.close()  # EOF: the child stops its server and exits
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._stderr.close()
            with contextlib.suppress(OSError):
                if self.proc.stdout is not None:
                    self.proc.stdout.close()


# -- statistics ------------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (nan when empty)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


# -- one pass: the agent against the simulator -----------------------------------------------


@dataclass
class Probe:
    """The Recorder listener: latencies of the readings whose change fell in the window."""

    start: float = math.inf
    end: float = math.inf
    change_to_commit_ms: list[float] = field(default_factory=list)
    change_to_acq_ms: list[float] = field(default_factory=list)
    acq_to_commit_ms: list[float] = field(default_factory=list)
    acquired_in_window: int = 0
    readings_without_src_at: int = 0
    groups_in_window: int = 0
    facts_in_window_groups: int = 0
    group_spread_ms: list[float] = field(default_factory=list)
    """Per commit group: last minus first acquisition time of its readings (the client's
    handling of one publish response, notification after notification)."""
    group_tail_ms: list[float] = field(default_factory=list)
    """Per commit group: last acquisition -> commit (recorder wait, seal, append, fsync)."""

    def on_commit(self, facts: Sequence[Any]) -> None:
        now = time.time()
        if self.start <= now < self.end:
            self.groups_in_window += 1
            self.facts_in_window_groups += len(facts)
        first_at, last_at = math.inf, -math.inf
        for fact in facts:
            if fact.kind != "reading":
                continue
            at = fact.at_secs
            first_at, last_at = min(first_at, at), max(last_at, at)
            if self.start <= at < self.end:
                self.acquired_in_window += 1
            if fact.src_at is None:
                self.readings_without_src_at += 1
                continue
            src = fact.src_secs
            if self.start <= src < self.end:
                self.change_to_commit_ms.append((now - src) * 1000)
                self.change_to_acq_ms.append((at - src) * 1000)
                self.acq_to_commit_ms.append((now - at) * 1000)
        if self.start <= first_at < self.end:
            self.group_spread_ms.append((last_at - first_at) * 1000)
            self.group_tail_ms.append((now - last_at) * 1000)


@dataclass
class PassResult:
    commit_interval_ms: int
    window_start: float
    window_end: float
    seconds: float
    probe: Probe
    agent_cpu_secs: float
    sim_cpu_secs: float
    sealed_in_window: int
    changes: int = 0
    """Changes the simulator made in the window (its SourceTimestamps), asked afterwards."""


def write_config(
    directory: Path,
    endpoint: str,
    nodes: dict[str, str],
    *,
    publishing_ms: int,
    sampling_ms: int,
    commit_interval_ms: int | None,
) -> Path:
    from gxpgate.agent.evidence import generate_key_file

    directory.mkdir(parents=True)
    key_file = directory / "signing.key"
    generate_key_file(key_file)
    commit = "" if commit_interval_ms is None else f"commit_interval_ms = {commit_interval_ms}\n"
    points = "\n".join(
        f'points."{name}" = {{ node_id = "{node}", unit = "{UNITS[name.rsplit(".", 1)[1]]}" }}'
        for name, node in nodes.items()
    )
    text = f"""
[gateway]
id = "{GW}"
site = "OPC UA benchmark"

[signing]
key_file = "{key_file}"

[buffer]
path = "{directory / "buffer.db"}"
{commit}
[zones.{ZONE}]
profile = "refrigerated"

[devices.{DEVICE}]
type = "opcua"
endpoint = "{endpoint}"
zone = "{ZONE}"
mode = "subscription"
publishing_interval_ms = {publishing_ms}
sampling_interval_ms = {sampling_ms}
reconnect_max_secs = 2
{points}
"""
    path = directory / "gxpgate.toml"
    path.write_text(text, encoding="utf-8")
    return path


def cpu_self_secs() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def watch(task: asyncio.Task[None], secs: float) -> None:
    """Sleep ``secs``, failing at once if the agent task ends meanwhile."""
    done, _ = await asyncio.wait({task}, timeout=max(secs, 0.0))
    if done:
        if task.cancelled():
            raise BenchError("the agent task was cancelled")
        exc = task.exception()
        raise BenchError(f"the agent stopped early: {exc!r}") from exc


async def run_pass(
    args: argparse.Namespace,
    directory: Path,
    hello: dict[str, Any],
    sim: SimChild,
    commit_interval_ms: int | None,
) -> PassResult:
    from gxpgate.agent.devices.supervisor import DeviceStreamer
    from gxpgate.agent.service.runtime import Agent
    from gxpgate.config import load_config

    quiet_asyncua()
    config = write_config(
        directory,
        hello["endpoint"],
        hello["nodes"],
        publishing_ms=args.publishing_ms,
        sampling_ms=args.sampling_ms,
        commit_interval_ms=commit_interval_ms,
    )
    loaded = load_config(config)
    effective_commit_ms = loaded.config.buffer.commit_interval_ms
    probe = Probe()
    ready = asyncio.Event()
    stop = asyncio.Event()

    def on_ready(_agent: Agent) -> None:
        ready.set()

    agent = Agent(loaded, on_ready=on_ready, listeners=[probe.on_commit])
    task = asyncio.create_task(agent.run(stop), name="agent")
    try:
        deadline = time.monotonic() + AGENT_START_SECS
        while not ready.is_set():
            if time.monotonic() > deadline:
                raise BenchError("the agent did not start")
            await watch(task, 0.05)
        streamer = next(p for p in agent.pollers if p.device == DEVICE)
        if not isinstance(streamer, DeviceStreamer):
            raise BenchError(f"device {DEVICE} is not streamed: {type(streamer).__name__}")
        started = time.monotonic()
        while streamer.batches < 1:
            if time.monotonic() > deadline:
                raise BenchError(f"no subscription after {AGENT_START_SECS:.0f} s")
            await watch(task, 0.05)
        note(f"  subscribed {len(hello['nodes'])} items in {time.monotonic() - started:.1f} s")
        await watch(task, args.warmup)
        recorder = agent.recorder
        assert recorder is not None
        sealed0, cpu0, sim0 = recorder.sealed, cpu_self_secs(), sim.cpu_secs()
        probe.start = time.time()
        probe.end = probe.start + args.seconds
        t0 = time.perf_counter()
        await watch(task, args.seconds)
        elapsed = time.perf_counter() - t0
        sealed1, cpu1, sim1 = recorder.sealed, cpu_self_secs(), sim.cpu_secs()
        window_end = probe.start + elapsed
        # Wait for the window's changes to be published and committed, then stop counting.
        drain = args.publishing_ms / 1000 + effective_commit_ms / 1000 + 1.0
        await watch(task, drain)
        probe.end = window_end
        if not streamer.online:
            raise BenchError(f"device went offline during the pass: {streamer.last_error}")
    finally:
        stop.set()
        with contextlib.suppress(BaseException):
            async with asyncio.timeout(30):
                await task
        if not task.done():
            task.cancel()
    return PassResult(
        commit_interval_ms=effective_commit_ms,
        window_start=probe.start,
        window_end=window_end,
        seconds=elapsed,
        probe=probe,
        agent_cpu_secs=cpu1 - cpu0,
        sim_cpu_secs=sim1 - sim0,
        sealed_in_window=sealed1 - sealed0,
    )


def report_pass(rep: Report, args: argparse.Namespace, label: str, result: PassResult) -> None:
    probe, secs = result.probe, result.seconds
    target = args.publishing_ms + TARGET_MARGIN_MS
    rep.text(
        f"window {secs:.1f} s; commit_interval_ms = {result.commit_interval_ms}"
        f"{' (config default)' if label == 'default' else ''}"
    )
    k = f"commit{result.commit_interval_ms}_"
    rep.add(k + "items", "monitored items", float(args.items), "items")
    changes = float(result.changes)
    rep.add(k + "changes_per_s", "changes made by the simulator", changes / secs, "/s")
    rep.add(
        k + "notifications_per_s",
        "notifications received (readings acquired in the window)",
        probe.acquired_in_window / secs,
        "/s",
    )
    rep.add(
        k + "sealed_per_s", "records sealed and committed", result.sealed_in_window / secs, "/s"
    )
    groups = probe.groups_in_window
    rep.add(k + "commit_groups_per_s", "commit groups", groups / secs, "/s")
    rep.add(
        k + "group_size",
        "    mean records per group",
        probe.facts_in_window_groups / groups if groups else math.nan,
        "records",
    )
    got = len(probe.change_to_commit_ms)
    rep.add(k + "changes_sealed", "window's changes sealed and committed", float(got), "records")
    rep.add(k + "changes_lost", "    of the simulator's changes, not committed", changes - got, "")
    if probe.readings_without_src_at:
        rep.add(k + "no_src_at", "readings without src_at", float(probe.readings_without_src_at))
    series = (
        ("change_to_acq", "change -> acquisition (server publish, client)", probe.change_to_acq_ms),
        ("acq_to_commit", "acquisition -> commit (queue, seal, fsync)", probe.acq_to_commit_ms),
        ("change_to_commit", "change -> commit (end to end)", probe.change_to_commit_ms),
    )
    for key, title, values in series:
        ordered = sorted(values)
        rep.text(f"{title}:")
        for name, q in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("max", 100.0)):
            below = target if key == "change_to_commit" and name == "p99" else None
            summary = (
                f"change -> commit p99, commit interval {result.commit_interval_ms} ms"
                f" (< publishing {args.publishing_ms} + {TARGET_MARGIN_MS:.0f} ms)"
            )
            rep.add(
                f"{k}{key}_{name}_ms",
                f"    {name}",
                percentile(ordered, q),
                "ms",
                below=below,
                summary=summary,
            )
    spread, tail = sorted(probe.group_spread_ms), sorted(probe.group_tail_ms)
    rep.text("per commit group (one publish response each when publishing >= commit interval):")
    rep.add(k + "group_spread_p50_ms", "    first -> last acquisition in the group, p50",
            percentile(spread, 50), "ms")  # fmt: skip
    rep.add(k + "group_spread_max_ms", "    first -> last acquisition in the group, max",
            percentile(spread, 100), "ms")  # fmt: skip
    rep.add(k + "group_tail_p50_ms", "    last acquisition -> commit, p50",
            percentile(tail, 50), "ms")  # fmt: skip
    rep.add(k + "group_tail_max_ms", "    last acquisition -> commit, max",
            percentile(tail, 100), "ms")  # fmt: skip
    rep.add(k + "agent_cpu_pct", "agent process CPU (user+sys, % of one core)",
            result.agent_cpu_secs / secs * 100, "%")  # fmt: skip
    rep.add(k + "sim_cpu_pct", "simulator process CPU (for context)",
            result.sim_cpu_secs / secs * 100, "%")  # fmt: skip


# -- the run ---------------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "asyncua": package_version("asyncua"),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.bench_opcua",
        description="Benchmark the OPC UA subscription path: change -> sealed record latency "
        "and agent CPU.",
    )
    parser.add_argument("--items", type=int, default=1000, help="monitored items (default 1000)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement window per pass")
    parser.add_argument("--publishing-ms", type=int, default=1000, help="publishing interval")
    parser.add_argument("--sampling-ms", type=int, default=100, help="sampling interval")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds ignored per pass")
    parser.add_argument(
        "--slices", type=int, default=20, help="slices the items are written in over a second"
    )
    parser.add_argument(
        "--fast-commit-ms",
        type=int,
        default=20,
        help="commit_interval_ms of the second pass (0: no second pass)",
    )
    parser.add_argument("--child-sim", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.items < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--items and --seconds must be positive, --warmup not negative")
    if not 1 <= args.slices <= 1000:
        parser.error("--slices must be 1 to 1000")
    if not 10 <= args.publishing_ms <= 60_000 or args.sampling_ms < 0:
        parser.error("--publishing-ms must be 10 to 60000, --sampling-ms not negative")
    if args.fast_commit_ms < 0 or args.fast_commit_ms > 10_000:
        parser.error("--fast-commit-ms must be 0 to 10000")
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child_sim:
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(child_sim_main(args.items, args.slices))
        return 0
    quiet_asyncua()
    # SIGTERM (and SIGHUP) unwind like Ctrl-C, so the simulator child and temp dirs are cleaned.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    started = time.perf_counter()
    rep = Report("gxpgate.opcua")
    machine = machine_facts()
    params = {
        "items": args.items,
        "points": "temperature+humidity of ceil(items/2) zones",
        "publishing_ms": args.publishing_ms,
        "sampling_ms": args.sampling_ms,
        "slices_per_second": args.slices,
        "warmup_secs": args.warmup,
        "seconds": args.seconds,
    }
    print("gxpgate OPC UA subscription benchmark", flush=True)
    for name, value in {**machine, **params}.items():
        print(f"  {name:<18} {value}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gxpgate-bench-opcua-") as tmp_name:
        tmp = Path(tmp_name)
        sim: SimChild | None = None
        try:
            note(f"starting the simulator child with {args.items} items")
            sim = SimChild(args.items, args.slices, tmp / "sim.stderr")
            hello = sim.receive(CHILD_START_SECS)
            if len(hello["nodes"]) != args.items:
                raise BenchError(f"simulator has {len(hello['nodes'])} items, not {args.items}")
            print(f"  {'endpoint':<18} {hello['endpoint']}", flush=True)
            passes: list[tuple[str, int | None]] = [("default", None)]
            if args.fast_commit_ms:
                passes.append(("fast", args.fast_commit_ms))
            for index, (label, commit_ms) in enumerate(passes, 1):
                shown = "config default" if commit_ms is None else f"{commit_ms} ms"
                note(f"pass {index}: commit interval {shown}")
                try:
                    result = asyncio.run(
                        run_pass(args, tmp / f"pass-{index}", hello, sim, commit_ms)
                    )
                    counted = sim.ask(f"count {result.window_start!r} {result.window_end!r}")
                    result.changes = int(counted["changes"])
                except (BenchError, OSError, ValueError, KeyError) as exc:
                    rep.section(f"pass {index}: commit interval {shown}")
                    rep.error(f"pass {index}", exc)
                    continue
                rep.section(
                    f"pass {index}: {args.items} items, publishing {args.publishing_ms} ms, "
                    f"commit interval {result.commit_interval_ms} ms"
                )
                report_pass(rep, args, label, result)
            stats = sim.ask("stats")
            rep.section("simulator schedule")
            rep.add("sim_rounds", "rounds of changes (every item once per round)",
                    float(stats["rounds"]), "")  # fmt: skip
            rep.add("sim_late_slices", "slices started late (sim fell behind its schedule)",
                    float(stats["late_slices"]), "")  # fmt: skip
            rep.add("sim_max_lag_ms", "    worst lag of a slice's last write behind schedule",
                    float(stats["max_lag_ms"]), "ms")  # fmt: skip
        except (BenchError, OSError, ValueError, KeyError) as exc:
            rep.error("setup", exc)
        finally:
            if sim is not None:
                sim.close()
    wall = time.perf_counter() - started
    rep.summary()
    print(f"\n  wall time {wall:.1f} s", flush=True)
    print(rep.as_json(machine, wall, params), flush=True)
    return 1 if rep.errors else 0


if __name__ == "__main__":
    sys.exit(main())
