"""Footprint benchmark: what the evidence costs per reading on disk, on the wire, in memory and CPU.

Run from the repository root::

    .venv/bin/python -m tests.benchmarks.bench_footprint [--quick] [--devices 50,200,500]
        [--seconds 60] [--warmup 10] [--poll 1[,10]] [--config-extra FILE]
        [--workdir DIR [--keep]]

A script, not a pytest test (pytest does not collect ``bench_*.py``; keep it that way). It
prints one table per section, a summary of the targets, and finally one JSON line with every
figure. Progress notes go to stderr. Issue 17 ("Evidence cost") quotes its before/after figures.

The set-up is the real thing, all on 127.0.0.1 with ports picked at run time: the bundled Modbus
TCP simulator (``gxpgate simulate modbus``, one process, one port, sensors on unit ids 1-3) and
the agent (``gxpgate run -c CONFIG``), each a child process, with a signing key made by
``gxpgate keys generate``. The config has N ``modbus_tcp`` devices of 20 holding-register points
each (int16 and float32 temperatures in ``Cel``, uint16 humidities in ``%``; one request per
poll), all polled every P seconds; several devices share the simulator's port and unit ids, as
sensors behind one TCP-to-RS-485 gateway would. Devices on units 1 and 2 (about 5 °C) sit in a
``refrigerated`` zone, those on unit 3 (about 21 °C) in a ``controlled-room`` one, so every point
is watched by the built-in rules and none alarms. The uplink points at a closed port: every
record stays in the buffer, and the forwarder only retries with backoff (forwarding cost is not
in the CPU figure; section 2 times the body it would send). ``[clock] unsynced_readings =
"accept"``, so readings do not carry a ``clock_unsynced`` flag on a machine without NTP, as a
synchronised gateway's do not; the buffer quota is raised so that thinning never starts.
``--config-extra FILE`` merges a TOML fragment into every device table (its ``points`` table, if
any, into every point), e.g. a recording policy.

Each run: the agent starts, seals its first reading, runs ``--warmup`` seconds, then a steady
window of ``--seconds``; it is stopped with SIGTERM and its buffer examined. Runs: every
``--devices`` count at the first ``--poll``; each further poll with the first device count
(for section 1 only).

1. Bytes on disk per reading: ``buffer.db`` after ``PRAGMA wal_checkpoint(TRUNCATE)`` (the
   files as the agent left them are shown too; ``buffer.db.reserve``, fixed, and ``lots.db`` are
   not counted) over the reading records it holds, and per point-day at that poll
   (x 86400 / P); also the records table alone per record, the marginal cost once the fixed
   tables (the rule checkpoint) are amortised over a long run. Then where the bytes go: the
   average reading row's columns (``body`` is the sealed record's JSON, ``hash``/``at``/``kind``
   are copies of its fields), SQLite's per-row overhead (from ``dbstat``), the other records and
   the other tables (the alarm engine's checkpoint in ``state``) per reading, and the body's
   fields in canonical JSON. Target: <= 80 bytes per reading.
2. Bytes per reading on the wire: the stored records in batches of 1000 through the uplink's
   own :func:`gxpgate.agent.uplink.base.read_batch` (the JSON body, gzip level 1), gzipped bytes per
   reading, the body before gzip, and the time to build a batch. Target: <= 80 bytes.
3. Memory and CPU at each device count: VmRSS at the end of the window and VmHWM (peak) from
   ``/proc/PID/status``; the agent's utime+stime over the steady window per 1,000 readings
   taken in it, as the agent's own ``gxpgate_device_readings_total`` counts them at the
   window's start and end (sealed or not, so the figure means the same under either recording
   policy); the simulator's CPU. The readings taken in the window are checked against
   the expected N x 20 x seconds / P, per device too, and bad-quality readings and
   ``device_offline``/``device_failing`` events are counted: a simulator (or agent) that could
   not keep up is reported as such. VmRSS at the window's start gives its growth: the
   refrigerated profile's rate-of-change rule keeps 10 min of samples per temperature point, so
   memory rises until then (``--warmup 600`` for the level it settles at). Targets: RSS <= 60
   MiB at 50 devices, <= 80 MiB at 500; CPU <= 40 ms per 1,000 readings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any

import orjson
import rfc8785
from prometheus_client.parser import text_string_to_metric_families

from gxpgate.agent.uplink.base import read_batch
from gxpgate.buffer import Outbox
from gxpgate.buffer.packing import COLUMNS
from tests.benchmarks.reporting import (
    BenchError,
    Figure,
    Report,
    cpu_model,
    filesystem_of,
    note,
    package_version,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
GW = "gw-bench"
POINTS = 20
BATCH = 1000  # the uplink's default batch_max_records
TARGET_BYTES_PER_READING = 80.0
TARGET_RSS_MIB = {50: 60.0, 500: 80.0}
TARGET_CPU_MS = 40.0
KEEP_UP_SHARE = 0.97  # of the expected readings in the window
KEEP_UP_DEVICE_SHARE = 0.9  # the slowest device, of its expected readings
BAD_EVENTS = ("device_offline", "device_failing")
CLK_TCK = os.sysconf("SC_CLK_TCK")
RATE_WINDOW_MINS = 10  # config/profiles.toml: refrigerated.temperature.rate.window_mins
ZONES = {"cold-room-1": "refrigerated", "ambient-a": "controlled-room"}
# Point n of a device reads one of these holding registers of the simulator (its map, see
# simulators/modbus_sim.py): 100 int16 x 0.1 Cel, 101 uint16 x 0.1 %, 102-103 float32 CDAB Cel.
POINT_KINDS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("temp", {"table": "holding", "address": 100, "type": "int16", "scale": 0.1, "unit": "Cel"}),
    ("rh", {"table": "holding", "address": 101, "type": "uint16", "scale": 0.1, "unit": "%"}),
    (
        "temp",
        {
            "table": "holding",
            "address": 102,
            "type": "float32",
            "word_order": "little",
            "unit": "Cel",
        },
    ),
)


# -- small helpers ---------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_secs(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MiB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(rest.split()[0]) / 1024
    return out


def per(value: float, count: float) -> float:
    return value / count if count else float("nan")


def poll_tag(poll: float) -> str:
    return f"{poll:g}"


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def toml_value(value: object) -> str:
    """``value`` as TOML (inline tables for dicts); enough for a config fragment."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, datetime | date | dtime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise BenchError(f"cannot write {value!r} as TOML")


