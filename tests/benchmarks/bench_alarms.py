"""Alarms benchmark: the rules engine's cost per reading, and excursion → MQTT alarm latency.

Run from the repository root::

    .venv/bin/python -m tests.benchmarks.bench_alarms [--readings 200000] [--excursions 100]
    .venv/bin/python -m tests.benchmarks.bench_alarms --quick      # under a minute

A script, not a pytest test (pytest does not collect ``bench_*.py``; keep it that way). It
prints one table per section, a summary of the targets, and finally one JSON line with every
figure. Progress notes go to stderr.

1. Rule evaluation, pure (:class:`gxpgate.agent.alarms.rules.Engine`, no I/O): 1,000 points, each
   with the built-in ``refrigerated`` temperature rules (low_low 0, low 2, high 8 °C, hysteresis
   0.5, on-delay 900 s / off-delay 300 s, rate 0.5 °C/min over 10 min, MKT 8 °C over 24 h, sensor
   fault after 3 bad readings, comm loss after 3 intervals), polled every 10 s (the Modbus
   default). Each engine is first given 24 h of history (48 readings per point, 30 min apart,
   untimed) so every point's rolling MKT holds its full 48 buckets, as on a gateway that has
   been running a day. Then ``--readings`` readings (200,000; --quick 150,000; 200 rounds of
   all points are 2,000 s of plant time) are fed round-robin and timed with
   ``perf_counter_ns``: values around 3.5 to 6.5 °C with a slow swing and 0.05 °C noise, a
   few bad readings, and excursions that make transitions (10 points at 9.5 °C from round 10
   to 110: rate, then high after the 900 s on-delay, both cleared; 5 points at -0.5 °C for
   rounds 60 to 70: low_low at once, rate; 2 points with 5 bad readings in a row: sensor
   fault). Median of ``--runs`` runs, each on a fresh engine fed the history reading by
   reading (an engine restored with ``Engine.load`` holds its state compactly in memory and
   runs markedly faster, so it would flatter the figure). Target: < 20 µs per reading. The
   same workload with rules switched off gives the split (from the fastest run of each; the
   runs of all variants are interleaved, and each run's CPU steal from the hypervisor is shown
   when there was any). Also timed:
   :meth:`Engine.checkpoint` (the service makes one every ``alarms.snapshot_secs``, 60 s, on
   the event loop) — the first one (everything), one after 60 s of readings (6 rounds), one
   with nothing new — and :meth:`Engine.tick` (every 1 s). ``--profile`` adds a cProfile of
   one full run.
2. Alarm latency end to end: a real broker (mosquitto if installed, else amqtt; as
   :mod:`tests.broker`), the Modbus TCP simulator (:class:`gxpgate.simulators.modbus_sim.
   ModbusSimulator`, in this process and event loop, as in the tests) and the real agent
   (:class:`tests.running.Running`): one ``modbus_tcp`` device polled every ``--poll`` s
   (0.5), zone ``cold-1`` (refrigerated) with ``high = {limit = 8.0}``, no on/off delays, rate,
   MKT and comm loss off, ``[alarms.mqtt]`` at the broker, ``buffer.commit_interval_ms`` at
   its default (200; the recorder commits a burst once it has been quiet for 10 ms). A paho
   subscriber in its own thread (``loop_start``) on ``gxpgate/{gw}/alarms/#`` stamps each
   message's arrival with ``time.monotonic()``. Each excursion waits a random time (uniform
   over one poll interval, so the poll phase is uniform), sets the simulator to 9.5 °C (t0 is
   taken right before ``set_value``), waits for the ``active`` message, sets 5.0 °C, waits for
   ``cleared``. Latency = arrival - t0. Target: p99 < one poll interval + 50 ms. The breakdown
   comes from a recorder listener (commit times of the reading and of the alarm record) and the
   reading's acquisition time ``at`` (wall clock, converted to monotonic with the offset taken
   at t0): poll wait (t0 → reading acquired, includes the Modbus request), reading acquired →
   committed, reading committed → alarm record committed (engine, alarm queue, second group
   commit), alarm committed → subscriber (paho publish, broker, delivery).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import logging
import math
import os
import platform
import pstats
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if not __package__:  # run as a file path: make the repository's packages importable
    sys.path.insert(0, str(REPO_ROOT))

from tests.benchmarks.reporting import (  # noqa: E402
    BenchError,
    Report,
    cpu_model,
    filesystem_of,
    note,
    package_version,
)

if TYPE_CHECKING:
    import paho.mqtt.client as paho

    from gxpgate.agent.alarms.rules import Engine, PointRules, Reading
    from gxpgate.agent.service.runtime import Agent
    from gxpgate.config.rules_model import QuantityRules
    from gxpgate.simulators.modbus_sim import ModbusSimulator
    from tests.broker import Broker
    from tests.running import Running

GW = "gw-bench-alarms"
ZONE = "cold-1"
DEVICE = "probe-1"
POINT = "temperature"
LIMIT = 8.0
HIGH = 9.5
NORMAL = 5.0
WAIT_SECS = 10.0
"""Give up on one alarm message after this long."""

# -- section 1 workload --
POINTS = 1000
ENGINE_POLL_SECS = 10.0
HISTORY_READINGS = 48  # per point, 30 min apart: the 24 h MKT window's 48 buckets
HISTORY_STEP_SECS = 1800.0
EPOCH = 1_750_000_000.0  # plant time of the first timed round
HIGH_POINTS = range(0, POINTS, 100)  # 10 points
HIGH_ROUNDS = range(10, 110)
FREEZE_POINTS = range(50, POINTS, 200)  # 5 points
FREEZE_ROUNDS = range(60, 70)
FAULT_POINTS = (7, 507)
FAULT_ROUNDS = range(100, 105)
RANDOM_BAD = 0.0005
CHECKPOINT_ROUNDS = 6  # 60 s of readings at a 10 s poll: what one snapshot_secs brings
CHECKPOINTS = 5
TICKS = 20


def quiet_logs() -> None:
    """Every sealed alarm is logged as a warning (two per excursion); the figures say it."""
    from gxpgate.agent.service.logging_setup import quiet_libraries

    quiet_libraries()
    logging.getLogger("gxpgate.agent.alarms.outputs").setLevel(logging.ERROR)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# == section 1: the rules engine ==============================================================


@dataclass
class Workload:
    start: float
    history: list[Reading]
    timed: list[Reading]
    tail: list[list[Reading]]
    """CHECKPOINTS chunks of CHECKPOINT_ROUNDS rounds each, after the timed readings."""
    bad: int
    rounds: int


def make_workload(readings: int, seed: int) -> Workload:
    from gxpgate.agent.alarms.rules import Reading

    rng = random.Random(seed)
    base = [3.5 + 3.0 * rng.random() for _ in range(POINTS)]
    phase = [rng.random() * 2 * math.pi for _ in range(POINTS)]
    devices = [f"probe-{i:04d}" for i in range(POINTS)]
    seq = 0
    bad = 0

    def reading(i: int, t: float, value: float | None) -> Reading:
        nonlocal seq
        seq += 1
        quality = "good" if value is not None else "bad"
        return Reading(seq, devices[i], POINT, value, quality, t, t)

    history: list[Reading] = []
    first = EPOCH - HISTORY_READINGS * HISTORY_STEP_SECS
    for r in range(HISTORY_READINGS):
        for i in range(POINTS):
            t = first + r * HISTORY_STEP_SECS + i * 1e-3
            history.append(reading(i, t, round(base[i] + rng.gauss(0.0, 0.05), 3)))

    def value(i: int, r: int) -> float | None:
        nonlocal bad
        if (i in FAULT_POINTS and r in FAULT_ROUNDS) or rng.random() < RANDOM_BAD:
            bad += 1
            return None
        if i in HIGH_POINTS and r in HIGH_ROUNDS:
            return round(HIGH + rng.gauss(0.0, 0.05), 3)
        if i in FREEZE_POINTS and r in FREEZE_ROUNDS:
            return round(-0.5 + rng.gauss(0.0, 0.05), 3)
        swing = 0.2 * math.sin(2 * math.pi * r / 90 + phase[i])
        return round(base[i] + swing + rng.gauss(0.0, 0.05), 3)

    rounds = math.ceil(readings / POINTS)
    timed: list[Reading] = []
    for r in range(rounds):
        for i in range(POINTS):
            if len(timed) == readings:
                break
            timed.append(reading(i, EPOCH + r * ENGINE_POLL_SECS + i * 1e-3, value(i, r)))
    timed_bad = bad
    tail: list[list[Reading]] = []
    r = rounds
    for _ in range(CHECKPOINTS):
        chunk = []
        for _ in range(CHECKPOINT_ROUNDS):
            for i in range(POINTS):
                chunk.append(reading(i, EPOCH + r * ENGINE_POLL_SECS + i * 1e-3, value(i, r)))
            r += 1
        tail.append(chunk)
    return Workload(EPOCH, history, timed, tail, timed_bad, rounds)


def point_rules(rules: QuantityRules) -> list[PointRules]:
    from gxpgate.agent.alarms.rules import PointRules

    return [
        PointRules(ZONE, f"probe-{i:04d}", POINT, "Cel", rules, ENGINE_POLL_SECS)
        for i in range(POINTS)
    ]


def engine_with_history(points: list[PointRules], work: Workload) -> Engine:
    from gxpgate.agent.alarms.rules import Engine

    engine = Engine(points, now=work.history[0].t - 1)
    for reading in work.history:
        engine.observe(reading)
    return engine


def steal_secs() -> float:
    """CPU time the hypervisor gave to others (all cores), from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = handle.readline().split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


