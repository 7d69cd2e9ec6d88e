"""Pipeline benchmark: sealing + durable commit, backlog drain to the quality service, agent RSS.

Run from the repository root::

    .venv/bin/python -m tests.benchmarks.bench_pipeline [--records N] [--backlog N]

A script, not a pytest test (pytest does not collect ``bench_*.py``; keep it that way). It
prints one table per section, a summary of the targets, and finally one JSON line with every
figure. Progress notes go to stderr.

1. Sealing + durable commit: realistic ``reading`` facts sealed by
   :class:`gxpgate.agent.recording.sealing.Sealer` and committed by :meth:`buffer.Outbox.append`
   (WAL, ``synchronous=FULL``) in groups of 5000 (the recorder's ``max_batch``) and 500; the
   per-record cost broken down; and the full asyncio path through
   :class:`gxpgate.agent.recording.recorder.Recorder`. Target: >= 12,000 records/s.
2. Drain of a backlog (default 200,000 records) by :class:`gxpgate.agent.uplink.http.Forwarder` to
   the quality-service simulator, batch sizes 1000 and 5000. By default the simulator runs in its
   own process (``--service-process``), as a real service would, so the two do not share a GIL;
   the in-process figures are shown too (``--compare``). The simulator checks hashes, links and
   ``seq`` inline and signatures in the background (``deferred``); the catch-up time of that
   verification and a smaller fully inline run are reported as well. Target: >= 30,000
   records/s.
3. Agent memory with that backlog: the peak RSS (VmHWM) of a fresh child process that imports
   the daemon's modules, opens the buffer and drains it. Target: < 80 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import gzip
import hashlib
import json
import os
import platform
import queue
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx
import nacl.signing
import orjson
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gxpgate.agent.evidence import (
    ChainVerifier,
    canonical_bytes,
    format_time,
    key_id,
    public_key_pem,
    sign_hash,
    verify_signature,
)
from gxpgate.agent.recording.recorder import Recorder
from gxpgate.agent.recording.sealing import Committed, Fact, Sealer
from gxpgate.agent.uplink.http import Forwarder
from gxpgate.buffer import Outbox, Row
from gxpgate.config.model import UplinkConfig
from tests.benchmarks.reporting import (
    BenchError,
    Report,
    cpu_model,
    filesystem_of,
    note,
    package_version,
)

if TYPE_CHECKING:
    from gxpgate.simulators.quality_service import QualityServiceSimulator

REPO_ROOT = Path(__file__).resolve().parents[2]
GW = "gw-bench"
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
RECORDER_MAX_BATCH = 5000  # gxpgate.agent.recording.recorder.Recorder's default max_batch
TARGET_SEAL_RPS = 12_000.0
TARGET_DRAIN_RPS = 30_000.0
TARGET_RSS_MB = 80.0
_UNSIGNED = ("hash", "sig")
# (zone, low, high) in degrees Celsius; a device belongs to one zone.
_ZONES = (
    ("cold-1", 2.0, 8.0),
    ("cold-2", 2.0, 8.0),
    ("ambient-1", 15.0, 25.0),
    ("freezer-1", -25.0, -15.0),
)
_DEVICES = 24

# The quality-service simulator in its own process. Arguments: db, public key PEM, port, mode.
# It prints its URL, then answers one JSON line per command read from stdin:
# ``report <gw> <chain>``, ``wait <timeout>``; anything else, or EOF, stops it.
SIM_SCRIPT = """\
import json, sys, time
from pathlib import Path
from gxpgate.agent.evidence import load_public_key
from gxpgate.simulators.quality_service import QualityServiceSimulator
db, pem, port, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
qs = QualityServiceSimulator(db, [load_public_key(Path(pem))], port=port, verify_signatures=mode)
with qs:
    print(qs.url, flush=True)
    for line in sys.stdin:
        cmd, *arg = line.split() or [""]
        if cmd == "wait":
            t = time.perf_counter()
            done = qs.wait_signatures_verified(float(arg[0]))
            out = {"done": done, "secs": time.perf_counter() - t}
        elif cmd == "report":
            out = {"report": qs.verification_report(arg[0], arg[1]), "stats": qs.stats}
        else:
            break
        print(json.dumps(out, default=str), flush=True)
