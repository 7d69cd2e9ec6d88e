"""Chaos benchmark: the agent as a real process against what a hostile site throws at it.

Each scenario runs ``gxpgate run`` as a subprocess (the way systemd runs it) against the bundled
Modbus and quality-service simulators, does its damage, lets the agent recover, stops it with
SIGTERM and then counts, from the buffer's export and the service's store:

- sealed: records in the chain; delivered: records the service holds;
- gaps: seqs missing from 1..N in the buffer (a hole the service could never get past);
- duplicates: samples sealed twice (same device, point and acquisition time);
- lost: sealed but not delivered after recovery; crashes: agent runs that ended on their own
  (not by our SIGKILL) or printed a traceback.

Scenarios: ``kill9`` (SIGKILL at random moments, 20 times), ``rogue-modbus`` (a server that
answers with malformed frames beside a healthy device), ``bad-answers`` (a service that answers
nonsense, then the real one), ``disk-full`` (the buffer on a small tmpfs filled to the last
byte, then freed; needs root), ``flood`` (a barcode scanner sending as fast as TCP allows
beside a polled Modbus device).

    python -m tests.benchmarks.bench_chaos [--only kill9,flood] [--kills 20]

Exit status 1 when any scenario crashed, lost, duplicated or left a gap.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gxpgate.agent.evidence import format_time, generate_key_file
from gxpgate.buffer import Outbox
from gxpgate.drivers.base import utc_now
from gxpgate.simulators.modbus_sim import ModbusSimulator
from gxpgate.simulators.quality_service import QualityServiceSimulator

from ..hostile import Answer, HostileService, RogueModbus
from .reporting import note

GW = "gw-chaos"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Tally:
    scenario: str
    sealed: int = 0
    delivered: int = 0
    gaps: int = 0
    duplicates: int = 0
    lost: int = 0
    crashes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.gaps or self.duplicates or self.lost or self.crashes) and self.sealed > 0


# --------------------------------------------------------------------------- the site


class Site:
    """A work folder with a key, a config and the agent as a subprocess."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.key = folder / "signing.key"
        self.public = generate_key_file(self.key).public_key()
        self.config = folder / "gxpgate.toml"
        self.buffer = folder / "buffer.db"
        self.runs: list[int | None] = []
        self._stderr: list[Path] = []

    def write_config(
        self, url: str | None, devices: str, *, buffer_dir: Path | None = None,
        reserve_mb: float = 16,
    ) -> None:  # fmt: skip
        buffer = (buffer_dir or self.folder) / "buffer.db"
        self.buffer = buffer
        uplink = (
            f'[uplink]\nurl = "{url}"\nbackoff_initial_secs = 0.05\nbackoff_max_secs = 1\n'
            "timeout_secs = 5\n"
            if url
            else ""
        )
        self.config.write_text(
            f"""
[gateway]
id = "{GW}"
site = "Chaos site"

[signing]
key_file = "{self.key}"

[buffer]
path = "{buffer}"
commit_interval_ms = 50
reserve_mb = {reserve_mb}

[metrics]
enabled = false

{uplink}
[zones.cold-1]
profile = "refrigerated"

[zones.dock]
profile = "unclassified"

{devices}
""",
            encoding="utf-8",
        )

    async def start(self) -> asyncio.subprocess.Process:
        log = self.folder / f"agent-{len(self._stderr)}.log"
        self._stderr.append(log)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with log.open("wb") as err:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gxpgate", "run", "--config", str(self.config),
                env=env, stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip

    async def stop(self, proc: asyncio.subprocess.Process, within: float = 60.0) -> int | None:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(proc.wait(), within)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            code = None  # did not stop within the unit's stop timeout: a crash for our count
        self.runs.append(code)
        return code

    def tracebacks(self) -> int:
        return sum(
            "Traceback (most recent call last)" in p.read_text(errors="replace")
            for p in self._stderr
        )

    def records(self) -> list[dict[str, Any]]:
        outbox = Outbox(self.buffer, GW)
        try:
            return [orjson.loads(body) for body in outbox.export()]
        finally:
            outbox.close()