@dataclass
class EngineRun:
    ns: int
    readings: int
    transitions: dict[str, int]
    steal: float
    """Seconds of CPU steal during the run (all cores)."""

    @property
    def us_per_reading(self) -> float:
        return self.ns / self.readings / 1000


def timed_run(engine: Engine, work: Workload) -> EngineRun:
    observe = engine.observe
    outs = []
    gc.collect()
    steal0 = steal_secs()
    t0 = time.perf_counter_ns()
    for reading in work.timed:
        out = observe(reading)
        if out:
            outs.append(out)
    ns = time.perf_counter_ns() - t0
    steal = steal_secs() - steal0
    transitions: dict[str, int] = {}
    for out in outs:
        for tr in out:
            key = f"{tr.kind}:{tr.rule.rsplit('.', 1)[1]}:{tr.state}"
            transitions[key] = transitions.get(key, 0) + 1
    return EngineRun(ns, len(work.timed), transitions, steal)


def entries_bytes(entries: Mapping[str, str | None]) -> int:
    """Keys and values; an entry of None deletes its key (a chunk that left a window)."""
    return sum(len(k.encode()) + len((v or "").encode()) for k, v in entries.items())


def section_engine(args: argparse.Namespace, rep: Report) -> None:
    from gxpgate.config.profiles import BUILTIN_PROFILES

    full = BUILTIN_PROFILES["refrigerated"].temperature
    assert full is not None
    rep.section(f"1. Rule evaluation: {POINTS:,} points, refrigerated temperature rules")
    note(f"building the workload: {args.readings:,} readings")
    work = make_workload(args.readings, args.seed)
    names = ("low_low", "low", "high", "high_high", "rate", "mkt", "sensor_fault", "comm_loss")
    rep.text(
        f"rules: {', '.join(n for n in names if getattr(full, n))}; "
        f"on/off delay {full.on_delay_secs:g}/{full.off_delay_secs:g} s"
    )
    rep.text(
        f"{POINTS:,} points polled every {ENGINE_POLL_SECS:g} s; history {HISTORY_READINGS} "
        f"readings/point over 24 h (untimed); timed {len(work.timed):,} readings = "
        f"{work.rounds} rounds ({work.rounds * ENGINE_POLL_SECS:,.0f} s plant time), "
        f"{work.bad} bad; median of {args.runs} runs (variants: {args.variant_runs})"
    )
    variants: list[tuple[str, str, QuantityRules, int]] = [
        ("full", "all refrigerated rules", full, args.runs),
        ("no_mkt", "without MKT", full.model_copy(update={"mkt": False}), args.variant_runs),
        ("no_rate", "without rate", full.model_copy(update={"rate": False}), args.variant_runs),
        ("no_rate_mkt", "without rate and MKT",
         full.model_copy(update={"rate": False, "mkt": False}), args.variant_runs),
        ("limits_only", "limits only (no rate, MKT, sensor fault, comm loss)",
         full.model_copy(update={"rate": False, "mkt": False, "sensor_fault": False,
                                 "comm_loss": False}), args.variant_runs),
    ]  # fmt: skip
    # Every run builds its engine and feeds it the history reading by reading, as a running
    # gateway does: an engine restored from a checkpoint (Engine.load) holds its MKT buckets
    # and windows compactly in memory and runs much faster than one that grew them.
    points_of = {key: point_rules(rules) for key, _label, rules, _runs in variants}
    # Runs interleaved across the variants, so a noisy spell of the machine hits them all.
    results: dict[str, list[EngineRun]] = {key: [] for key, *_ in variants}
    full_engine: Engine | None = None
    for run in range(max(v[3] for v in variants)):
        for key, _label, _rules, runs in variants:
            if run >= runs:
                continue
            note(f"engine {key}: run {run + 1} of {runs}")
            full_engine = None if key == "full" else full_engine  # free it before the next
            engine = engine_with_history(points_of[key], work)
            results[key].append(timed_run(engine, work))
            if key == "full":
                full_engine = engine
            del engine
    medians: dict[str, float] = {}
    mins: dict[str, float] = {}
    for key, label, _rules, runs in variants:
        per = [r.us_per_reading for r in results[key]]
        medians[key], mins[key] = statistics.median(per), min(per)
        runs_text = ", ".join(
            f"{r.us_per_reading:.2f}" + (f" (steal {r.steal:.1f} s)" if r.steal >= 0.05 else "")
            for r in results[key]
        )
        if key == "full":
            rep.add("engine_us_per_reading", f"{label}: µs per reading, median of {runs}",
                    medians[key], "µs", below=20,
                    summary="rule evaluation, 1,000 points, µs per reading")  # fmt: skip
            rep.add("engine_min_us_per_reading", "    fastest run", mins[key], "µs")
            rep.add("engine_readings_per_s", "    readings per second, one core (median)",
                    1e6 / medians[key], "readings/s")  # fmt: skip
            rep.text(f"    runs: {runs_text} µs")
            first = results[key][0].transitions
            shown = ", ".join(f"{k} x{n}" for k, n in sorted(first.items()))
            rep.text(f"    transitions in one run: {shown or 'none'}")
            rep.text(
                "    (mkt: the history is one reading per 30-min bucket and MKT weighs readings "
                "equally, so the 10-s excursion readings outweigh 24 h of history on the "
                "hottest excursion points: an artefact of the short history)"
            )
        else:
            rep.add(f"engine_{key}_us_per_reading", f"{label}: median",
                    medians[key], "µs")  # fmt: skip
            rep.add(f"engine_{key}_min_us_per_reading", "    fastest run", mins[key], "µs")
            rep.text(f"    runs: {runs_text} µs")
    rep.text("")
    rep.text("split (differences of the fastest runs, the least disturbed by the machine):")
    rep.add("engine_split_mkt_us", "    MKT (full - without MKT)",
            mins["full"] - mins["no_mkt"], "µs")  # fmt: skip
    rep.add("engine_split_rate_us", "    rate (full - without rate)",
            mins["full"] - mins["no_rate"], "µs")  # fmt: skip
    rep.add("engine_split_fault_comm_us", "    sensor fault + comm loss",
            mins["no_rate_mkt"] - mins["limits_only"], "µs")  # fmt: skip
    rep.add("engine_split_limits_us", "    limits, lookup, the rest (limits only)",
            mins["limits_only"], "µs")  # fmt: skip
    assert full_engine is not None
    section_checkpoint(rep, full_engine, work)
    checkpoint_memory(rep, points_of["full"], work)
    if args.profile:
        profile_engine(rep, point_rules(full), work)