"""


# -- small helpers ---------------------------------------------------------------------------


def proc_status() -> dict[str, float]:
    """VmHWM and VmRSS of this process in MB, and ru_maxrss (KiB on Linux) in MB."""
    out: dict[str, float] = {}
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            name, _, rest = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                out[name] = int(rest.split()[0]) / 1024
    out["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def rate(count: int, secs: float) -> float:
    return count / secs if secs > 0 else float("inf")


def per_record_us(secs: float, count: int) -> float:
    return secs / count * 1e6 if count else 0.0


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


def make_facts(start: int, count: int, seed: int = 7) -> list[Fact]:
    """``count`` reading facts as a warehouse's probes would produce them (deterministic)."""
    rng = random.Random(seed * 1_000_003 + start)
    facts: list[Fact] = []
    for i in range(start, start + count):
        device = i % _DEVICES
        zone, low, high = _ZONES[device % len(_ZONES)]
        facts.append(
            Fact(
                "reading",
                T0 + timedelta(microseconds=i * 50_000 + rng.randrange(1000)),
                data={},
                zone=zone,
                device=f"probe-{device:02d}",
                point="temperature",
                value=round(rng.uniform(low, high), 2),
                unit="Cel",
                quality="good",
            )
        )
    return facts


def fact_chunks(total: int, size: int) -> Iterator[list[Fact]]:
    for start in range(0, total, size):
        yield make_facts(start, min(size, total - start))


# -- figures and the table -------------------------------------------------------------------


# -- section 1: sealing and committing -------------------------------------------------------


@dataclass
class SealRun:
    count: int
    total_secs: float
    seal_secs: float
    append_secs: float
    commits: int
    rows: list[Row]


def seal_and_commit(
    outbox: Outbox,
    sealer: Sealer,
    chunks: Iterable[Sequence[Fact]],
    *,
    keep_rows: bool = False,
) -> SealRun:
    """Seal each chunk from the outbox's tail and commit it, as the recorder does per group.

    Only sealing and committing are timed, not the making of the facts.
    """
    seal_secs = append_secs = 0.0
    count = commits = 0
    kept: list[Row] = []
    for chunk in chunks:
        start = time.perf_counter()
        rows = sealer.seal(chunk, outbox.last_seq, outbox.last_hash)
        sealed = time.perf_counter()
        outbox.append(rows)
        seal_secs += sealed - start
        append_secs += time.perf_counter() - sealed
        count += len(rows)
        commits += 1
        if keep_rows:  # right-sized copies: orjson >= 3.12 leaves ~4 KB buffers per body
            kept.extend(Row(r.seq, r.at, r.kind, r.hash, bytes(memoryview(r.body))) for r in rows)
    return SealRun(count, seal_secs + append_secs, seal_secs, append_secs, commits, kept)