def modbus_device(
    name: str, port: int, *, zone: str = "cold-1", poll: float = 0.1, unit: int = 1
) -> str:
    return f"""
[devices.{name}]
type = "modbus_tcp"
host = "127.0.0.1"
port = {port}
unit_id = {unit}
zone = "{zone}"
poll_interval_secs = {poll}
timeout_ms = 300
reconnect_max_secs = 0.5
points.temperature = {{ table = "input", address = 0, type = "float32", unit = "Cel" }}
points.humidity = {{ table = "input", address = 2, type = "float32", unit = "%" }}
"""


def tally(name: str, site: Site, qs: QualityServiceSimulator | None, *, killed: int = 0) -> Tally:
    records = site.records()
    result = Tally(name, sealed=len(records))
    seqs = [r["seq"] for r in records]
    if seqs:
        result.gaps = (seqs[-1] - seqs[0] + 1) - len(set(seqs)) + (seqs[0] - 1)
    samples = Counter((r["device"], r["point"], r["at"]) for r in records if r["kind"] == "reading")
    result.duplicates = sum(n - 1 for n in samples.values() if n > 1) + len(seqs) - len(set(seqs))
    if qs is not None and qs.chains():
        stored = qs.records(GW, qs.chains()[0][1])
        result.delivered = len(stored)
        result.lost = len({r["seq"] for r in records} - {r["seq"] for r in stored})
        if stored != records[: len(stored)]:
            result.notes.append("the service holds records that differ from the buffer's")
            result.lost += 1
    elif qs is not None:
        result.lost = len(records)
    unexpected = sum(1 for code in site.runs if code not in (0,)) - killed
    result.crashes = max(0, unexpected) + site.tracebacks()
    return result


