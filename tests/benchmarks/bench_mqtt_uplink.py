"""MQTT uplink benchmark: delivered records/s from a backlog to a local mosquitto.

Run from the repository root::

    .venv/bin/python -m tests.benchmarks.bench_mqtt_uplink [--backlog 100000] [--windows 1,4,8]

A script, not a pytest test (pytest does not collect ``bench_*.py``; keep it that way). It
prints one table, and finally one JSON line with every figure. Progress notes go to stderr.
Needs mosquitto (``apt-get install mosquitto``); the broker runs as :class:`tests.broker.Broker`
(a subprocess on a free loopback port, no persistence).

A backlog of ``--backlog`` realistic ``reading`` records (sealed and committed as the agent
does: :func:`tests.benchmarks.bench_pipeline.seal_and_commit`) is drained by
:class:`gxpgate.agent.uplink.mqtt.MqttUplink` (MQTT 5, QoS 1, batches of ``--batch`` records, 1,000
by default) from cursor 0 until the broker has acknowledged every record; the cursor is put back
to 0 before each run. "Delivered" is the uplink's definition: the broker's PUBACK, with the
cursor written to SQLite. Runs, for each in-flight window of ``--windows``:

* **no subscriber**: the broker acknowledges and drops (PUBACK 0x10): the uplink's own ceiling;
* **with a consumer**: a second process subscribed QoS 1 that gunzips and parses every batch
  (a quality service's minimum work, without signature checks); the end-to-end figure is the
  time until that consumer holds every record;
* **TLS** (the largest window): as "with a consumer", over TLS 1.3 to the broker.

Also shown: the gateway process's CPU time (user + system, all its threads, including paho's)
per 1,000 records. Target: >= 30,000 records/s with a consumer and the default window (4),
the HTTP uplink's target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from gxpgate.agent.recording.sealing import Fact, Sealer
from gxpgate.agent.uplink.mqtt import MqttUplink
from gxpgate.buffer import Outbox
from gxpgate.config.mqtt_model import MqttUplinkConfig
from tests.benchmarks.bench_pipeline import GW, fact_chunks, seal_and_commit
from tests.benchmarks.reporting import (
    BenchError,
    Report,
    cpu_model,
    filesystem_of,
    note,
    package_version,
)
from tests.broker import Broker, _mosquitto_path, free_port, make_tls_files

TARGET_RPS = 30_000.0
DEFAULT_WINDOW = 4


def cpu_secs() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def drain(
    outbox: Outbox, broker: Broker, batch: int, window: int, limit_secs: float
) -> tuple[float, float, int]:
    """Seconds until the broker acknowledged the whole backlog, gateway CPU seconds, batches."""
    await asyncio.to_thread(outbox.set_acked_through, 0)
    tls: dict[str, Any] = {"tls": False}
    if broker.tls is not None:
        tls = {"tls": True, "ca_file": broker.tls.ca_file}
    config = MqttUplinkConfig(
        transport="mqtt",
        host=broker.host,
        port=broker.port,
        client_id=f"bench-{uuid.uuid4().hex[:8]}",
        batch_max_records=batch,
        inflight_max_batches=window,
        **tls,
    )
    target = outbox.last_seq

    async def record(_fact: Fact) -> None:
        pass

    async with MqttUplink(outbox, config, record) as uplink:
        async with asyncio.timeout(30):
            while not uplink.connected:  # noqa: ASYNC110 (polling the uplink's state is the point)
                await asyncio.sleep(0.005)
        cpu, start = cpu_secs(), time.perf_counter()
        runner = asyncio.create_task(uplink.run())
        try:
            async with asyncio.timeout(limit_secs):
                while uplink.stats.delivered_through < target:  # noqa: ASYNC110 (as above)
                    await asyncio.sleep(0.002)
        except TimeoutError:
            done = uplink.stats.delivered_through
            raise BenchError(
                f"drain unfinished after {limit_secs:g} s: {done:,} of {target:,}"
            ) from None
        finally:
            secs, cpu = time.perf_counter() - start, cpu_secs() - cpu
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        if uplink.stats.errors:
            raise BenchError(f"uplink errors during the drain: {uplink.stats.errors_by_kind}")
        return secs, cpu, uplink.stats.batches


class Consumer:
    """The counting consumer in its own process (``--consume``): ready, then done."""

    def __init__(self, broker: Broker, records: int) -> None:
        command = [
            sys.executable,
            "-m",
            "tests.benchmarks.bench_mqtt_uplink",
            "--consume",
            f"{broker.host}:{broker.port}",
            "--backlog",
            str(records),
        ]
        if broker.tls is not None:
            command += ["--ca-file", str(broker.tls.ca_file)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise BenchError(f"consumer did not start: {line!r}")

    def wait_done(self, timeout: float) -> float:
        """Wall-clock time (``time.time()``) the consumer held the last record."""
        assert self.proc.stdout is not None
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise BenchError("consumer did not receive everything") from None
        return float(out.split()[-1])


def consume(address: str, records: int, ca_file: str | None) -> int:
    """Subscribe QoS 1 with a persistent session, gunzip and parse every batch; print ``ready``
    after the SUBACK and the wall-clock time once ``records`` are held."""
    host, port = address.rsplit(":", 1)
    held = 0
    done = False
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-consumer-{uuid.uuid4().hex[:8]}",
        protocol=paho.MQTTv5,
    )
    if ca_file:
        client.tls_set(ca_certs=ca_file)

    def on_connect(c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        c.subscribe(f"gxpgate/{GW}/evidence", options=SubscribeOptions(qos=1))

    def on_subscribe(_c: paho.Client, _u: Any, _m: int, _r: Any, _p: Any) -> None:
        print("ready", flush=True)

    def on_message(_c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        nonlocal held, done
        batch = orjson.loads(gzip.decompress(message.payload))
        held = max(held, batch["records"][-1]["seq"])
        if held >= records and not done:
            done = True
            print(f"done {time.time():.6f}", flush=True)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, int(port), 30, clean_start=False)
    while not done:
        client.loop(0.1)
    client.disconnect()
    return 0


def run(args: argparse.Namespace, tmp: Path, report: Report) -> None:
    if _mosquitto_path() is None:
        raise BenchError("mosquitto is not installed (apt-get install mosquitto)")
    note(f"sealing a backlog of {args.backlog:,} records")
    key = Ed25519PrivateKey.generate()
    outbox = Outbox(tmp / "buffer.db", GW)
    try:
        sealer = Sealer(key, GW, outbox.chain)
        seal_and_commit(outbox, sealer, fact_chunks(args.backlog, 5000))
        plain = Broker("mosquitto", tmp, free_port())
        tls_dir = tmp / "tls"
        tls_dir.mkdir()
        secure = Broker("mosquitto", tls_dir, free_port(), make_tls_files(tls_dir))
        plain.start()
        secure.start()
        try:
            report.section(
                f"Drain of a {args.backlog:,}-record backlog to mosquitto, "
                f"batches of {args.batch:,}, QoS 1, MQTT 5"
            )
            for window in args.windows:
                measure(args, outbox, plain, window, report, consumer=False)
                measure(args, outbox, plain, window, report, consumer=True)
            measure(args, outbox, secure, max(args.windows), report, consumer=True)
        finally:
            plain.stop()
            secure.stop()
    finally:
        outbox.close()


def measure(
    args: argparse.Namespace,
    outbox: Outbox,
    broker: Broker,
    window: int,
    report: Report,
    *,
    consumer: bool,
) -> None:
    n = args.backlog
    what = "TLS, consumer" if broker.tls else "consumer" if consumer else "no subscriber"
    note(f"window {window}, {what}")
    sub = Consumer(broker, n) if consumer else None
    started_wall = time.time()
    secs, cpu, batches = asyncio.run(drain(outbox, broker, args.batch, window, args.limit))
    key = f"w{window}_{'tls' if broker.tls else 'sub' if consumer else 'nosub'}"
    target = TARGET_RPS if consumer and window == DEFAULT_WINDOW and not broker.tls else None
    report.add(
        f"{key}_rps",
        f"window {window}, {what}: delivered (PUBACKed, cursor advanced)",
        n / secs,
        "records/s",
        at_least=target,
    )
    report.add(
        f"{key}_cpu_ms_per_1000",
        f"  gateway CPU per 1,000 records ({batches} batches)",
        cpu * 1000 / n * 1000,
        "ms",
    )
    if sub is not None:
        done = sub.wait_done(args.limit)
        report.add(
            f"{key}_e2e_rps",
            "  end to end: until the consumer held every record",
            n / (done - started_wall),
            "records/s",
        )


def machine_facts(tmp: Path) -> dict[str, Any]:
    version = subprocess.run(
        [_mosquitto_path() or "mosquitto", "-h"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return {
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "paho-mqtt": package_version("paho-mqtt"),
        "mosquitto": version[0] if version else "?",
        "tmp_fs": filesystem_of(tmp),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.bench_mqtt_uplink",
        description="Benchmark gxpgate's MQTT uplink against a local mosquitto.",
    )
    parser.add_argument("--backlog", type=int, default=100_000, help="records to drain")
    parser.add_argument("--batch", type=int, default=1000, help="records per batch")
    parser.add_argument(
        "--windows",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 4, 8],
        help="in-flight windows to measure, comma-separated (default 1,4,8)",
    )
    parser.add_argument("--limit", type=float, default=300.0, help="seconds per drain")
    parser.add_argument("--tmpdir", type=Path, default=None, help="where the buffer goes")
    parser.add_argument("--consume", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ca-file", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.backlog, args.batch, *args.windows) < 1 or args.batch > 10_000:
        parser.error("counts must be positive and batches at most 10,000 records")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.consume is not None:
        return consume(args.consume, args.backlog, args.ca_file)
    started = time.perf_counter()
    report = Report("gxpgate.mqtt_uplink")
    with tempfile.TemporaryDirectory(prefix="gxpgate-bench-", dir=args.tmpdir) as tmp_name:
        tmp = Path(tmp_name)
        machine = machine_facts(tmp)
        print("gxpgate MQTT uplink benchmark", flush=True)
        for name, value in machine.items():
            print(f"  {name:<15} {value}", flush=True)
        try:
            run(args, tmp, report)
        except Exception as exc:
            report.error("drain", exc)
        wall = time.perf_counter() - started
        report.summary()
        print(f"\n  wall time {wall:.1f} s", flush=True)
        params = {"backlog": args.backlog, "batch": args.batch, "windows": args.windows}
        print(report.as_json(machine, wall, params), flush=True)
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