def checkpoint_memory(rep: Report, points: list[PointRules], work: Workload) -> None:
    """What an engine keeps between checkpoints to write only what changed: the memory still
    held after its first checkpoint, once the entries it returned are dropped."""
    note("engine: memory kept by a checkpoint")
    engine = engine_with_history(points, work)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        entries = engine.checkpoint()
        del entries
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    rep.add("checkpoint_kept_kb", "    memory the engine keeps after its first checkpoint",
            kept / 1024, "KiB")  # fmt: skip
    rep.add("checkpoint_kept_b_per_point", "        per point", kept / POINTS, "B")


def section_checkpoint(rep: Report, engine: Engine, work: Workload) -> None:
    note("engine: checkpoints and ticks")
    rep.text("")
    machines = sum(1 for _ in engine.machines)
    rep.text(f"checkpoint of the full engine ({POINTS:,} points, {machines:,} rule machines)")
    t0 = time.perf_counter_ns()
    first = engine.checkpoint()
    first_ms = (time.perf_counter_ns() - t0) / 1e6
    rep.add("checkpoint_first_ms", "    first checkpoint (every entry): time", first_ms, "ms")
    rep.add("checkpoint_first_entries", "        entries", float(len(first)), "")
    rep.add("checkpoint_first_kb", "        size (keys + values)",
            entries_bytes(first) / 1024, "KiB")  # fmt: skip
    point_keys = ("rules:p:", "rules:w:", "rules:mkt:")
    of_points = {k: v for k, v in first.items() if k.startswith(point_keys)}
    rep.add("checkpoint_first_points_kb",
            "        of which points (their entries, rate window chunks, MKT groups)",
            entries_bytes(of_points) / 1024, "KiB")  # fmt: skip
    times, sizes, counts = [], [], []
    for chunk in work.tail:
        for reading in chunk:
            engine.observe(reading)
        t0 = time.perf_counter_ns()
        entries = engine.checkpoint()
        times.append((time.perf_counter_ns() - t0) / 1e6)
        sizes.append(entries_bytes(entries))
        counts.append(len(entries))
    rep.add("checkpoint_60s_ms",
            f"    after 60 s of readings ({CHECKPOINT_ROUNDS} rounds; median of {len(times)})",
            statistics.median(times), "ms")  # fmt: skip
    rep.add("checkpoint_60s_entries", "        entries rewritten",
            float(statistics.median(counts)), "")  # fmt: skip
    rep.add("checkpoint_60s_kb", "        size (keys + values)",
            statistics.median(sizes) / 1024, "KiB")  # fmt: skip
    t0 = time.perf_counter_ns()
    idle = engine.checkpoint()
    idle_ms = (time.perf_counter_ns() - t0) / 1e6
    rep.add("checkpoint_idle_ms", "    with nothing new since the last one: time", idle_ms, "ms")
    rep.add("checkpoint_idle_entries", "        entries", float(len(idle)), "")
    now = work.tail[-1][-1].t + 1.0
    ticks = []
    for _ in range(TICKS):
        t0 = time.perf_counter_ns()
        out = engine.tick(now)
        ticks.append((time.perf_counter_ns() - t0) / 1e6)
        if out:
            raise BenchError(f"tick made {len(out)} transitions; the workload should make none")
    rep.add("tick_ms", f"Engine.tick() for {POINTS:,} points (every 1 s; median of {TICKS})",
            statistics.median(ticks), "ms")  # fmt: skip