class FootprintReport(Report):
    def at_most(
        self, key: str, label: str, value: float, unit: str, limit: float, summary: str = ""
    ) -> Figure:
        """A figure with an inclusive upper target (the issue's "<=")."""
        ok = None if math.isnan(value) else value <= limit
        figure = Figure(key, label, value, unit, f"<= {limit:,.0f}", ok, summary or label)
        self.figures.append(figure)
        print(self._line(figure), flush=True)
        return figure


# -- the site: key, config, simulator --------------------------------------------------------


def load_extra(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        extra = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BenchError(f"--config-extra {path}: {exc}") from exc
    if "points" in extra and not isinstance(extra["points"], dict):
        raise BenchError(f"--config-extra {path}: points must be a table")
    return extra


def config_text(
    key: Path, devices: int, poll: float, ports: dict[str, int], extra: dict[str, Any]
) -> str:
    lines = [
        f"""[gateway]
id = "{GW}"
site = "Footprint bench"

[signing]
key_file = "{key}"

[buffer]
path = "buffer.db"
quota_mb = 65536

[uplink]
url = "http://127.0.0.1:{ports["uplink"]}"

[metrics]
address = "127.0.0.1"
port = {ports["metrics"]}

[clock]
unsynced_readings = "accept"
"""
    ]
    for zone, profile in ZONES.items():
        lines.append(f'\n[zones.{zone}]\nprofile = "{profile}"\n')
    point_extra = dict(extra.get("points", {}))
    device_extra = {k: v for k, v in extra.items() if k != "points"}
    for n in range(devices):
        unit = n % 3 + 1
        device: dict[str, Any] = {
            "type": "modbus_tcp",
            "host": "127.0.0.1",
            "port": ports["modbus"],
            "unit_id": unit,
            "zone": "ambient-a" if unit == 3 else "cold-room-1",
            "poll_interval_secs": poll,
        }
        device.update(device_extra)
        lines.append(f"\n[devices.probe-{n + 1:03d}]\n")
        lines.extend(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in device.items())
        for p in range(POINTS):
            name, spec = POINT_KINDS[p % len(POINT_KINDS)]
            lines.append(f"points.{name}-{p + 1:02d} = {toml_value({**spec, **point_extra})}\n")
    return "".join(lines)


def generate_key(folder: Path) -> Path:
    key = folder / "signing.key"
    done = subprocess.run(
        [sys.executable, "-m", "gxpgate", "keys", "generate", "--out", str(key)],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"gxpgate keys generate failed: {done.stderr[-2000:]}")
    return key


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def stop_child(proc: subprocess.Popen[bytes], within: float = 30.0) -> int | None:
    """SIGTERM, then SIGKILL after ``within`` seconds; the exit code, None when killed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(within)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def log_tail(path: Path, chars: int = 2000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    return ""


class Simulator:
    """``gxpgate simulate modbus`` as a child process on a free port of 127.0.0.1."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.out = folder / "modbus-sim.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "gxpgate", "simulate", "modbus"]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while "listening on" not in log_tail(self.out, 100_000):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the Modbus simulator did not start: {log_tail(self.out)}")
            time.sleep(0.1)
        note(f"Modbus simulator (pid {self.proc.pid}) on 127.0.0.1:{self.port}")

    def cpu(self) -> float:
        if self.proc is None or self.proc.poll() is not None:
            raise BenchError(f"the Modbus simulator is gone: {log_tail(self.out)}")
        return cpu_secs(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None:
            stop_child(self.proc, 10)
            self.proc = None


# -- one run of the agent --------------------------------------------------------------------


@dataclass
class Disk:
    left_bytes: int  # buffer.db + -wal + -shm as the agent left them
    file_bytes: int  # buffer.db after wal_checkpoint(TRUNCATE)
    page_size: int
    pages: int
    free_pages: int
    rows: int
    readings: int  # reading records held
    samples: int  # readings taken: a record under record = "interval" counts data.samples.count
    by_kind: dict[str, int]
    columns: dict[str, float]  # average bytes per reading row: at, kind, hash, body
    all_column_bytes: int  # every record row's columns, summed
    tables: dict[str, int]  # bytes per table/index (dbstat)
    state_rows: int
    quality: dict[str, int]
    events: dict[str, int]  # audit events of the whole run
    window_events: dict[str, int]  # audit events sealed in the steady window
    body_fields: dict[str, float]  # average canonical bytes per field of a reading body
    body_sample: int
    other_files: dict[str, int]


@dataclass
class Wire:
    batches: int
    records: int
    readings: int
    gzip_bytes: int
    raw_bytes: int
    build_secs: float


@dataclass
class Run:
    devices: int
    poll: float
    folder: Path
    window_secs: float = float("nan")
    agent_cpu: float = float("nan")
    sim_cpu: float = float("nan")
    seq_from: int = 0
    seq_to: int = 0
    lag_from: float = float("nan")  # newest record's age at the window's start, s
    lag_to: float = float("nan")
    rss_from: float = float("nan")  # VmRSS at the window's start, MiB
    memory: dict[str, float] = field(default_factory=dict)
    exit_code: int | None = None
    stop_secs: float = float("nan")
    window_readings: int = 0
    window_bad: int = 0
    per_device: list[int] = field(default_factory=list)
    disk: Disk | None = None
    wire: Wire | None = None

    @property
    def tag(self) -> str:
        return f"d{self.devices}_p{poll_tag(self.poll)}"

    @property
    def expected(self) -> float:
        return self.devices * POINTS * self.window_secs / self.poll

    def keep_up_problems(self) -> list[str]:
        problems: list[str] = []
        expected_device = POINTS * self.window_secs / self.poll
        if self.window_readings < KEEP_UP_SHARE * self.expected:
            problems.append(
                f"{self.window_readings:,} readings in the window, expected {self.expected:,.0f}"
            )
        if len(self.per_device) < self.devices:
            problems.append(f"only {len(self.per_device)} of {self.devices} devices read")
        elif self.per_device and min(self.per_device) < KEEP_UP_DEVICE_SHARE * expected_device:
            problems.append(
                f"slowest device {min(self.per_device)} readings, expected {expected_device:.0f}"
            )
        if self.window_bad:
            problems.append(f"{self.window_bad:,} bad-quality readings in the window")
        if self.disk is not None:
            events = {e: self.disk.window_events.get(e, 0) for e in BAD_EVENTS}
            if any(events.values()):
                problems.append(
                    ", ".join(f"{n} {e}" for e, n in events.items() if n) + " in the window"
                )
        return problems


def newest(path: Path) -> tuple[int, float]:
    """The newest seq and how far its ``at`` is behind the wall clock (s), read through a
    read-only connection while the agent runs."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        seq, at = conn.execute("SELECT seq, at FROM records ORDER BY seq DESC LIMIT 1").fetchone()
    finally:
        conn.close()
    return int(seq), time.time() - at / 1e6  # microseconds since 1970 (buffer/packing.py)


def readings_taken(port: int) -> dict[str, int]:
    """Readings taken so far per device, as the agent's metrics count them (sealed or not)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        sample.labels["device"]: int(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "gxpgate_device_readings_total"
    }