async def until(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def drain(qs: QualityServiceSimulator, site: Site, within: float = 60.0) -> None:
    """Run the agent until the service holds everything, then stop it cleanly."""
    proc = await site.start()
    with contextlib.suppress(TimeoutError):
        await until(lambda: bool(qs.chains()), within, "a first delivery")
        await asyncio.sleep(1.0)
    await site.stop(proc)
    # The final flush is bounded; a last clean run delivers what it left.
    proc = await site.start()
    await asyncio.sleep(3.0)
    await site.stop(proc)


# --------------------------------------------------------------------------- scenarios


async def kill9(folder: Path, kills: int) -> Tally:
    site = Site(folder)
    rng = random.Random(9)
    async with ModbusSimulator() as sim:
        with QualityServiceSimulator(folder / "qs.db", [site.public]) as qs:
            site.write_config(qs.url, modbus_device("probe-1", sim.port, poll=0.05))
            for n in range(kills):
                proc = await site.start()
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                if proc.returncode is not None:
                    site.runs.append(proc.returncode)
                    continue
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
                if n % 5 == 4:
                    note(f"kill9: {n + 1}/{kills} kills")
            await drain(qs, site)
            return tally("kill9", site, qs, killed=0)


async def rogue_modbus(folder: Path, seconds: float) -> Tally:
    site = Site(folder)
    async with ModbusSimulator() as sim, RogueModbus() as rogue:
        with QualityServiceSimulator(folder / "qs.db", [site.public]) as qs:
            devices = modbus_device("healthy", sim.port, poll=0.1) + modbus_device(
                "rogue", rogue.port, poll=0.1
            )
            site.write_config(qs.url, devices)
            proc = await site.start()
            await asyncio.sleep(seconds)
            alive = proc.returncode is None
            await site.stop(proc)
            await drain(qs, site)
            result = tally("rogue-modbus", site, qs)
            readings = [r for r in site.records() if r["kind"] == "reading"]
            healthy = sum(
                1 for r in readings if r["device"] == "healthy" and r["quality"] == "good"
            )
            bad = sum(1 for r in readings if r["device"] == "rogue" and r["quality"] == "bad")
            nominal = 2 * seconds / 0.1
            result.notes.append(
                f"alive after {seconds:.0f} s: {alive}; healthy good readings {healthy} "
                f"(≈{healthy / nominal:.0%} of nominal over the whole run); rogue bad {bad}; "
                f"rogue answers {dict(rogue.served)}"
            )
            if not alive:
                result.crashes += 1
            return result


BAD_ANSWERS = (
    Answer(b'{"acked_through": true}'),
    Answer(b'{"acked_through": "12"}'),
    Answer(b'{"acked_through": -1}'),
    Answer(b'{"acked_through": 1.5}'),
    Answer(b'{"acked_through": null}'),
    Answer(b'{"acked_through": '),
    Answer(b'{"acked_through": 999999999}'),
    Answer(size=100 * 1024 * 1024),
    Answer(drip_secs=2.0),
)


async def bad_answers(folder: Path, seconds: float) -> Tally:
    site = Site(folder)
    port = _free_port()
    async with ModbusSimulator() as sim:
        async with HostileService(BAD_ANSWERS, port, cycle=True) as bad:
            site.write_config(f"http://127.0.0.1:{port}", modbus_device("probe-1", sim.port))
            proc = await site.start()
            await asyncio.sleep(seconds)
            alive = proc.returncode is None
            await site.stop(proc)
        with QualityServiceSimulator(folder / "qs.db", [site.public], port=port) as qs:
            await drain(qs, site)
            result = tally("bad-answers", site, qs)
    result.notes.append(f"alive through the bad answers: {alive}; {len(bad.requests)} answered")
    if not alive:
        result.crashes += 1
    return result


async def disk_full(folder: Path, seconds: float) -> Tally:
    site = Site(folder)
    mount = folder / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        return Tally("disk-full", notes=["not run: mounting a small tmpfs needs root"])
    await asyncio.to_thread(
        subprocess.run, ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True
    )
    try:
        async with ModbusSimulator() as sim:
            with QualityServiceSimulator(folder / "qs.db", [site.public]) as qs:
                site.write_config(
                    qs.url,
                    modbus_device("probe-1", sim.port, poll=0.05),
                    buffer_dir=mount,
                    reserve_mb=1,  # sized to the 8 MiB filesystem (the default is 16)
                )
                proc = await site.start()
                await until(lambda: bool(qs.chains()), 30, "a first delivery")
                filler = mount / "filler"
                with filler.open("wb", buffering=0) as handle, contextlib.suppress(OSError):
                    while True:
                        handle.write(b"\0" * 65536)
                note(f"disk-full: the buffer's filesystem is full; holding {seconds:.0f} s")
                await asyncio.sleep(seconds)
                alive_full = proc.returncode is None
                filler.unlink()
                await asyncio.sleep(3.0)
                await site.stop(proc)
                # A start on a full disk must come up and say so.
                with filler.open("wb", buffering=0) as handle, contextlib.suppress(OSError):
                    while True:
                        handle.write(b"\0" * 65536)
                proc = await site.start()
                await asyncio.sleep(4.0)
                alive_start = proc.returncode is None
                filler.unlink()
                await asyncio.sleep(2.0)
                await site.stop(proc)
                await drain(qs, site)
                result = tally("disk-full", site, qs)
                events = Counter(
                    r["data"].get("event") for r in site.records() if r["kind"] == "audit"
                )
                result.notes.append(
                    f"alive while full: {alive_full}; came up on a full disk: {alive_start}; "
                    f"buffer_write_failed audits: {events.get('buffer_write_failed', 0)}"
                )
                result.crashes += (not alive_full) + (not alive_start)
                return result
    finally:
        await asyncio.to_thread(subprocess.run, ["umount", "-l", str(mount)], check=False)


async def flood(folder: Path, seconds: float) -> Tally:
    """One connection gets ``seconds`` of scans as fast as TCP takes them, then stays open and
    quiet (a scanner that reconnects is not flooded again), so every scan sent is accounted."""
    site = Site(folder)
    sent = 0
    window: list[str] = []
    connections = 0

    async def blast(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent, connections
        connections += 1
        with contextlib.suppress(ConnectionError):
            if connections == 1:
                window.append(format_time(utc_now()))
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    writer.writelines(
                        f"(01)10614141000019(21)F{sent + n:07d}\r\n".encode() for n in range(256)
                    )
                    sent += 256
                    await writer.drain()
                window.append(format_time(utc_now()))
            await reader.read()  # quiet until the agent closes
        writer.close()

    scanners = await asyncio.start_server(blast, "127.0.0.1", 0)
    port = scanners.sockets[0].getsockname()[1]
    async with ModbusSimulator() as sim:
        with QualityServiceSimulator(folder / "qs.db", [site.public]) as qs:
            devices = modbus_device("probe-1", sim.port, poll=0.1) + _SCANNER.format(port=port)
            site.write_config(qs.url, devices)
            proc = await site.start()
            await until(lambda: len(window) == 2, seconds + 60, "the end of the flood")
            await asyncio.sleep(10.0)  # the agent works through what it took in
            alive = proc.returncode is None
            started = time.monotonic()
            await site.stop(proc)
            stop_secs = time.monotonic() - started
            scanners.close()
            await drain(qs, site)
            result = tally("flood", site, qs)
            records = site.records()
            scans = sum(1 for r in records if r["kind"] == "custody")
            counted = sum(
                int(r["data"].get("count", 0))
                for r in records
                if r["kind"] == "audit" and "overflow" in str(r["data"].get("event", ""))
            )
            during = [
                r
                for r in records
                if r["kind"] == "reading"
                and r["quality"] == "good"
                and window[0] <= r["at"] <= window[1]
            ]
            nominal = 2 * seconds / 0.1
            comm = sum(
                1
                for r in records
                if r["kind"] == "alarm"
                and r["data"].get("kind") == "comm_loss"
                and r["data"].get("state") == "active"
            )
            result.notes.append(
                f"scans sent {sent}, sealed {scans}, counted as overflow {counted} "
                f"(unaccounted {sent - scans - counted}); good Modbus readings during the flood "
                f"{len(during)} of {nominal:.0f} nominal; comm-loss alarms {comm}; alive {alive}; "
                f"stop took {stop_secs:.1f} s"
            )
            result.lost += abs(sent - scans - counted)
            result.crashes += not alive
            return result


_SCANNER = """
[devices.dock-1]
type = "barcode_scanner"
transport = "tcp"
host = "127.0.0.1"
port = {port}
zone = "dock"
biz_step = "receiving"
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SCENARIOS: dict[str, Callable[[Path, argparse.Namespace], Awaitable[Tally]]] = {
    "kill9": lambda f, a: kill9(f, a.kills),
    "rogue-modbus": lambda f, a: rogue_modbus(f, a.seconds),
    "bad-answers": lambda f, a: bad_answers(f, a.seconds * 2),
    "disk-full": lambda f, a: disk_full(f, a.seconds),
    "flood": lambda f, a: flood(f, a.seconds),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each ordeal")
    args = parser.parse_args(argv)
    results: list[Tally] = []
    for name in args.only.split(","):
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}: choose from {', '.join(SCENARIOS)}")
        note(f"{name}: starting")
        with tempfile.TemporaryDirectory(prefix=f"chaos-{name}-") as tmp:
            try:
                result = asyncio.run(SCENARIOS[name](Path(tmp), args))
            except Exception as exc:  # the benchmark reports the scenario as failed, then goes on
                result = Tally(
                    name, crashes=1, notes=[f"scenario failed: {type(exc).__name__}: {exc}"]
                )
        results.append(result)
        note(f"{name}: {'ok' if result.ok else 'FAILED'}")
    print(
        f"{'scenario':<14}{'sealed':>8}{'delivered':>10}{'gaps':>6}{'dups':>6}{'lost':>6}{'crashes':>8}"
    )
    for r in results:
        print(
            f"{r.scenario:<14}{r.sealed:>8}{r.delivered:>10}{r.gaps:>6}{r.duplicates:>6}{r.lost:>6}{r.crashes:>8}"
        )
        for line in r.notes:
            print(f"    {line}")
    print(json.dumps([r.__dict__ | {"ok": r.ok} for r in results]))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
