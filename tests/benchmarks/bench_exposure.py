"""Time out of storage: what keeping it costs the lot feed, per reading and per commit.

Run from the repository root::

    .venv/bin/python -m tests.benchmarks.bench_exposure [--lots 500] [--readings 1000]

A script, not a pytest test. A real register file (WAL, synchronous FULL) with a book
attached; ``--lots`` lots present in zone ``cold-1`` (refrigerated product, 72 h allowance) and
as many in the ``dock`` zone (another profile: their whole stay counts). Measured, each as the
median of several runs of ``--readings`` temperature readings of ``cold-1`` in one batch (what
one recorder commit hands the worker):

1. ``register.apply`` of the batch without a book (the register before this feature: readings
   are not even passed; this is the floor, an empty call);
2. with the book, readings in range (5 °C): applied in memory only, no transaction;
3. with the book, readings out of range (9.5 °C): every lot's excursion interval is extended, so
   the batch ends in one transaction (the fsync);
4. ``book.check()`` with the lots present (once a second in the agent);
5. the flush of the statistics (once a minute in the agent).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gxpgate.agent.custody.exposure import ExposureBook
from gxpgate.agent.custody.lots import LotRegister
from gxpgate.agent.evidence import format_time
from gxpgate.config import load_config
from gxpgate.config.policy_files import load_policy

CONFIG = """
[gateway]
id = "gw-bench"
site = "bench"
[signing]
key_file = "k"
[buffer]
path = "buffer.db"
[zones.cold-1]
profile = "refrigerated"
[zones.dock]
profile = "unclassified"
[devices.probe-1]
type = "modbus_tcp"
host = "127.0.0.1"
zone = "cold-1"
poll_interval_secs = 1
points.temperature = { table = "input", address = 0, type = "float32", unit = "Cel" }
[[products.items]]
gtin = "10614141*"
profile = "refrigerated"
tos_allowance_hours = 72
"""
T0 = datetime(2026, 11, 21, 10, tzinfo=UTC)


def _custody(seq: int, lot: str, zone: str, step: str) -> dict[str, Any]:
    gtin, number = lot[4:18], lot[22:]
    return {
        "kind": "custody", "seq": seq, "zone": zone, "at": format_time(T0),
        "data": {"scan": {"ai": {"01": gtin, "10": number}}, "epcis": {"bizStep": step}},
    }  # fmt: skip


def _readings(first_seq: int, start: datetime, count: int, value: float) -> list[dict[str, Any]]:
    return [
        {
            "kind": "reading",
            "seq": first_seq + i,
            "device": "probe-1",
            "point": "temperature",
            "value": value,
            "quality": "good",
            "data": {},
            "at": format_time(start + timedelta(seconds=i)),
        }
        for i in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lots", type=int, default=500)
    parser.add_argument("--readings", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gxpgate.toml"
        path.write_text(CONFIG, encoding="utf-8")
        loaded = load_config(path)
        policy = load_policy(loaded.config, loaded.path)
        lots = [f"(01)10614141000019(10)L{i:05d}" for i in range(args.lots)]
        seq = 0
        setup = []
        for lot in lots:
            seq += 1
            setup.append(_custody(seq, lot, "cold-1", "storing"))
        for i in range(args.lots):
            seq += 1
            setup.append(_custody(seq, f"(01)10614141000026(10)D{i:05d}", "dock", "receiving"))

        plain = LotRegister.open(Path(tmp) / "plain.db")
        plain.apply(setup, seq)
        register = LotRegister.open(Path(tmp) / "lots.db")
        now = [T0.timestamp()]
        book = ExposureBook(loaded.config, lambda: policy, clock=lambda: now[0])
        register.attach(book)
        register.apply(setup, seq)

        def run(reg: LotRegister, value: float) -> float:
            nonlocal seq
            start = T0 + timedelta(seconds=seq)
            batch = _readings(seq + 1, start, args.readings, value)
            seq += args.readings
            t = time.perf_counter()
            reg.apply(batch if reg is register else [], seq)
            return time.perf_counter() - t

        n = args.readings
        results = {
            "no book (floor)": [run(plain, 5.0) for _ in range(args.runs)],
            "book, in range (memory only)": [run(register, 5.0) for _ in range(args.runs)],
            "book, excursion (one transaction)": [run(register, 9.5) for _ in range(args.runs)],
        }
        print(f"{args.lots} lots in cold-1, {args.lots} at the dock; {n} readings per batch")
        for name, times in results.items():
            med = statistics.median(times)
            print(f"  apply {name:<36} {med * 1e3:8.2f} ms/batch  {med / n * 1e6:7.2f} µs/reading")
        checks = []
        for _ in range(args.runs):
            now[0] += 1
            t = time.perf_counter()
            book.check()
            checks.append(time.perf_counter() - t)
        print(f"  book.check() {'':<29} {statistics.median(checks) * 1e3:8.2f} ms")
        flushes = []
        for _ in range(args.runs):
            run(register, 5.0)
            t = time.perf_counter()
            register.flush_book(force=True)
            flushes.append(time.perf_counter() - t)
        print(
            f"  statistics flush (once a minute) {'':<9} {statistics.median(flushes) * 1e3:8.2f} ms"
        )
        register.close()
        plain.close()


if __name__ == "__main__":
    main()