def wait_first_reading(proc: subprocess.Popen[bytes], log: Path, db: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise BenchError(f"the agent exited ({proc.returncode}): {log_tail(log)}")
        if time.monotonic() > deadline:
            raise BenchError(f"no reading sealed within 120 s: {log_tail(log)}")
        if Path(f"{db}.witness").exists():  # written after each commit
            with contextlib.suppress(sqlite3.Error):
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
                try:
                    row = conn.execute(
                        "SELECT 1 FROM records JOIN names ON names.id = records.kind"
                        " WHERE names.name = 'reading' LIMIT 1"
                    )
                    if row.fetchone() is not None:
                        return
                finally:
                    conn.close()
        time.sleep(0.2)


def sleep_watching(proc: subprocess.Popen[bytes], secs: float, log: Path) -> None:
    deadline = time.monotonic() + secs
    while (left := deadline - time.monotonic()) > 0:
        if proc.poll() is not None:
            raise BenchError(f"the agent exited ({proc.returncode}): {log_tail(log)}")
        time.sleep(min(1.0, left))


def run_agent(bench: Bench, devices: int, poll: float) -> Run:
    args = bench.args
    run = Run(devices, poll, bench.workdir / f"run-d{devices}-p{poll_tag(poll)}")
    run.folder.mkdir(parents=True)
    ports = {"modbus": bench.sim.port, "metrics": free_port(), "uplink": free_port()}
    config = run.folder / "gxpgate.toml"
    config.write_text(config_text(bench.key, devices, poll, ports, bench.extra), encoding="utf-8")
    db = run.folder / "buffer.db"
    log = run.folder / "agent.log"
    note(f"agent: {devices} devices x {POINTS} points, poll {poll:g} s ({run.folder.name})")
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gxpgate", "run", "-c", str(config)],
            cwd=REPO_ROOT,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_first_reading(proc, log, db)
        note(f"  first reading sealed; warm-up {args.warmup:g} s")
        sleep_watching(proc, args.warmup, log)
        run.seq_from, run.lag_from = newest(db)
        taken0 = readings_taken(ports["metrics"])
        cpu0, sim0, t0 = cpu_secs(proc.pid), bench.sim.cpu(), time.monotonic()
        run.rss_from = memory_mib(proc.pid)["VmRSS"]
        note(f"  steady window {args.seconds:g} s from seq {run.seq_from:,}")
        sleep_watching(proc, args.seconds, log)
        cpu1, sim1, t1 = cpu_secs(proc.pid), bench.sim.cpu(), time.monotonic()
        taken1 = readings_taken(ports["metrics"])
        run.per_device = [n - taken0.get(device, 0) for device, n in taken1.items() if n]
        run.window_readings = sum(run.per_device)
        run.seq_to, run.lag_to = newest(db)
        run.memory = memory_mib(proc.pid)
        run.window_secs = t1 - t0
        run.agent_cpu, run.sim_cpu = cpu1 - cpu0, sim1 - sim0
        note(
            f"  window: seq {run.seq_from:,}..{run.seq_to:,}, agent CPU {run.agent_cpu:.1f} s, "
            f"VmRSS {run.memory['VmRSS']:.1f} MiB; stopping (SIGTERM)"
        )
    finally:
        start = time.monotonic()
        run.exit_code = stop_child(proc)
        run.stop_secs = time.monotonic() - start
    if run.exit_code != 0:
        raise BenchError(f"the agent exited {run.exit_code} on SIGTERM: {log_tail(log)}")
    note("  examining the buffer")
    run.disk = examine_disk(db, run)
    note("  building uplink bodies")
    run.wire = examine_wire(db, args.wire_batches)
    return run


# -- examining the buffer --------------------------------------------------------------------


def file_sizes(db: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{db}{suffix}")
        if path.exists():
            sizes[path.name] = path.stat().st_size
    return sizes


def body_fields(bodies: Sequence[bytes]) -> dict[str, float]:
    """Average bytes per top-level field of the bodies, as canonical JSON writes them
    (``"key":value`` and its comma or brace)."""
    totals: dict[str, int] = {}
    for body in bodies:
        for name, value in orjson.loads(body).items():
            size = len(rfc8785.dumps(name)) + 1 + len(rfc8785.dumps(value)) + 1
            totals[name] = totals.get(name, 0) + size
    return {name: total / len(bodies) for name, total in totals.items()} if bodies else {}


def stored_size(value: object) -> int:
    """Bytes SQLite's record format spends on a value's body (its header byte aside)."""
    if value is None:
        return 0
    if isinstance(value, int):
        if value in (0, 1):
            return 0
        for size in (1, 2, 3, 4, 6):
            if -(2 ** (8 * size - 1)) <= value < 2 ** (8 * size - 1):
                return size
        return 8
    if isinstance(value, float):
        return 8
    return len(value)  # type: ignore[arg-type]


def examine_disk(db: Path, run: Run) -> Disk:
    left = file_sizes(db)
    disk = sqlite3.connect(db, isolation_level=None)
    try:
        disk.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = disk.execute("PRAGMA page_size").fetchone()[0]
        pages = disk.execute("PRAGMA page_count").fetchone()[0]
        free_pages = disk.execute("PRAGMA freelist_count").fetchone()[0]
        names = dict(disk.execute("SELECT id, name FROM names"))
        by_kind: dict[str, int] = {}
        totals: dict[str, int] = {}
        all_column_bytes = 0
        stored = disk.execute(f"SELECT {', '.join(COLUMNS)} FROM records")
        for row in stored:
            kind = names[row[2]]
            by_kind[kind] = by_kind.get(kind, 0) + 1
            sizes = [stored_size(value) for value in row[1:]]  # seq is the row id
            all_column_bytes += sum(sizes)
            if kind == "reading":
                for name, size in zip(COLUMNS[1:], sizes, strict=True):
                    totals[name] = totals.get(name, 0) + size
        readings = by_kind.get("reading", 0)
        columns = {name: total / readings for name, total in totals.items()} if readings else {}
        tables = dict(disk.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"))
        state_rows = disk.execute("SELECT count(*) FROM state").fetchone()[0]
    finally:
        disk.close()
    # The JSON questions are asked of the records as exported (the sealed bytes), in memory.
    conn = sqlite3.connect(":memory:")
    outbox = Outbox(db, GW)
    try:
        conn.execute("CREATE TABLE records (seq INTEGER PRIMARY KEY, kind TEXT, body BLOB)")
        conn.executemany(
            "INSERT INTO records VALUES (?, json_extract(CAST(? AS TEXT), '$.kind'), ?)",
            ((seq, body, body) for seq, body in outbox.pending(0, 10**12)),
        )
        text = "CAST(body AS TEXT)"
        taken = f"coalesce(json_extract({text}, '$.data.samples.count'), 1)"
        samples = conn.execute(
            f"SELECT coalesce(sum({taken}), 0) FROM records WHERE kind = 'reading'"
        ).fetchone()[0]
        quality = dict(
            conn.execute(
                f"SELECT coalesce(json_extract({text}, '$.quality'), 'null'), count(*)"
                " FROM records WHERE kind = 'reading' GROUP BY 1"
            )
        )
        events = dict(
            conn.execute(
                f"SELECT coalesce(json_extract({text}, '$.data.event'), '?'), count(*)"
                " FROM records WHERE kind = 'audit' GROUP BY 1"
            )
        )
        window = (run.seq_from, run.seq_to)
        window_events = dict(
            conn.execute(
                f"SELECT coalesce(json_extract({text}, '$.data.event'), '?'), count(*)"
                " FROM records WHERE kind = 'audit' AND seq > ? AND seq <= ? GROUP BY 1",
                window,
            )
        )
        run.window_bad = conn.execute(
            f"SELECT count(*) FROM records WHERE kind = 'reading' AND seq > ? AND seq <= ?"
            f" AND json_extract({text}, '$.quality') != 'good'",
            window,
        ).fetchone()[0]
        sample = [
            bytes(body)
            for (body,) in conn.execute(
                "SELECT body FROM records WHERE kind = 'reading' AND seq > ? ORDER BY seq"
                " LIMIT 5000",
                (run.seq_from,),
            )
        ]
    finally:
        conn.close()
        outbox.close()
    others = {
        name: (run.folder / name).stat().st_size
        for name in ("buffer.db.reserve", "lots.db")
        if (run.folder / name).exists()
    }
    return Disk(
        left_bytes=sum(left.values()),
        file_bytes=db.stat().st_size,
        page_size=page_size,
        pages=pages,
        free_pages=free_pages,
        rows=sum(by_kind.values()),
        readings=by_kind.get("reading", 0),
        samples=samples,
        by_kind=by_kind,
        columns=columns,
        all_column_bytes=all_column_bytes,
        tables=tables,
        state_rows=state_rows,
        quality=quality,
        events=events,
        window_events=window_events,
        body_fields=body_fields(sample),
        body_sample=len(sample),
        other_files=others,
    )


def examine_wire(db: Path, max_batches: int) -> Wire:
    """The uplink's bodies for the stored records, batch by batch, as the forwarder builds them."""
    import gzip

    outbox = Outbox(db, GW)
    batches = records = gzip_bytes = raw_bytes = 0
    build = 0.0
    after = 0
    try:
        while batches < max_batches:
            start = time.perf_counter()
            batch = read_batch(outbox, after, BATCH)
            if batch is None:
                break
            build += time.perf_counter() - start
            batches += 1
            records += batch.count
            gzip_bytes += len(batch.payload)
            raw_bytes += len(gzip.decompress(batch.payload))
            after = batch.last
        readings = 0
        for _, body in outbox.pending(0, after):
            record = orjson.loads(body)
            if record["kind"] == "reading":
                readings += record["data"].get("samples", {}).get("count", 1)
    finally:
        outbox.close()
    return Wire(batches, records, readings, gzip_bytes, raw_bytes, build)


# -- sections ---------------------------------------------------------------------------------


def section_disk(bench: Bench) -> None:
    rep = bench.report
    rep.section("1. Bytes on disk per reading (buffer.db after wal_checkpoint(TRUNCATE))")
    first: Run | None = None
    for run in bench.runs:
        disk = run.disk
        if disk is None:
            continue
        first = first or run
        where = f"{run.devices} devices, poll {run.poll:g} s"
        per_reading = per(disk.file_bytes, disk.samples)
        rep.at_most(
            f"disk_bytes_per_reading_{run.tag}",
            f"{where}: bytes per reading at rest",
            per_reading,
            "B",
            TARGET_BYTES_PER_READING,
            summary=f"bytes per reading on disk, {where}",
        )
        rep.add(
            f"disk_mib_per_point_day_{run.tag}",
            f"    per point-day at {run.poll:g} s (x {86400 / run.poll:,.0f} readings)",
            per_reading * 86400 / run.poll / 2**20,
            "MiB",
        )
        marginal = per(disk.tables.get("records", 0), disk.rows)
        rep.add(
            f"disk_records_tree_per_record_{run.tag}",
            "    records table alone, per record (the marginal cost)",
            marginal,
            "B",
        )
        records_per_reading = per(disk.rows, disk.samples)
        rep.add(
            f"disk_marginal_mib_per_point_day_{run.tag}",
            "    per point-day from the marginal cost (fixed tables amortised)",
            marginal * records_per_reading * 86400 / run.poll / 2**20,
            "MiB",
        )
        rep.add(f"disk_readings_{run.tag}", "    reading records held", disk.readings, "records")
        rep.add(
            f"disk_samples_{run.tag}",
            "    readings taken (a record by interval counts its data.samples)",
            disk.samples,
            "readings",
        )
        rep.text(
            f"    buffer.db {disk.file_bytes / 2**20:,.1f} MiB ({disk.pages:,} pages of "
            f"{disk.page_size}, {disk.free_pages:,} free); as the agent left it (db+wal+shm) "
            f"{disk.left_bytes / 2**20:,.1f} MiB; records by kind "
            + ", ".join(f"{k} {n:,}" for k, n in sorted(disk.by_kind.items()))
        )
        if disk.other_files:
            rep.text(
                "    not counted: "
                + ", ".join(f"{n} {s / 2**20:,.2f} MiB" for n, s in disk.other_files.items())
            )
    if first is None or first.disk is None:
        raise BenchError("no run examined")
    where_bytes_go(rep, first, first.disk)


def where_bytes_go(rep: FootprintReport, run: Run, disk: Disk) -> None:
    rep.section(f"1b. Where the bytes go ({run.devices} devices, poll {run.poll:g} s)")
    records_tree = disk.tables.get("records", 0)
    row_overhead = per(records_tree - disk.all_column_bytes, disk.rows)
    reading_row = sum(disk.columns.values()) + row_overhead
    labels = {
        "sig": "sig: the Ed25519 signature, raw",
        "hash": "hash: SHA-256 of the canonical bytes, raw",
        "at": "at: microseconds since 1970",
        "value": "value: the number as SQLite stores it",
        "data": "data: NULL for {}, else its JSON (deflated)",
        "body": "body: the sealed JSON, for records not packed",
    }
    for name in COLUMNS[1:]:
        label = labels.get(name, f"{name}: an id into names" if name != "src" else "src")
        rep.add(f"where_col_{name}", f"column {label}", disk.columns.get(name, 0.0), "B/reading")
    rep.add(
        "where_row_overhead",
        "SQLite per row: record header, cell, b-tree pages' slack",
        row_overhead,
        "B/reading",
    )
    rep.add(
        "where_other_records",
        "other records (audit, alarm, ...) per reading",
        per(records_tree - disk.readings * reading_row, disk.readings),
        "B/reading",
    )
    other_tables = disk.file_bytes - records_tree
    rep.add(
        "where_other_tables",
        f"other tables and free pages (state: {disk.state_rows:,} rows of rule checkpoint)",
        per(other_tables, disk.readings),
        "B/reading",
    )
    rep.text(
        "    tables and indexes (dbstat): "
        + ", ".join(
            f"{name} {size / 2**10:,.0f} KiB"
            for name, size in sorted(disk.tables.items(), key=lambda item: -item[1])
        )
    )
    rep.text(f"    body fields, canonical JSON, average of {disk.body_sample:,} reading bodies:")
    total = sum(disk.body_fields.values())
    for name, size in sorted(disk.body_fields.items(), key=lambda item: -item[1]):
        rep.add(f"where_field_{name}", f'    "{name}"', size, "B/reading")
    rep.text(
        f"    fields sum to {total:.1f} B (+1 for the opening brace); "
        f"the row holds {sum(disk.columns.values()):.1f} B of them (buffer/packing.py)"
    )


def section_wire(bench: Bench) -> None:
    rep = bench.report
    rep.section(f"2. Bytes per reading on the wire (uplink bodies of {BATCH} records, gzip -1)")
    for run in bench.runs:
        wire = run.wire
        if wire is None:
            continue
        where = f"{run.devices} devices, poll {run.poll:g} s"
        rep.at_most(
            f"wire_bytes_per_reading_{run.tag}",
            f"{where}: gzipped bytes per reading",
            per(wire.gzip_bytes, wire.readings),
            "B",
            TARGET_BYTES_PER_READING,
            summary=f"bytes per reading on the wire, {where}",
        )
        rep.add(
            f"wire_raw_bytes_per_reading_{run.tag}",
            "    the JSON body before gzip, per reading",
            per(wire.raw_bytes, wire.readings),
            "B",
        )
        rep.add(
            f"wire_ratio_{run.tag}",
            "    gzip ratio (raw / gzipped)",
            per(wire.raw_bytes, wire.gzip_bytes),
            "x",
        )
        rep.add(
            f"wire_build_ms_{run.tag}",
            f"    read_batch (read + join + gzip) per batch of {BATCH}",
            per(wire.build_secs * 1e3, wire.batches),
            "ms",
        )
        rep.text(
            f"    {wire.batches} batches, {wire.records:,} records of which "
            f"{wire.readings:,} readings, {wire.gzip_bytes / 2**20:,.1f} MiB gzipped"
        )


def section_memory_cpu(bench: Bench) -> None:
    rep = bench.report
    rep.section("3. Agent memory and CPU over the steady window")
    poll = bench.args.poll[0]
    shown = False
    for run in bench.runs:
        if run.poll != poll or not run.memory:
            continue
        shown = True
        where = f"{run.devices} devices x {POINTS}, poll {run.poll:g} s"
        target = TARGET_RSS_MIB.get(run.devices)
        if target is None:
            rep.add(
                f"rss_peak_mib_{run.tag}", f"{where}: VmHWM (peak RSS)", run.memory["VmHWM"], "MiB"
            )
        else:
            rep.at_most(
                f"rss_peak_mib_{run.tag}",
                f"{where}: VmHWM (peak RSS)",
                run.memory["VmHWM"],
                "MiB",
                target,
                summary=f"agent peak RSS, {where}",
            )
        rep.add(
            f"rss_end_mib_{run.tag}",
            "    VmRSS at the end of the window",
            run.memory["VmRSS"],
            "MiB",
        )
        rep.at_most(
            f"cpu_ms_per_1000_{run.tag}",
            "    agent CPU (utime+stime) per 1,000 readings taken",
            per(run.agent_cpu * 1e6, run.window_readings),
            "ms",
            TARGET_CPU_MS,
            summary=f"agent CPU per 1,000 readings, {where}",
        )
        rep.add(
            f"cpu_share_{run.tag}",
            "    agent CPU, share of one core",
            per(run.agent_cpu * 100, run.window_secs),
            "%",
        )
        rep.add(
            f"sim_cpu_share_{run.tag}",
            "    Modbus simulator CPU, share of one core",
            per(run.sim_cpu * 100, run.window_secs),
            "%",
        )
        rep.add(
            f"readings_per_sec_{run.tag}",
            "    readings taken per second in the window",
            per(run.window_readings, run.window_secs),
            "/s",
        )
        rep.add(
            f"keep_up_pct_{run.tag}",
            f"    of the expected {run.expected:,.0f} readings in {run.window_secs:.1f} s",
            per(run.window_readings * 100, run.expected),
            "%",
        )
        rep.add(f"bad_readings_{run.tag}", "    bad-quality readings in the window", run.window_bad)
        growth = per((run.memory["VmRSS"] - run.rss_from) * 60, run.window_secs)
        rep.add(
            f"rss_growth_mib_per_min_{run.tag}",
            f"    VmRSS growth over the window (from {run.rss_from:,.1f} MiB)",
            growth,
            "MiB/min",
        )
        if growth > 1:
            rep.text(
                "    VmRSS still growing: the refrigerated profile's rate-of-change rule keeps "
                f"{RATE_WINDOW_MINS} min of (time, value)"
            )
            rep.text(
                "    per temperature point, so memory levels off only after that "
                f"(--warmup {RATE_WINDOW_MINS * 60} for the steady figure)"
            )
        rep.add(
            f"lag_end_secs_{run.tag}",
            f"    newest record's age at the window's end (start {run.lag_from:.2f} s)",
            run.lag_to,
            "s",
        )
        rep.add(f"stop_secs_{run.tag}", "    SIGTERM to exit", run.stop_secs, "s")
        problems = run.keep_up_problems()
        rep.add(
            f"kept_up_{run.tag}", "    simulator and agent kept up", "no" if problems else "yes"
        )
        for problem in problems:
            rep.text(f"    NOT KEPT UP: {problem}: the CPU figure is not at the nominal load")
        if run.per_device:
            rep.text(
                f"    readings per device in the window: min {min(run.per_device)}, "
                f"max {max(run.per_device)}, expected {POINTS * run.window_secs / run.poll:.0f}"
            )
        if run.disk is not None:
            whole = {e: run.disk.events.get(e, 0) for e in (*BAD_EVENTS, "device_online")}
            if any(whole.values()):
                rep.text(
                    "    whole run (start-up included): "
                    + ", ".join(f"{n} {e}" for e, n in whole.items())
                )
    if not shown:
        raise BenchError("no run measured")


# -- the run ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.report = FootprintReport("gxpgate.footprint")
        self.extra = load_extra(args.config_extra)
        self.key = generate_key(workdir)
        self.sim = Simulator(workdir)
        self.runs: list[Run] = []


def machine_facts(workdir: Path) -> dict[str, Any]:
    with open("/proc/loadavg", encoding="ascii") as handle:
        load = " ".join(handle.read().split()[:3])
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "pymodbus": package_version("pymodbus"),
        "orjson": package_version("orjson"),
        "loadavg": load,
        "work_fs": filesystem_of(workdir),
    }


def number_list(kind: type[int] | type[float]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        values = [kind(part) for part in text.split(",") if part.strip()]
        if not values or min(values) <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: positive numbers, comma-separated")
        return values

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.bench_footprint",
        description="Measure the agent's evidence footprint: disk, wire, RSS and CPU per reading.",
    )
    parser.add_argument(
        "--devices",
        type=number_list(int),
        default=None,
        help=f"device counts, each of {POINTS} points (default 50,200,500; --quick: 50)",
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="steady window (default 60; --quick: 15)"
    )
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds before it (default 10; --quick: 5)"
    )
    parser.add_argument(
        "--poll",
        type=number_list(float),
        default=[1.0],
        help="poll intervals in s; the first for every run, the others for section 1 (default 1)",
    )
    parser.add_argument("--quick", action="store_true", help="50 devices, 15 s")
    parser.add_argument(
        "--config-extra",
        type=Path,
        default=None,
        help="TOML fragment merged into every device table (its [points] into every point)",
    )
    parser.add_argument(
        "--wire-batches", type=int, default=200, help="at most this many uplink batches per run"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    args = parser.parse_args(argv)
    args.devices = args.devices or ([50] if args.quick else [50, 200, 500])
    args.seconds = args.seconds if args.seconds is not None else (15.0 if args.quick else 60.0)
    args.warmup = args.warmup if args.warmup is not None else (5.0 if args.quick else 10.0)
    if args.seconds <= 0 or args.warmup < 0 or args.wire_batches < 1:
        parser.error("--seconds and --wire-batches must be positive, --warmup not negative")
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (and SIGHUP) unwind like Ctrl-C, so the children are stopped and the dir removed.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    started = time.perf_counter()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="footprint-", dir=args.workdir))
    else:
        workdir = Path(tempfile.mkdtemp(prefix="gxpgate-footprint-"))
    try:
        bench = Bench(args, workdir)
        machine = machine_facts(workdir)
        print("gxpgate footprint benchmark", flush=True)
        for name, value in machine.items():
            print(f"  {name:<15} {value}", flush=True)
        plan = [(n, args.poll[0]) for n in args.devices]
        plan += [(args.devices[0], poll) for poll in args.poll[1:]]
        try:
            bench.sim.start()
            for devices, poll in plan:
                try:
                    bench.runs.append(run_agent(bench, devices, poll))
                except BenchError as exc:
                    bench.report.error(f"run {devices} devices, poll {poll:g} s", exc)
        finally:
            bench.sim.stop()
        for name, section in (
            ("disk", section_disk),
            ("wire", section_wire),
            ("memory_cpu", section_memory_cpu),
        ):
            try:
                section(bench)
            except Exception as exc:
                bench.report.error(name, exc)
        wall = time.perf_counter() - started
        bench.report.summary()
        print(f"\n  wall time {wall:.1f} s", flush=True)
        params = {
            "devices": args.devices,
            "points": POINTS,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "poll": args.poll,
            "config_extra": bench.extra,
        }
        print(bench.report.as_json(machine, wall, params), flush=True)
        failed = bool(bench.report.errors)
    finally:
        if args.keep:
            note(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