def slices(items: Sequence[Fact], size: int) -> Iterator[Sequence[Fact]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def through_recorder(
    outbox: Outbox, sealer: Sealer, facts: Sequence[Fact], commit_interval: float
) -> float:
    """Seconds for a producer task's ``await put`` of every fact until all are sealed."""
    total = len(facts)
    done = asyncio.Event()

    def on_commit(_facts: Sequence[Committed]) -> None:
        if recorder.sealed >= total:
            done.set()

    recorder = Recorder(outbox, sealer, listeners=[on_commit], commit_interval_secs=commit_interval)

    async def produce() -> None:
        for fact in facts:
            await recorder.put(fact)

    runner = asyncio.create_task(recorder.run(), name="recorder")
    start = time.perf_counter()
    producer = asyncio.create_task(produce(), name="producer")
    try:
        async with asyncio.timeout(300):
            await done.wait()
        elapsed = time.perf_counter() - start
        await producer
    finally:
        producer.cancel()
        recorder.close()
        async with asyncio.timeout(60):
            await runner  # the last group's commit must finish before the outbox closes
    if recorder.sealed != total or outbox.last_seq != total:
        raise BenchError(f"recorder sealed {recorder.sealed}, outbox holds {outbox.last_seq}")
    return elapsed


def section_sealing(bench: Bench) -> None:
    args, rep, key = bench.args, bench.report, bench.key
    n = args.records
    rep.section(f"1. Sealing + durable commit: {n:,} reading records, WAL + synchronous=FULL")
    facts = make_facts(0, n)
    runs: dict[int, SealRun] = {}
    for group in (RECORDER_MAX_BATCH, 500):
        note(f"sealing + committing {n:,} records in groups of {group}")
        path = bench.tmp / f"seal-{group}.db"
        outbox = Outbox(path, GW)
        try:
            sealer = Sealer(key, GW, outbox.chain)
            run = seal_and_commit(
                outbox, sealer, slices(facts, group), keep_rows=group == RECORDER_MAX_BATCH
            )
        finally:
            outbox.close()
            remove_db(path)
        runs[group] = run
        rep.add(
            f"seal_commit_g{group}_rps",
            f"seal + commit, groups of {group} ({run.commits} commits)",
            rate(run.count, run.total_secs),
            "records/s",
            at_least=TARGET_SEAL_RPS,
        )
        rep.add(
            f"seal_commit_g{group}_seal_us",
            "    of which Sealer.seal",
            per_record_us(run.seal_secs, run.count),
            "us/record",
        )
        rep.add(
            f"seal_commit_g{group}_append_us",
            f"    of which Outbox.append ({run.append_secs / run.commits * 1e3:.1f} ms/commit)",
            per_record_us(run.append_secs, run.count),
            "us/record",
        )

    rows = runs[RECORDER_MAX_BATCH].rows
    seal_us = per_record_us(runs[RECORDER_MAX_BATCH].seal_secs, n)
    breakdown(bench, facts, rows, seal_us)

    for group in (RECORDER_MAX_BATCH, 500):
        note(f"Outbox.append alone, {n:,} pre-sealed rows in groups of {group}")
        path = bench.tmp / f"append-{group}.db"
        outbox = Outbox(path, GW)
        try:
            start = time.perf_counter()
            for first in range(0, n, group):
                outbox.append(rows[first : first + group])
            secs = time.perf_counter() - start
        finally:
            outbox.close()
            remove_db(path)
        commits = -(-n // group)
        rep.add(
            f"append_only_g{group}_us",
            f"SQLite append alone, groups of {group} ({secs / commits * 1e3:.1f} ms/commit)",
            per_record_us(secs, n),
            "us/record",
        )
        rep.add(
            f"append_only_g{group}_rps", "    = append-only throughput", rate(n, secs), "records/s"
        )
    rows.clear()
    runs.clear()
    gc.collect()

    for interval, key_name, label in (
        (0.2, "recorder_rps", "Recorder (asyncio put -> sealed), commit interval 0.2 s"),
        (0.02, "recorder_i20ms_rps", "    contrast: same, commit interval 0.02 s"),
    ):
        note(f"asyncio path: Recorder with commit_interval {interval} s, {n:,} facts")
        path = bench.tmp / f"recorder-{interval}.db"
        outbox = Outbox(path, GW)
        try:
            sealer = Sealer(key, GW, outbox.chain)
            secs = asyncio.run(through_recorder(outbox, sealer, facts, interval))
        finally:
            outbox.close()
            remove_db(path)
        rep.add(
            key_name,
            label,
            rate(n, secs),
            "records/s",
            at_least=TARGET_SEAL_RPS if key_name == "recorder_rps" else None,
        )
    gc.collect()


def breakdown(bench: Bench, facts: Sequence[Fact], rows: Sequence[Row], seal_us: float) -> None:
    """Per-record costs of the sealing steps, measured one at a time on a sample."""
    rep, key = bench.report, bench.key
    sample = min(bench.args.sample, len(rows))
    note(f"per-record breakdown on {sample:,} records")
    records = [orjson.loads(r.body) for r in rows[:sample]]
    times = [f.at for f in facts[:sample]]
    rep.text(f"per-record breakdown ({sample:,} records, each step alone):")

    start = time.perf_counter()
    fast = [canonical_bytes(r) for r in records]
    t_fast = time.perf_counter() - start
    start = time.perf_counter()
    ref = [rfc8785.dumps({k: v for k, v in r.items() if k not in _UNSIGNED}) for r in records]
    t_ref = time.perf_counter() - start
    mismatches = sum(a != b for a, b in zip(fast, ref, strict=True))
    start = time.perf_counter()
    for body in fast:
        hashlib.sha256(body).hexdigest()
    t_sha = time.perf_counter() - start
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    sodium_sign = nacl.signing.SigningKey(seed).sign
    start = time.perf_counter()
    for record in records:
        sodium_sign(bytes.fromhex(record["hash"]))  # what Sealer uses
    t_sign = time.perf_counter() - start
    start = time.perf_counter()
    for record in records:
        sign_hash(key, record["hash"])
    t_sign_crypto = time.perf_counter() - start
    start = time.perf_counter()
    for moment in times:
        format_time(moment)
    t_time = time.perf_counter() - start
    start = time.perf_counter()
    for record in records:
        orjson.dumps(record)
    t_body = time.perf_counter() - start
    verify_n = min(sample, 2000)
    keys = {key_id(bench.public_key): bench.public_key}
    start = time.perf_counter()
    for record in records[:verify_n]:
        verify_signature(record, keys)
    t_verify = time.perf_counter() - start

    us = {
        "canonical": per_record_us(t_fast, sample),
        "rfc8785": per_record_us(t_ref, sample),
        "sha256": per_record_us(t_sha, sample),
        "sign": per_record_us(t_sign, sample),
        "sign_crypto": per_record_us(t_sign_crypto, sample),
        "format_time": per_record_us(t_time, sample),
        "body": per_record_us(t_body, sample),
        "verify": per_record_us(t_verify, verify_n),
    }
    parts = us["canonical"] + us["sha256"] + us["sign"] + us["format_time"] + us["body"]
    rep.add("us_canonical", "canonical_bytes (orjson fast path)", us["canonical"], "us/record")
    rep.add("us_rfc8785", "rfc8785.dumps (the reference)", us["rfc8785"], "us/record")
    rep.add(
        "us_fast_path_saves",
        f"    fast path saves ({us['rfc8785'] / us['canonical']:.1f}x faster)",
        us["rfc8785"] - us["canonical"],
        "us/record",
    )
    rep.add("canonical_mismatches", "    fast path != reference (must be 0)", mismatches, "records")
    rep.add("us_sha256", "SHA-256 of the canonical bytes", us["sha256"], "us/record")
    rep.add("us_sign", "Ed25519 sign, libsodium (what Sealer uses)", us["sign"], "us/record")
    rep.add(
        "us_sign_crypto", "    same with cryptography (comparison)", us["sign_crypto"], "us/record"
    )
    rep.add("us_format_time", "format_time for 'at'", us["format_time"], "us/record")
    rep.add("us_body", "orjson.dumps of the sealed record (stored body)", us["body"], "us/record")
    rep.add(
        "us_seal_rest",
        "rest of Sealer.seal (dicts, Row, loop), by difference",
        max(0.0, seal_us - parts),
        "us/record",
    )
    rep.add("us_seal_total", "    Sealer.seal in the g5000 run", seal_us, "us/record")
    rep.add(
        "sign_share_of_seal",
        "    Ed25519 sign's share of Sealer.seal",
        us["sign"] / seal_us * 100,
        "%",
    )
    rep.add(
        "seal_bound_rps",
        "    sealing alone caps one core at",
        1e6 / seal_us if seal_us else 0.0,
        "records/s",
    )
    rep.add(
        "us_verify", "Ed25519 verify (the service's cost, for step 2)", us["verify"], "us/record"
    )


# -- section 2: the drain --------------------------------------------------------------------


class SimHandle(Protocol):
    url: str
    placement: str

    def report(self, gw: str, chain: str) -> dict[str, Any]: ...

    def wait_verified(self, timeout: float) -> tuple[bool, float]: ...

    def close(self) -> None: ...


class InProcessSim:
    """The simulator in this process's threads (shares the GIL with the forwarder)."""

    placement = "in-process"

    def __init__(self, db: Path, public_key: Ed25519PublicKey, mode: str) -> None:
        from gxpgate.simulators.quality_service import QualityServiceSimulator

        verify: Literal["inline", "deferred"] = "inline" if mode == "inline" else "deferred"
        self.qs: QualityServiceSimulator = QualityServiceSimulator(
            db, [public_key], verify_signatures=verify
        )
        self.qs.start()
        self.url = self.qs.url

    def report(self, gw: str, chain: str) -> dict[str, Any]:
        return {"report": self.qs.verification_report(gw, chain), "stats": self.qs.stats}

    def wait_verified(self, timeout: float) -> tuple[bool, float]:
        start = time.perf_counter()
        done = self.qs.wait_signatures_verified(timeout)
        return done, time.perf_counter() - start

    def close(self) -> None:
        self.qs.stop()


class ProcessSim:
    """The simulator in a separate Python process (its own GIL, as a real service)."""

    placement = "separate process"

    def __init__(self, db: Path, pem_path: Path, mode: str, log_path: Path) -> None:
        self._log_path = log_path
        self._log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())
        command = [sys.executable, "-c", SIM_SCRIPT, str(db), str(pem_path), "0", mode]
        self.proc = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._pump = threading.Thread(target=self._read_lines, name="sim-stdout", daemon=True)
        self._pump.start()
        try:
            self.url = self._next_line(60.0)
        except BaseException:
            self.close()
            raise

    def _read_lines(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.strip())
        self._lines.put(None)

    def _next_line(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"simulator process silent for {timeout:.0f} s") from None
        if line is None:
            self.proc.wait(5)
            tail = self._log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise BenchError(f"simulator process exited with {self.proc.returncode}: {tail}")
        return line

    def _ask(self, command: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self._next_line(timeout))
        return answer

    def report(self, gw: str, chain: str) -> dict[str, Any]:
        return self._ask(f"report {gw} {chain}", 60.0)

    def wait_verified(self, timeout: float) -> tuple[bool, float]:
        answer = self._ask(f"wait {timeout}", timeout + 30.0)
        return bool(answer["done"]), float(answer["secs"])

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.write("quit\n")
                    self.proc.stdin.close()
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._pump.join(5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self._log.close()


@contextlib.contextmanager
def simulator(bench: Bench, placement: str, mode: str, name: str) -> Iterator[SimHandle]:
    """A simulator on a fresh database, stopped and its files removed afterwards."""
    db = bench.tmp / f"qs-{name}.db"
    remove_db(db)
    handle: SimHandle
    if placement == "process":
        handle = ProcessSim(db, bench.pem_path, mode, bench.tmp / f"qs-{name}.log")
    else:
        handle = InProcessSim(db, bench.public_key, mode)
    try:
        yield handle
    finally:
        handle.close()
        remove_db(db)


class TimingTransport(httpx.AsyncBaseTransport):
    """Real HTTP, timing each round trip (request out, service's work, response read)."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.secs = 0.0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        start = time.perf_counter()
        response = await self._inner.handle_async_request(request)
        await response.aread()
        self.secs += time.perf_counter() - start
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def instant_service(request: httpx.Request) -> httpx.Response:
    """A service that accepts every batch at once (its range is in the Idempotency-Key)."""
    if request.method == "GET":
        return httpx.Response(200, json={"acked_through": 0})
    last = int(request.headers["Idempotency-Key"].rsplit("-", 1)[1])
    return httpx.Response(200, json={"acked_through": last})


@dataclass
class DrainResult:
    records: int
    secs: float
    batches: int
    record_calls: int
    round_trip_secs: float | None = None

    @property
    def rps(self) -> float:
        return rate(self.records, self.secs)


async def drain(
    outbox: Outbox,
    url: str,
    batch: int,
    through: int,
    limit_secs: float,
    transport: httpx.AsyncBaseTransport | None = None,
) -> DrainResult:
    """``forward_once()`` in a loop until the service acknowledged ``through``."""
    calls = 0

    async def record(_fact: Fact) -> None:
        nonlocal calls
        calls += 1

    config = UplinkConfig(url=url, batch_max_records=batch, timeout_secs=120.0)
    first = outbox.acked_through
    async with Forwarder(outbox, config, record, transport=transport) as forwarder:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(limit_secs):
                while outbox.acked_through < through:
                    if not await forwarder.forward_once():
                        acked = outbox.acked_through
                        raise BenchError(f"nothing pending at {acked} before {through}")
        except TimeoutError:
            acked = outbox.acked_through
            raise BenchError(
                f"drain unfinished after {limit_secs:g} s: acknowledged {acked:,} of {through:,}"
            ) from None
        secs = time.perf_counter() - start
        batches = forwarder.stats.batches
    round_trips = transport.secs if isinstance(transport, TimingTransport) else None
    return DrainResult(outbox.acked_through - first, secs, batches, calls, round_trips)


def section_drain(bench: Bench) -> None:
    args, rep = bench.args, bench.report
    n = args.backlog
    headline = "process" if args.service_process else "in-process"
    other = "in-process" if headline == "process" else "process"
    label = {"process": "separate-process simulator", "in-process": "in-process simulator"}
    rep.section(f"2. Drain of a {n:,}-record backlog to the quality-service simulator")

    bench.rss["before_backlog"] = proc_status()
    note(f"building the backlog: sealing + committing {n:,} records in groups of 5000")
    path = bench.tmp / "backlog.db"
    outbox = Outbox(path, GW)
    bench.outbox = outbox
    sealer = Sealer(bench.key, GW, outbox.chain)
    run = seal_and_commit(outbox, sealer, fact_chunks(n, RECORDER_MAX_BATCH))
    gc.collect()
    bench.rss["after_backlog"] = proc_status()
    rep.add(
        "backlog_build_rps",
        f"(building it: seal + commit {n:,} in groups of 5000)",
        rate(run.count, run.total_secs),
        "records/s",
    )
    rep.add("backlog_db_mb", "    buffer size on disk", outbox.disk_bytes() / 2**20, "MB")
    last = outbox.last_seq
    ceilings(bench, outbox)

    placements = [headline] + ([other] if args.compare else [])
    for placement in placements:
        for batch in args.batches:
            catch_up = placement == headline and batch == args.batches[-1]
            name = f"{placement}-b{batch}"
            note(f"drain {n:,} records, batch {batch}, {label[placement]} (deferred signatures)")
            outbox.set_acked_through(0)
            with simulator(bench, placement, "deferred", name) as sim:
                timing = TimingTransport()
                result = asyncio.run(drain(outbox, sim.url, batch, last, args.drain_limit, timing))
                rep.add(
                    f"drain_{placement.replace('-', '')}_b{batch}_rps",
                    f"drain, batch {batch}, {label[placement]}",
                    result.rps,
                    "records/s",
                    at_least=TARGET_DRAIN_RPS,
                )
                state = sim.report(GW, outbox.chain)
                verified = state["report"]["verified_through"]
                trips = result.round_trip_secs or 0.0
                rep.text(
                    f"    {result.records:,} records in {result.secs:.2f} s, "
                    f"{result.batches} batches: HTTP round trips (service) {trips:.2f} s = "
                    f"{per_record_us(trips, result.records):.1f} us/record, gateway side "
                    f"{per_record_us(result.secs - trips, result.records):.1f} us/record"
                )
                rep.text(
                    f"    record callback calls {result.record_calls}, "
                    f"service acked {state['report']['records']:,}, "
                    f"signatures verified so far {verified:,}, "
                    f"rejected {state['stats'].get('rejected_batches')}"
                )
                if state["report"]["records"] != last:
                    raise BenchError(f"service holds {state['report']['records']} of {last}")
                if catch_up:
                    note(f"waiting for the deferred signature verification of {last:,} records")
                    done, secs = sim.wait_verified(args.verify_timeout)
                    final = sim.report(GW, outbox.chain)["report"]
                    rep.add(
                        "deferred_catch_up_secs",
                        f"deferred signature catch-up after the drain ({last - verified:,} left)",
                        secs,
                        "s",
                    )
                    rep.add(
                        "deferred_verify_rps",
                        "    = service-side signature verification rate",
                        rate(last - verified, secs),
                        "records/s",
                    )
                    rep.add(
                        "verification_ok",
                        f"    report ok, verified through {final['verified_through']:,}",
                        str(bool(final["ok"]) and done),
                    )
                    rep.text(f"    verification_report: {json.dumps(final)}")
                    if not (done and final["ok"]):
                        raise BenchError(f"the service's verification is not ok: {final}")

    inline_n = min(args.inline_records, last)
    inline_batch = args.batches[-1]
    note(f"drain {inline_n:,} records, batch {inline_batch}, inline signature verification")
    outbox.set_acked_through(0)
    with simulator(bench, headline, "inline", "inline") as sim:
        result = asyncio.run(drain(outbox, sim.url, inline_batch, inline_n, args.drain_limit))
        final = sim.report(GW, outbox.chain)["report"]
    rep.add(
        "drain_inline_rps",
        f"inline-verify drain {inline_n:,}, batch {inline_batch}, {label[headline]}",
        result.rps,
        "records/s",
    )
    rep.add("inline_verification_ok", "    verification_report ok", str(final["ok"]))
    outbox.set_acked_through(0)
    gc.collect()
    bench.rss["after_drain"] = proc_status()


def ceilings(bench: Bench, outbox: Outbox) -> None:
    """Each side of the drain alone: the forwarder against an instant service, and the
    simulator's per-record inline check (hash, link, seq; no signature)."""
    rep, args = bench.report, bench.args
    last = outbox.last_seq
    for batch in args.batches:
        note(f"gateway side alone: forward_once against an instant service, batch {batch}")
        outbox.set_acked_through(0)
        transport = httpx.MockTransport(instant_service)
        result = asyncio.run(
            drain(outbox, "http://instant.invalid", batch, last, args.drain_limit, transport)
        )
        rep.add(
            f"gateway_only_b{batch}_rps",
            f"ceiling: Forwarder alone, batch {batch} (service answers instantly)",
            result.rps,
            "records/s",
        )
    outbox.set_acked_through(0)
    batch = args.batches[-1]
    pending = outbox.pending(0, batch)
    start = time.perf_counter()
    body = b"".join((b'{"records":[', b",".join(r[1] for r in pending), b"]}"))
    payload = gzip.compress(body, compresslevel=1)
    blocked = time.perf_counter() - start
    rep.add(
        "loop_block_ms",
        f"body join + gzip per batch of {len(pending)} (in a thread, overlapping the POST)",
        blocked * 1e3,
        "ms",
    )
    rep.text(f"    body {len(body) / 2**20:.2f} MB -> gzip {len(payload) / 2**20:.2f} MB")
    sample = min(args.sample, last)
    bodies = [body for _seq, body in outbox.pending(0, sample)]
    keys = {key_id(bench.public_key): bench.public_key}
    start = time.perf_counter()
    records = [orjson.loads(body) for body in bodies]
    parse = time.perf_counter() - start
    verifier = ChainVerifier(keys=keys, chain=outbox.chain, check_signatures=False)
    start = time.perf_counter()
    for record in records:
        verifier.check(record)
    check = time.perf_counter() - start
    start = time.perf_counter()
    for record in records:
        orjson.dumps(record)
    store = time.perf_counter() - start
    service_us = per_record_us(parse + check + store, sample)
    rep.add(
        "service_check_us",
        "simulator's inline work: orjson.loads + ChainVerifier.check",
        per_record_us(parse + check, sample),
        "us/record",
    )
    rep.add(
        "service_ceiling_rps",
        "    + orjson.dumps to store: simulator ceiling before SQLite/HTTP",
        1e6 / service_us if service_us else 0.0,
        "records/s",
    )


# -- section 3: memory -----------------------------------------------------------------------


def section_memory(bench: Bench) -> None:
    args, rep = bench.args, bench.report
    rep.section("3. Agent memory with the backlog")
    for moment in ("before_backlog", "after_backlog", "after_drain"):
        if moment in bench.rss:
            s = bench.rss[moment]
            rep.text(
                f"this process {moment.replace('_', ' ')}: VmRSS {s['VmRSS']:.1f} MB, "
                f"VmHWM {s['VmHWM']:.1f} MB, ru_maxrss {s['ru_maxrss']:.1f} MB"
            )
    rep.text("(this process built the backlog and ran simulators: its peak is not the agent's)")
    if bench.outbox is None:
        raise BenchError("no backlog buffer (section 2 failed before building it)")
    buffer_path = bench.outbox.path
    bench.outbox.set_acked_through(0)
    bench.outbox.close()
    bench.outbox = None

    placement = "process" if args.service_process else "in-process"
    note(f"child process drains the backlog, batch {args.child_batch}")
    with simulator(bench, placement, "deferred", "child") as sim:
        command = [
            sys.executable,
            "-m",
            "tests.benchmarks.bench_pipeline",
            "--child-drain",
            str(buffer_path),
            "--url",
            sim.url,
            "--child-batch",
            str(args.child_batch),
            "--drain-limit",
            str(args.drain_limit),
        ]
        done = subprocess.run(
            command,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=args.drain_limit + 120,
            check=False,
        )
        if done.returncode != 0 or not done.stdout.strip():
            raise BenchError(f"child drain failed ({done.returncode}): {done.stderr[-3000:]}")
        child = json.loads(done.stdout.strip().splitlines()[-1])
    rep.add(
        "child_vmhwm_mb",
        f"agent child: peak RSS (VmHWM) draining {child['records']:,} records",
        child["peak"]["VmHWM"],
        "MB",
        below=TARGET_RSS_MB,
    )
    rep.add(
        "child_maxrss_mb",
        "    child's ru_maxrss (Linux keeps the forking parent's across exec)",
        child["peak"]["ru_maxrss"],
        "MB",
    )
    rep.add(
        "child_rss_after_import_mb",
        "    VmRSS after importing the daemon's modules",
        child["imported"]["VmRSS"],
        "MB",
    )
    rep.add(
        "child_rss_after_open_mb",
        "    VmRSS after opening the buffer (quick_check)",
        child["opened"]["VmRSS"],
        "MB",
    )
    rep.add("child_rss_end_mb", "    VmRSS after the drain", child["peak"]["VmRSS"], "MB")
    rep.add(
        "child_open_secs", "    Outbox open on the backlog (quick_check)", child["open_secs"], "s"
    )
    rep.add(
        "drain_child_rps",
        f"    drain rate in the child, batch {args.child_batch} (fresh process)",
        child["rps"],
        "records/s",
    )

    n = args.child_seal_records
    note(f"child process seals {n:,} facts through the Recorder (informational)")
    seal_dir = bench.tmp / "child-seal"
    command = [
        sys.executable,
        "-m",
        "tests.benchmarks.bench_pipeline",
        "--child-seal",
        str(seal_dir),
        "--child-seal-records",
        str(n),
    ]
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise BenchError(f"child seal failed ({done.returncode}): {done.stderr[-3000:]}")
    sealing = json.loads(done.stdout.strip().splitlines()[-1])
    rep.add(
        "child_seal_vmhwm_mb",
        f"informational: agent child sealing {n:,} via Recorder: VmHWM",
        sealing["peak"]["VmHWM"],
        "MB",
    )
    rep.add(
        "child_seal_rss_after_import_mb",
        "    VmRSS after importing the daemon's modules",
        sealing["imported"]["VmRSS"],
        "MB",
    )
    rep.add("child_seal_rps", "    Recorder rate in the child", sealing["rps"], "records/s")


def child_seal(directory: Path, count: int) -> int:
    """The agent sealing under load in a fresh process: a producer ahead of the Recorder."""
    from gxpgate.agent.cli import main as agent_cli
    from gxpgate.agent.service import runtime  # noqa: F401  (the daemon's modules: their memory counts)

    imported = proc_status()
    directory.mkdir(parents=True, exist_ok=True)
    outbox = Outbox(directory / "buffer.db", GW)
    try:
        sealer = Sealer(Ed25519PrivateKey.generate(), GW, outbox.chain)

        async def run() -> float:
            done = asyncio.Event()

            def on_commit(_facts: Sequence[Committed]) -> None:
                if recorder.sealed >= count:
                    done.set()

            recorder = Recorder(outbox, sealer, listeners=[on_commit])

            async def produce() -> None:
                for chunk in fact_chunks(count, RECORDER_MAX_BATCH):
                    for fact in chunk:
                        await recorder.put(fact)

            runner = asyncio.create_task(recorder.run())
            start = time.perf_counter()
            producer = asyncio.create_task(produce())
            try:
                async with asyncio.timeout(300):
                    await done.wait()
                secs = time.perf_counter() - start
                await producer
            finally:
                producer.cancel()
                recorder.close()
                await runner
            return secs

        secs = asyncio.run(run())
    finally:
        outbox.close()
    out = {
        "records": count,
        "rps": rate(count, secs),
        "imported": imported,
        "peak": proc_status(),
        "agent_cli": agent_cli.__name__,
    }
    print(json.dumps(out), flush=True)
    return 0


def child_drain(buffer_path: Path, url: str, batch: int, limit_secs: float) -> int:
    """The agent's side alone, in a fresh process: open the buffer, drain it, report memory."""
    from gxpgate.agent.cli import main as agent_cli
    from gxpgate.agent.service import runtime  # noqa: F401  (the daemon's modules: their memory counts)

    imported = proc_status()
    start = time.perf_counter()
    outbox = Outbox(buffer_path, GW)
    open_secs = time.perf_counter() - start
    opened = proc_status()
    try:
        result = asyncio.run(drain(outbox, url, batch, outbox.last_seq, limit_secs))
    finally:
        outbox.close()
    peak = proc_status()
    out = {
        "records": result.records,
        "secs": result.secs,
        "rps": result.rps,
        "open_secs": open_secs,
        "imported": imported,
        "opened": opened,
        "peak": peak,
        "agent_cli": agent_cli.__name__,
    }
    print(json.dumps(out), flush=True)
    return 0


# -- the run ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.report = Report("gxpgate.pipeline")
        self.key = Ed25519PrivateKey.generate()
        self.public_key = self.key.public_key()
        self.pem_path = tmp / "signing.pub.pem"
        self.pem_path.write_text(public_key_pem(self.public_key), encoding="ascii")
        self.outbox: Outbox | None = None
        self.rss: dict[str, dict[str, float]] = {}

    def __enter__(self) -> Bench:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.outbox is not None:
            self.outbox.close()
            self.outbox = None


def machine_facts(tmp: Path) -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "cryptography": package_version("cryptography"),
        "orjson": package_version("orjson"),
        "httpx": package_version("httpx"),
        "tmp_fs": filesystem_of(tmp),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.bench_pipeline",
        description="Benchmark gxpgate's sealing, commit, drain and memory on this machine.",
    )
    parser.add_argument("--records", type=int, default=60_000, help="records for step 1")
    parser.add_argument("--backlog", type=int, default=200_000, help="backlog for steps 2-3")
    parser.add_argument(
        "--batches",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1000, 5000],
        help="uplink batch sizes to drain with, comma-separated (default 1000,5000)",
    )
    parser.add_argument(
        "--service-process",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the simulator in a separate process for the headline drain (default)",
    )
    parser.add_argument(
        "--compare",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the drain with the simulator placed the other way (default)",
    )
    parser.add_argument("--inline-records", type=int, default=20_000)
    parser.add_argument("--sample", type=int, default=10_000, help="records for the breakdown")
    parser.add_argument("--child-batch", type=int, default=5000, help="batch for the RSS child")
    parser.add_argument("--verify-timeout", type=float, default=300.0)
    parser.add_argument("--drain-limit", type=float, default=300.0, help="seconds per drain")
    parser.add_argument("--tmpdir", type=Path, default=None, help="where the databases go")
    parser.add_argument(
        "--child-seal-records",
        type=int,
        default=30_000,
        help="facts the informational sealing child puts through the Recorder",
    )
    parser.add_argument("--child-drain", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-seal", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--url", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.records, args.backlog, args.inline_records, args.sample, *args.batches) < 1:
        parser.error("counts and batch sizes must be positive")
    if max(*args.batches, args.child_batch) > 10_000:
        parser.error("batch sizes above 10,000 are refused by the uplink config")
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child_drain is not None:
        return child_drain(args.child_drain, args.url, args.child_batch, args.drain_limit)
    if args.child_seal is not None:
        return child_seal(args.child_seal, args.child_seal_records)

    # SIGTERM (and SIGHUP) unwind like Ctrl-C, so simulators, children and temp dirs are cleaned.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="gxpgate-bench-", dir=args.tmpdir) as tmp_name,
        Bench(args, Path(tmp_name)) as bench,
    ):
        machine = machine_facts(bench.tmp)
        print("gxpgate pipeline benchmark", flush=True)
        for name, value in machine.items():
            print(f"  {name:<15} {value}", flush=True)
        sections: list[tuple[str, Callable[[Bench], None]]] = [
            ("sealing", section_sealing),
            ("drain", section_drain),
            ("memory", section_memory),
        ]
        for name, section in sections:
            try:
                section(bench)
            except Exception as exc:
                bench.report.error(name, exc)
        wall = time.perf_counter() - started
        bench.report.summary()
        print(f"\n  wall time {wall:.1f} s", flush=True)
        print(bench.report.as_json(machine, wall), flush=True)
        failed = bool(bench.report.errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