def profile_engine(rep: Report, points: list[PointRules], work: Workload) -> None:
    note("engine: one profiled run (cProfile)")
    engine = engine_with_history(points, work)
    profiler = cProfile.Profile()
    profiler.enable()
    for reading in work.timed:
        engine.observe(reading)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(12)
    rep.text("")
    rep.text("cProfile of one full run (sorted by own time; cProfile inflates calls):")
    lines = out.getvalue().splitlines()
    start = next((n for n, line in enumerate(lines) if "ncalls" in line), 0)
    for line in lines[start:]:
        if line.strip():
            rep.text("    " + line.rstrip())


# == section 2: alarm latency end to end ======================================================


def choose_broker(wanted: str) -> str:
    from tests.broker import _mosquitto_path

    mosquitto = _mosquitto_path() is not None
    if wanted == "mosquitto" and not mosquitto:
        raise BenchError("--broker mosquitto, but mosquitto is not installed")
    if wanted in ("mosquitto", "amqtt"):
        return wanted
    return "mosquitto" if mosquitto else "amqtt"


def broker_version(kind: str) -> str:
    if kind == "amqtt":
        return f"amqtt {package_version('amqtt')}"
    from tests.broker import _mosquitto_path

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [_mosquitto_path() or "mosquitto", "-h"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        first = (out.stdout or out.stderr).splitlines()
        if first:
            return first[0].strip()
    return "mosquitto ?"


def write_config(directory: Path, modbus_port: int, broker_port: int, poll: float) -> Path:
    from gxpgate.agent.evidence import generate_key_file

    directory.mkdir(parents=True, exist_ok=True)
    key_file = directory / "signing.key"
    if not key_file.exists():
        generate_key_file(key_file)
    text = f"""
[gateway]
id = "{GW}"
site = "Alarms benchmark"

[signing]
key_file = "{key_file}"

[buffer]
path = "{directory / "buffer.db"}"

[zones.{ZONE}]
profile = "refrigerated"

[zones.{ZONE}.rules.temperature]
high = {{ limit = {LIMIT} }}
on_delay_secs = 0
off_delay_secs = 0
rate = false
mkt = false
comm_loss = false

[alarms.mqtt]
host = "127.0.0.1"
port = {broker_port}

[devices.{DEVICE}]
type = "modbus_tcp"
host = "127.0.0.1"
port = {modbus_port}
unit_id = 1
zone = "{ZONE}"
poll_interval_secs = {poll}
timeout_ms = 300
reconnect_max_secs = 0.5
points.{POINT} = {{ table = "input", address = 0, type = "float32", unit = "Cel" }}
"""
    path = directory / "gxpgate.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass(frozen=True)
class Arrival:
    mono: float
    topic: str
    alarm_id: str | None
    state: str | None
    seq: int | None


class Subscriber:
    """paho in its own thread (``loop_start``): every message on the filter, with the
    ``time.monotonic()`` of its arrival, taken first thing in ``on_message``."""

    def __init__(self, host: str, port: int, topic_filter: str) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.host, self.port, self.topic_filter = host, port, topic_filter
        self.arrivals: list[Arrival] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._started = False
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"bench-sub-{uuid.uuid4().hex[:12]}",
            clean_session=True,
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic_filter, qos=1)

    def _on_subscribe(self, _c: paho.Client, _u: Any, _mid: int, _r: Any, _p: Any) -> None:
        self._subscribed.set()

    def _on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        mono = time.monotonic()
        import orjson

        try:
            data = orjson.loads(message.payload) if message.payload else {}
        except orjson.JSONDecodeError:
            data = {}
        arrival = Arrival(mono, message.topic, data.get("alarm_id"), data.get("state"),
                          data.get("seq"))  # fmt: skip
        with self._lock:
            self.arrivals.append(arrival)
        loop, changed = self._loop, self._changed
        if loop is not None and changed is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(changed.set)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self.client.connect(self.host, self.port, keepalive=30)
        self._started = True
        self.client.loop_start()
        if not await asyncio.to_thread(self._subscribed.wait, WAIT_SECS):
            raise BenchError(f"the subscriber got no SUBACK in {WAIT_SECS:.0f} s")

    def stop(self) -> None:
        self._loop = None
        if self._started:
            self._started = False
            self.client.disconnect()
            self.client.loop_stop()

    def count(self) -> int:
        with self._lock:
            return len(self.arrivals)

    async def wait(
        self, after: int, match: Callable[[Arrival], bool], running: Running, what: str
    ) -> Arrival:
        """The first arrival from index ``after`` on that ``match`` es."""
        assert self._changed is not None
        deadline = time.monotonic() + WAIT_SECS
        while True:
            self._changed.clear()
            with self._lock:
                found = next((a for a in self.arrivals[after:] if match(a)), None)
            if found is not None:
                return found
            task = running.task
            if task is not None and task.done():
                raise BenchError(f"the agent stopped while waiting for {what}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"no {what} within {WAIT_SECS:.0f} s")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.5)):
                    await self._changed.wait()


@dataclass
class CommitProbe:
    """A recorder listener: when each temperature reading and each alarm record was
    committed (monotonic), and the reading's acquisition time (wall clock)."""

    readings: list[tuple[float, float, float | None]] = field(default_factory=list)
    """(commit monotonic, ``at`` epoch seconds, value)."""
    alarms: dict[tuple[str, str], float] = field(default_factory=dict)
    """(alarm_id, state) -> commit monotonic."""

    def on_commit(self, facts: Sequence[Any]) -> None:
        now = time.monotonic()
        for fact in facts:
            if fact.kind == "reading" and fact.device == DEVICE and fact.point == POINT:
                self.readings.append((now, fact.at_secs, fact.value))
            elif fact.kind == "alarm":
                self.alarms[(fact.data["alarm_id"], fact.data["state"])] = now

    def first_reading(self, since: float, test: Callable[[float], bool]) -> tuple[float, float]:
        """(commit monotonic, at) of the first reading committed after ``since`` passing
        ``test``."""
        for committed, at, value in self.readings:
            if committed >= since and value is not None and test(value):
                return committed, at
        return math.nan, math.nan


@dataclass
class Excursion:
    latency: float
    """Seconds from t0 to the ``active`` message's arrival."""
    poll_wait: float
    """t0 -> the excursion's first reading acquired (its ``at``)."""
    to_commit: float
    """Reading acquired -> reading committed."""
    to_alarm: float
    """Reading committed -> alarm record committed."""
    to_mqtt: float
    """Alarm record committed -> message arrived."""
    clear_latency: float
    seq_gap: int


def running_agent(config: Path, *hooks: Callable[[Agent], None]) -> Running:
    """:class:`tests.running.Running`, with ``hooks(agent)`` called as the agent becomes ready
    (before any device is polled), so no commit is missed by a listener."""
    from tests.running import Running

    running = Running(config)

    def on_ready(agent: Agent) -> None:
        for hook in hooks:
            hook(agent)
        running.ready.set()

    running.agent.on_ready = on_ready
    return running


async def one_excursion(
    modbus: ModbusSimulator,
    sub: Subscriber,
    probe: CommitProbe,
    running: Running,
    rng: random.Random,
    poll: float,
) -> Excursion:
    await asyncio.sleep(rng.uniform(0.0, poll))  # a uniform poll phase
    mark = sub.count()
    offset = time.time() - time.monotonic()
    t0 = time.monotonic()
    modbus.set_value(1, POINT, HIGH)
    active = await sub.wait(mark, lambda a: a.state == "active", running, "active message")
    mark = sub.count()
    t1 = time.monotonic()
    modbus.set_value(1, POINT, NORMAL)
    alarm_id = active.alarm_id
    cleared = await sub.wait(
        mark,
        lambda a: a.state == "cleared" and a.alarm_id == alarm_id,
        running,
        "cleared message",
    )
    reading_commit, reading_at = probe.first_reading(t0, lambda v: v > LIMIT)
    acquired = reading_at - offset
    alarm_commit = probe.alarms.get((alarm_id or "", "active"), math.nan)
    return Excursion(
        latency=active.mono - t0,
        poll_wait=acquired - t0,
        to_commit=reading_commit - acquired,
        to_alarm=alarm_commit - reading_commit,
        to_mqtt=active.mono - alarm_commit,
        clear_latency=cleared.mono - t1,
        seq_gap=(cleared.seq or 0) - (active.seq or 0),
    )


@dataclass
class LatencyResult:
    warmup: Excursion
    excursions: list[Excursion]
    secs: float
    polls: int
    overruns: int
    checkpoint_ms: float


async def latency_pass(args: argparse.Namespace, directory: Path, broker: Broker) -> LatencyResult:
    from gxpgate.simulators.modbus_sim import ModbusSimulator, SensorSpec
    from tests.running import observe

    rng = random.Random(args.seed)
    probe = CommitProbe()

    def hook(agent: Agent) -> None:
        observe(agent, probe.on_commit)

    sensor = SensorSpec(1, "cold-room-1", temperature_c=NORMAL, drift=False)
    async with ModbusSimulator([sensor]) as modbus:
        modbus.set_value(1, POINT, NORMAL)
        config = write_config(directory, modbus.port, broker.port, args.poll)
        sub = Subscriber(broker.host, broker.port, f"gxpgate/{GW}/alarms/#")
        try:
            await sub.start()
            running = running_agent(config, hook)
            async with running as agent:
                deadline = time.monotonic() + WAIT_SECS
                while not probe.readings:
                    if time.monotonic() > deadline:
                        raise BenchError("no reading committed within 10 s of the start")
                    await asyncio.sleep(0.02)
                note("latency: warm-up excursion (not counted)")
                warmup = await one_excursion(modbus, sub, probe, running, rng, args.poll)
                excursions = []
                polls0 = sum(getattr(p, "polls", 0) for p in agent.pollers)
                overruns0 = sum(getattr(p, "overruns", 0) for p in agent.pollers)
                t0 = time.perf_counter()
                for n in range(args.excursions):
                    if n % 10 == 0:
                        note(f"latency: excursion {n + 1} of {args.excursions}")
                    excursions.append(
                        await one_excursion(modbus, sub, probe, running, rng, args.poll)
                    )
                secs = time.perf_counter() - t0
                polls = sum(getattr(p, "polls", 0) for p in agent.pollers) - polls0
                overruns = sum(getattr(p, "overruns", 0) for p in agent.pollers) - overruns0
                assert agent.alarms is not None
                c0 = time.perf_counter_ns()
                agent.alarms.engine.checkpoint()
                checkpoint_ms = (time.perf_counter_ns() - c0) / 1e6
        finally:
            sub.stop()
    return LatencyResult(warmup, excursions, secs, polls, overruns, checkpoint_ms)


def section_latency(args: argparse.Namespace, rep: Report, tmp: Path, kind: str) -> None:
    from tests.broker import Broker, free_port

    rep.section("2. Alarm latency end to end: excursion at the simulator → MQTT subscriber")
    rep.text(
        f"broker {kind} ({broker_version(kind)}) on 127.0.0.1; Modbus TCP simulator in this "
        f"event loop; one modbus_tcp device polled every {args.poll:g} s"
    )
    rep.text(
        f"zone {ZONE}: high = {{limit = {LIMIT:g}}} (hysteresis 0.5 from the profile), on/off "
        "delay 0, rate/MKT/comm loss off; buffer.commit_interval_ms 200 (default; group commit "
        "once quiet for 10 ms)"
    )
    rep.text(
        f"{args.excursions} excursions {NORMAL:g} → {HIGH:g} °C, each after a random wait "
        f"uniform in 0..{args.poll:g} s; t0 right before set_value; latency = arrival of the "
        "'active' message - t0"
    )
    workdir = tmp / "broker"
    workdir.mkdir()
    broker = Broker(kind, workdir, free_port())  # type: ignore[arg-type]
    note(f"starting {kind} on port {broker.port}")
    broker.start()
    try:
        result = asyncio.run(latency_pass(args, tmp / "agent", broker))
    finally:
        broker.stop()
    report_latency(args, rep, result)


def report_latency(args: argparse.Namespace, rep: Report, r: LatencyResult) -> None:
    ms = 1000.0
    ex = r.excursions
    lat = [e.latency * ms for e in ex]
    target = args.poll * ms + 50
    w = r.warmup
    rep.text(
        f"warm-up excursion (not counted): {w.latency * ms:.1f} ms (poll wait "
        f"{w.poll_wait * ms:.1f} ms)"
    )
    rep.text(f"{len(ex)} excursions in {r.secs:.1f} s; {r.polls} polls, {r.overruns} overruns")
    rep.add("latency_median_ms", "alarm latency t0 → 'active' at the subscriber: median",
            statistics.median(lat), "ms")  # fmt: skip
    rep.add("latency_p90_ms", "    p90", percentile(lat, 90), "ms")
    rep.add("latency_p99_ms", f"    p99 (target: poll {args.poll * ms:.0f} ms + 50 ms)",
            percentile(lat, 99), "ms", below=target,
            summary="alarm latency p99 (poll interval + 50 ms)")  # fmt: skip
    rep.add("latency_max_ms", "    max", max(lat), "ms")
    rep.add("latency_min_ms", "    min", min(lat), "ms")
    rep.text("")
    rep.text("breakdown (median / p99 / max over the excursions):")
    parts = [
        ("poll_wait", "poll wait: t0 → reading acquired (incl. Modbus round trip)",
         [e.poll_wait for e in ex]),
        ("to_commit", "reading acquired → reading committed (group commit, seal, fsync)",
         [e.to_commit for e in ex]),
        ("to_alarm", "reading committed → alarm record committed (engine + 2nd commit)",
         [e.to_alarm for e in ex]),
        ("to_mqtt", "alarm record committed → message at the subscriber",
         [e.to_mqtt for e in ex]),
        ("rest", "latency - poll wait (everything after the reading is taken)",
         [e.latency - e.poll_wait for e in ex]),
    ]  # fmt: skip
    for key, label, values in parts:
        vals = [v * ms for v in values]
        rep.add(f"{key}_median_ms", f"    {label}", statistics.median(vals), "ms")
        rep.add(f"{key}_p99_ms", "        p99", percentile(vals, 99), "ms")
        rep.add(f"{key}_max_ms", "        max", max(vals), "ms")
    rest = [(e.latency - e.poll_wait) * ms for e in ex]
    slow = sum(1 for v in rest if v > 50)
    rep.add("rest_over_50ms", "    excursions whose latency - poll wait exceeded 50 ms",
            float(slow), f"of {len(ex)}")  # fmt: skip
    rep.add("latency_bound_ms", "    bound: poll interval + the largest latency - poll wait",
            args.poll * ms + max(rest), "ms")  # fmt: skip
    waits = [e.poll_wait * ms for e in ex]
    rep.text(
        f"    poll wait: mean {statistics.fmean(waits):.0f} ms (uniform phase: expected "
        f"{args.poll * ms / 2:.0f} ms), min {min(waits):.0f}, max {max(waits):.0f} ms"
    )
    clear = [e.clear_latency * ms for e in ex]
    rep.text("")
    rep.add("clear_latency_median_ms", "back to 5.0 °C → 'cleared' at the subscriber: median",
            statistics.median(clear), "ms")  # fmt: skip
    rep.add("clear_latency_p99_ms", "    p99 (the wait before it is not randomised)",
            percentile(clear, 99), "ms")  # fmt: skip
    rep.add("clear_latency_max_ms", "    max", max(clear), "ms")
    rep.add("agent_checkpoint_ms", "the agent's Engine.checkpoint() at the end (1 point)",
            r.checkpoint_ms, "ms")  # fmt: skip


# == the run ==================================================================================


def machine_facts(tmp: Path) -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "orjson": package_version("orjson"),
        "pymodbus": package_version("pymodbus"),
        "paho-mqtt": package_version("paho-mqtt"),
        "tmp_fs": filesystem_of(tmp),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.bench_alarms",
        description="Benchmark gxpgate's alarms: the rules engine's cost per reading with "
        "1,000 points, and the latency from an excursion to the retained MQTT alarm.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short run (under a minute): --readings 150000 --runs 3 --variant-runs 1 "
        "--excursions 20 "
        "(explicit options still win)",
    )
    parser.add_argument("--readings", type=int, default=None,
                        help="timed readings per engine run (default 200000; at least "
                        "150000 for the high alarms to clear)")  # fmt: skip
    parser.add_argument("--runs", type=int, default=None,
                        help="runs of the full rule set (default 5)")  # fmt: skip
    parser.add_argument("--variant-runs", type=int, default=None,
                        help="runs of each reduced rule set (default 2)")  # fmt: skip
    parser.add_argument("--excursions", type=int, default=None,
                        help="alarm excursions measured end to end (default 100)")  # fmt: skip
    parser.add_argument("--poll", type=float, default=0.5,
                        help="the device's poll_interval_secs (default 0.5)")  # fmt: skip
    parser.add_argument(
        "--broker",
        choices=("auto", "mosquitto", "amqtt"),
        default="auto",
        help="MQTT broker (default: mosquitto if installed, else amqtt)",
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--profile", action="store_true",
                        help="also print a cProfile of one full engine run")  # fmt: skip
    parser.add_argument("--skip-engine", action="store_true", help="only the latency")
    parser.add_argument("--skip-latency", action="store_true", help="only the engine")
    args = parser.parse_args(argv)
    quick = {"readings": 150_000, "runs": 3, "variant_runs": 1, "excursions": 20}
    full = {"readings": 200_000, "runs": 5, "variant_runs": 2, "excursions": 100}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.readings < POINTS or args.runs < 1 or args.variant_runs < 1:
        parser.error(f"--readings must be at least {POINTS}, --runs and --variant-runs >= 1")
    if args.excursions < 1 or args.poll <= 0:
        parser.error("--excursions and --poll must be positive")
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def leftover_threads(before: set[threading.Thread]) -> list[str]:
    """Threads started since ``before`` that have not ended within 5 s."""
    deadline = time.monotonic() + 5.0
    for thread in [t for t in threading.enumerate() if t not in before]:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [t.name for t in threading.enumerate() if t not in before and t.is_alive()]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logs()
    # SIGTERM (and SIGHUP) unwind like Ctrl-C, so the broker and the temp dir go.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    started = time.perf_counter()
    threads_before = set(threading.enumerate())
    rep = Report("gxpgate.alarms")
    kind = choose_broker(args.broker)
    with tempfile.TemporaryDirectory(prefix="gxpgate-bench-alarms-") as tmp_name:
        tmp = Path(tmp_name)
        machine = machine_facts(tmp)
        params: dict[str, Any] = {
            "points": POINTS,
            "readings": args.readings,
            "runs": args.runs,
            "variant_runs": args.variant_runs,
            "engine_poll_secs": ENGINE_POLL_SECS,
            "excursions": args.excursions,
            "poll_secs": args.poll,
            "broker": kind,
            "commit_interval_ms": 200,
            "seed": args.seed,
        }
        print("gxpgate alarms benchmark", flush=True)
        for name, value in {**machine, **params}.items():
            print(f"  {name:<26} {value}", flush=True)
        if not args.skip_engine:
            try:
                section_engine(args, rep)
            except Exception as exc:
                rep.error("engine", exc)
        if not args.skip_latency:
            try:
                section_latency(args, rep, tmp, kind)
            except Exception as exc:
                rep.error("latency", exc)
    left = leftover_threads(threads_before)
    if left:
        rep.error("cleanup", BenchError(f"threads left running: {left}"))
    else:
        print("\n  cleanup: broker stopped, no threads left behind", flush=True)
    wall = time.perf_counter() - started
    rep.summary()
    print(f"\n  wall time {wall:.1f} s", flush=True)
    print(rep.as_json(machine, wall, params), flush=True)
    return 1 if rep.errors else 0


if __name__ == "__main__":
    sys.exit(main())
