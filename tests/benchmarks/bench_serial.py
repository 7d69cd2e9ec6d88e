"""Serial benchmark: Modbus RTU poll rate against the line rate, and a data logger's back-fill.

Run from the repository root::

    .venv/bin/python tests/benchmarks/bench_serial.py [--window 20] [--records 100000]
    .venv/bin/python tests/benchmarks/bench_serial.py --quick      # under a minute

A script, not a pytest test (pytest does not collect ``bench_*.py``; keep it that way). It
prints one table per section, the notes and line-rate arithmetic, and finally one JSON line with
every figure. Progress notes go to stderr.

The simulators run in a child process each (this module with ``--child-rtu-sim`` or
``--child-logger-sim``), as a real bus or logger would be outside the gateway, so the virtual
line's pacing timers and the logger's formatting are not the agent's CPU and do not share its
event loop or GIL. The real :class:`gxpgate.agent.service.runtime.Agent` runs in this process
through
:class:`tests.running.Running`, so every figure counts readings that were sealed and durably
committed, not just read.

1. Modbus RTU at ``--baud`` (19200), 8N1 (a Linux pty refuses even parity), paced by
   :class:`gxpgate.simulators.serial_line.VirtualSerialLine`: ``--slaves`` (10) sensors, unit ids
   1..10, each a ``modbus_rtu`` device with six points covering ten registers (input 0-3: two
   float32; holding 100 int16, 101 uint16, 102-103 float32 CDAB; holding 200-201 uint32). The
   request plan makes three requests per slave (input 0-3, holding 100-103, holding 200-201:
   the gap 104..199 is over ``max_gap``). Every slave polls every ``--poll`` seconds (0.05),
   far faster than the line can serve ten, so the bus is saturated and the slaves take turns
   through its FIFO lock. Over ``--window`` seconds (after ``--warmup``): committed good points
   per second (counted by acquisition time), requests per second, and the line's bytes. The
   theoretical line rate is computed from the plan: per request, the 8-byte read request and the
   (5 + 2 x registers)-byte response, 10 bits a character, plus two 3.5-character silences
   (``inter_frame_delay_secs``; one before the slave answers, one before the next request).
   A second pass makes slave 10 silent (``no_answer``; every slave has ``timeout_ms`` 100,
   ``reconnect_max_secs`` ``--silent-reconnect-max``) and reports the other nine's points/s.
2. Back-fill: a GXL/1 logger (:class:`gxpgate.simulators.logger_sim.LoggerSimulator`, a record every
   60 s, memory for ``--records`` records, a fake clock) is enrolled with an empty memory by a
   first, brief agent run (its state: last contact before record 1); the agent stops, the
   logger's clock moves on ``--records`` x 60 s, so it holds records 1..N, and a fresh agent on
   the same buffer reads them back. Timed from the agent's start until the
   ``backfill_completed`` audit record is committed, for each of ``--chunks`` (100 and 1000
   records per READ), each pass with its own buffer and logger. The logger's pty is not paced:
   the line-rate bound of a real logger at 115,200 baud is computed from the average REC line.
   The RSS of this process (the agent's; the simulators are children) is reported at the end.
"""

from __future__ import annotations

import argparse
import asyncio
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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if not __package__:  # run as a file path: make the repository's packages importable
    sys.path.insert(0, str(REPO_ROOT))

from tests.benchmarks.reporting import (  # noqa: E402
    BenchError,
    Report,
    cpu_model,
    note,
    package_version,
)

if TYPE_CHECKING:
    from gxpgate.agent.service.runtime import Agent
    from gxpgate.drivers.modbus_model import ModbusRtuBus, ReadRequest
    from gxpgate.drivers.modbus_rtu import RtuBus
    from tests.running import Running

GW = "gw-bench-serial"
ZONE = "cold-1"
BUS = "line-1"
LOGGER = "logger-1"
LOGGER_SERIAL = "L0100"
LOGGER_INTERVAL_SECS = 60
LOGGER_POINTS = 2  # temperature and humidity: two readings per record
RTU_TIMEOUT_MS = 100
REAL_LOGGER_BAUD = 115_200
SLOW_LOGGER_BAUD = 9_600
BITS_PER_CHAR = 10  # 8N1
READ_REQUEST_BYTES = 8  # addr, fc, start (2), count (2), CRC (2)
CHILD_START_SECS = 30.0
AGENT_STOP_SECS = 30.0

# Six points over ten registers of the simulator's map (see simulators/modbus_sim.py).
RTU_POINTS = """\
points.temperature = { table = "input", address = 0, type = "float32", unit = "Cel" }
points.humidity = { table = "input", address = 2, type = "float32", unit = "%" }
points.temperature_x10 = { table = "holding", address = 100, type = "int16", scale = 0.1, \
unit = "Cel" }
points.humidity_x10 = { table = "holding", address = 101, type = "uint16", scale = 0.1, \
unit = "%" }
points.temperature_cdab = { table = "holding", address = 102, type = "float32", \
word_order = "little", unit = "Cel" }
points.uptime = { table = "holding", address = 200, type = "uint32", unit = "s" }
"""


def quiet_logs() -> None:
    """A saturated bus overruns every poll slot (one warning each) and a silent slave makes
    pymodbus log an error per timeout; the counts are in the figures instead."""
    logging.getLogger("gxpgate.agent.devices.supervisor").setLevel(logging.ERROR)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def proc_status(pid: int | str = "self") -> dict[str, float]:
    """VmRSS and VmHWM of a process in MB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            name, _, rest = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                out[name] = int(rest.split()[0]) / 1024
    return out


def cpu_self_secs() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rate(count: float, secs: float) -> float:
    return count / secs if secs > 0 else math.nan


def thread_cpu_secs() -> tuple[float, float]:
    """CPU seconds of this process's main thread (the event loop), and of all its other
    threads together (``asyncio.to_thread`` workers: the recorder's seal + commit), from
    /proc/self/task."""
    main = others = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
            secs = (int(fields[11]) + int(fields[12])) / tick
            if int(tid) == os.getpid():
                main += secs
            else:
                others += secs
    return main, others


def machine_busy_secs() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass
class LoadMeter:
    """How busy the machine was over a span, and how much of it was not this benchmark."""

    child: SimChild
    wall: float = field(init=False)
    busy: float = field(init=False)
    ours: float = field(init=False)

    def __post_init__(self) -> None:
        self.wall, self.busy, self.ours = self._now()

    def _now(self) -> tuple[float, float, float]:
        return time.perf_counter(), machine_busy_secs(), cpu_self_secs() + self.child.cpu_secs()

    def stop(self) -> tuple[float, float]:
        """(cores busy on the machine, of which by processes other than this benchmark's)."""
        wall, busy, ours = self._now()
        secs = wall - self.wall
        machine = (busy - self.busy) / secs
        return machine, max(0.0, machine - (ours - self.ours) / secs)


def report_load(rep: Report, key: str, load: tuple[float, float]) -> None:
    machine, others = load
    rep.add(key + "machine_busy_cores", f"    machine busy, all processes (of {os.cpu_count()} "
            "cores)", machine, "cores")  # fmt: skip
    rep.add(key + "other_load_cores", "    of which other processes than this benchmark's",
            others, "cores")  # fmt: skip


# -- the simulator children ------------------------------------------------------------------


async def _commands(answer: Any) -> None:
    """Answer one JSON line per command line read from stdin; EOF or ``quit`` stops."""
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        cmd, *arg = line.split() or ["quit"]
        if cmd == "quit":
            return
        try:
            out = answer(cmd, arg)
        except Exception as exc:  # the parent gets the error, not a dead child
            out = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(out), flush=True)


async def child_rtu_main(slaves: int, baud: int) -> int:
    """The RTU line: ``fault UNIT KIND|none``, ``stats``."""
    from gxpgate.simulators.modbus_sim import ModbusRtuSimulator, SensorSpec

    char_secs = BITS_PER_CHAR / baud

    class TimedSimulator(ModbusRtuSimulator):
        """Times each frame as the slaves' side of the line sees it (pymodbus's packet trace):
        request received -> response sent (the slave's turnaround), and response sent -> next
        request fully received, less both frames' wire time (the line's idle time between
        transactions: the master's silence and processing, and the pacing timers' lateness)."""

        def __init__(self) -> None:
            sensors = [SensorSpec(unit, f"sensor-{unit:02d}") for unit in range(1, slaves + 1)]
            super().__init__(sensors, baudrate=baud, bits_per_char=BITS_PER_CHAR)
            self.timing = {"turnaround": 0.0, "responses": 0, "idle": 0.0, "cycles": 0}
            self._received: float | None = None
            self._sent: tuple[float, int] | None = None

        def _trace_packet(self, sending: bool, packet: bytes) -> bytes:
            now = time.monotonic()
            if sending:
                if self._received is not None:
                    self.timing["turnaround"] += now - self._received
                    self.timing["responses"] += 1
                self._received, self._sent = None, (now, len(packet))
            else:
                if self._sent is not None:
                    sent_at, size = self._sent
                    self.timing["idle"] += now - sent_at - (size + len(packet)) * char_secs
                    self.timing["cycles"] += 1
                self._received, self._sent = now, None
            return super()._trace_packet(sending, packet)

    sim = TimedSimulator()
    async with sim:
        print(json.dumps({"path": sim.device_path}), flush=True)

        def answer(cmd: str, arg: list[str]) -> dict[str, Any]:
            if cmd == "fault":
                kind = None if arg[1] == "none" else arg[1]
                sim.set_fault(int(arg[0]), kind)  # type: ignore[arg-type]
                return {"ok": True}
            if cmd == "stats":
                line = sim.line
                return {
                    "served": sim.requests_served,
                    "to_device": line.bytes_to_device,
                    "to_gateway": line.bytes_to_gateway,
                    **sim.timing,
                }
            raise ValueError(f"unknown command {cmd!r}")

        await _commands(answer)
    return 0


class FakeClock:
    """The logger's clock (epoch seconds), moved on by the parent."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def child_logger_main(records: int) -> int:
    """The logger, empty until ``advance SECS``; ``reclen CHUNK``, ``stats``."""
    from gxpgate.drivers.gxl import encode_line, format_end, format_record, request_records
    from gxpgate.simulators.logger_sim import LoggerSimulator

    span = records * LOGGER_INTERVAL_SECS
    # Starts `span` in the past, so that after `advance span` its records end about now.
    clock = FakeClock(float(int(time.time())) - span)
    sim = LoggerSimulator(
        serial=LOGGER_SERIAL,
        interval_secs=LOGGER_INTERVAL_SECS,
        capacity=records,
        started_at=clock.now,
        clock=clock,
    )
    async with sim:
        print(json.dumps({"path": sim.device_path}), flush=True)

        def answer(cmd: str, arg: list[str]) -> dict[str, Any]:
            if cmd == "advance":
                clock.now += float(arg[0])
                start = time.perf_counter()
                identity = sim.identity()  # takes the records now, not in the first READ
                secs = time.perf_counter() - start
                return {"first": identity.first, "last": identity.last, "secs": secs}
            if cmd == "reclen":
                identity = sim.identity()
                held = identity.last - identity.first + 1
                step = max(1, held // 5000)
                indices = range(identity.first, identity.last + 1, step)
                lengths = [len(encode_line(format_record(sim.record(i)))) for i in indices]
                chunk = int(arg[0])
                return {
                    "rec_bytes": sum(lengths) / len(lengths),
                    "sampled": len(lengths),
                    "request_bytes": len(request_records(identity.first, chunk)),
                    "end_bytes": len(encode_line(format_end(chunk))),
                }
            if cmd == "stats":
                return {"served": sim.requests_served}
            raise ValueError(f"unknown command {cmd!r}")

        await _commands(answer)
    return 0


class SimChild:
    """A simulator process: started, talked to over stdin/stdout, always stopped."""

    def __init__(self, args: Sequence[str], stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        self._stderr: IO[bytes] = open(stderr_path, "wb")  # noqa: SIM115 - closed in close()
        command = [sys.executable, "-m", "tests.benchmarks.bench_serial", *args]
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
        try:
            self.hello = self.receive(CHILD_START_SECS)
        except BaseException:
            self.close()
            raise

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
        if "error" in doc:
            raise BenchError(f"simulator: {doc['error']}")
        return doc

    def ask(self, command: str, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise BenchError(f"simulator gone: {exc}{self._tail()}") from exc
        return self.receive(timeout)

    async def ask_async(self, command: str) -> dict[str, Any]:
        """:meth:`ask` off the event loop, so the agent keeps running meanwhile."""
        return await asyncio.to_thread(self.ask, command)

    def cpu_secs(self) -> float:
        """utime + stime of the child from /proc/<pid>/stat."""
        with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rpartition(")")[2].split()
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
                    self.proc.stdin.close()  # EOF: the child closes its ptys and exits
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

    def __enter__(self) -> SimChild:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- configs and the agent -------------------------------------------------------------------


def write_config(directory: Path, devices: str) -> Path:
    from gxpgate.agent.evidence import generate_key_file

    directory.mkdir(parents=True, exist_ok=True)
    key_file = directory / "signing.key"
    if not key_file.exists():
        generate_key_file(key_file)
    text = f"""
[gateway]
id = "{GW}"
site = "Serial benchmark"

[signing]
key_file = "{key_file}"

[buffer]
path = "{directory / "buffer.db"}"

[zones.{ZONE}]
profile = "refrigerated"
{devices}"""
    path = directory / "gxpgate.toml"
    path.write_text(text, encoding="utf-8")
    return path


def rtu_devices(path: str, slaves: int, baud: int, poll: float, reconnect_max: float) -> str:
    text = f'\n[buses.{BUS}]\nport = "{path}"\nbaudrate = {baud}\nparity = "none"\n'
    for unit in range(1, slaves + 1):
        text += f"""
[devices.rtu-{unit:02d}]
type = "modbus_rtu"
bus = "{BUS}"
unit_id = {unit}
zone = "{ZONE}"
poll_interval_secs = {poll}
timeout_ms = {RTU_TIMEOUT_MS}
reconnect_max_secs = {reconnect_max}
{RTU_POINTS}"""
    return text


def logger_device(path: str, chunk: int, poll: float) -> str:
    return f"""
[devices.{LOGGER}]
type = "serial_logger"
serial = {{ port = "{path}", baudrate = {REAL_LOGGER_BAUD} }}
zone = "{ZONE}"
poll_interval_secs = {poll}
timeout_ms = 1000
reconnect_max_secs = 1
backfill_chunk_records = {chunk}
points.temperature = {{ unit = "Cel" }}
points.humidity = {{ unit = "%" }}
"""


def running_agent(config: Path, *hooks: Any) -> Running:
    """:class:`tests.running.Running`, with ``hooks(agent)`` called as the agent becomes ready
    (before any device is polled), so no commit can be missed by a listener."""
    from tests.running import Running

    running = Running(config)

    def on_ready(agent: Agent) -> None:
        for hook in hooks:
            hook(agent)
        running.ready.set()

    running.agent.on_ready = on_ready
    return running


async def watch(running: Running, secs: float) -> None:
    """Sleep ``secs``, failing at once if the agent task ends meanwhile."""
    task = running.task
    assert task is not None
    done, _ = await asyncio.wait({task}, timeout=max(secs, 0.0))
    if done:
        if task.cancelled():
            raise BenchError("the agent task was cancelled")
        exc = task.exception()
        raise BenchError(f"the agent stopped early: {exc!r}") from exc


async def wait_event(running: Running, event: asyncio.Event, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not event.is_set():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {within:.0f} s waiting for {what}")
        await watch(running, 0.01)


# -- section 1: Modbus RTU -------------------------------------------------------------------


@dataclass(frozen=True)
class LineBudget:
    """Time on a Modbus RTU line for one poll of one slave (its whole request plan)."""

    requests: int
    points: int
    registers: int
    bytes: int
    """Request and response bytes on the wire."""
    wire_secs: float
    silence_secs: float
    """One 3.5-character inter-frame silence (the bus's ``inter_frame_delay_secs``)."""

    @property
    def spec_secs(self) -> float:
        """Wire time plus two silences per request: the Modbus serial-line minimum."""
        return self.wire_secs + 2 * self.requests * self.silence_secs

    @property
    def driver_secs(self) -> float:
        """Wire time plus one silence per request: the driver keeps a silence after each
        answer, and the simulator answers without waiting 3.5 characters first."""
        return self.wire_secs + self.requests * self.silence_secs


def response_bytes(request: ReadRequest) -> int:
    """addr + fc + byte count + data + CRC."""
    if request.table in ("coil", "discrete"):
        return 5 + math.ceil(request.count / 8)
    return 5 + 2 * request.count


def line_budget(plan: Sequence[ReadRequest], bus: ModbusRtuBus) -> LineBudget:
    char_secs = bus.bits_per_char / bus.baudrate
    wire = sum(READ_REQUEST_BYTES + response_bytes(r) for r in plan)
    return LineBudget(
        requests=len(plan),
        points=sum(len(r.points) for r in plan),
        registers=sum(r.count for r in plan if r.table in ("holding", "input")),
        bytes=wire,
        wire_secs=wire * char_secs,
        silence_secs=bus.inter_frame_delay_secs,
    )


@dataclass
class RtuProbe:
    """A Recorder listener: committed readings per device whose acquisition fell in the window."""

    start: float = math.inf
    end: float = math.inf
    good: Counter[str] = field(default_factory=Counter)
    bad: Counter[str] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(device, error) of the bad readings in the window."""

    def on_commit(self, facts: Sequence[Any]) -> None:
        for fact in facts:
            if fact.kind != "reading" or fact.device is None:
                continue
            if self.start <= fact.at_secs < self.end:
                if fact.quality == "good":
                    self.good[fact.device] += 1
                else:
                    self.bad[fact.device] += 1
                    self.errors[fact.device, str(fact.data.get("error"))] += 1


@dataclass
class RtuResult:
    secs: float
    requests: int
    sim: dict[str, float]
    probe: RtuProbe
    overruns: int
    cpu_secs: float
    budget: LineBudget
    plan_lines: list[str]
    load: tuple[float, float]


async def rtu_pass(
    args: argparse.Namespace, directory: Path, sim: SimChild, reconnect_max: float
) -> RtuResult:
    from gxpgate.config import load_config
    from gxpgate.drivers.modbus_rtu import ModbusRtuSource
    from tests.running import observe

    devices = rtu_devices(sim.hello["path"], args.slaves, args.baud, args.poll, reconnect_max)
    config = write_config(directory, devices)
    loaded = load_config(config)
    first = loaded.config.devices["rtu-01"]
    plan = first.plan()  # type: ignore[union-attr]
    budget = line_budget(plan, loaded.config.buses[BUS])
    probe = RtuProbe()

    def hook(agent: Agent) -> None:
        observe(agent, probe.on_commit)

    running = running_agent(config, hook)
    async with running as agent:
        sources = [p.source for p in agent.pollers if isinstance(p.source, ModbusRtuSource)]
        if len(sources) != args.slaves:
            raise BenchError(f"{len(sources)} RTU sources, expected {args.slaves}")
        bus: RtuBus = sources[0].bus
        plan_lines = sources[0].describe()
        await watch(running, args.warmup)
        sim0 = await sim.ask_async("stats")
        requests0, overruns0, cpu0 = bus.requests, overruns(agent), cpu_self_secs()
        meter = LoadMeter(sim)
        probe.start = time.time()
        t0 = time.perf_counter()
        await watch(running, args.window)
        secs = time.perf_counter() - t0
        requests1, overruns1, cpu1 = bus.requests, overruns(agent), cpu_self_secs()
        load = meter.stop()
        probe_end = probe.start + secs
        probe.end = probe_end
        sim1 = await sim.ask_async("stats")
        # the window's last readings: committed within one commit interval
        await watch(running, loaded.config.buffer.commit_interval_ms / 1000 + 0.5)
    return RtuResult(
        secs=secs,
        requests=requests1 - requests0,
        sim={k: sim1[k] - sim0[k] for k in sim0},
        probe=probe,
        overruns=overruns1 - overruns0,
        cpu_secs=cpu1 - cpu0,
        budget=budget,
        plan_lines=plan_lines,
        load=load,
    )


def overruns(agent: Agent) -> int:
    return sum(getattr(p, "overruns", 0) for p in agent.pollers)


def section_rtu(args: argparse.Namespace, rep: Report, tmp: Path) -> None:
    slaves, baud = args.slaves, args.baud
    rep.section(f"1. Modbus RTU: {slaves} slaves at {baud} baud 8N1, paced, bus saturated")
    note(f"starting the RTU line child: {slaves} slaves at {baud} baud")
    sim_args = ["--child-rtu-sim", "--slaves", str(slaves), "--baud", str(baud)]
    with SimChild(sim_args, tmp / "rtu-sim.stderr") as sim:
        note(f"pass 1: {slaves} healthy slaves, {args.warmup} s warm-up + {args.window} s window")
        healthy = asyncio.run(rtu_pass(args, tmp / "rtu-healthy", sim, args.silent_reconnect_max))
        report_rtu_healthy(args, rep, healthy)
        silent_unit = slaves
        sim.ask(f"fault {silent_unit} no_answer")
        note(f"pass 2: slave {silent_unit} silent (no_answer), the other {slaves - 1} polled")
        silent = asyncio.run(rtu_pass(args, tmp / "rtu-silent", sim, args.silent_reconnect_max))
        sim.ask(f"fault {silent_unit} none")
        report_rtu_silent(args, rep, healthy, silent, silent_unit)


def report_rtu_healthy(args: argparse.Namespace, rep: Report, result: RtuResult) -> None:
    b, secs, probe = result.budget, result.secs, result.probe
    char_secs = BITS_PER_CHAR / args.baud
    for line in result.plan_lines:
        rep.text(f"plan: {line}")
    rep.text(
        f"per slave: {b.points} points, {b.registers} registers, {b.requests} requests per poll, "
        f"{b.bytes} bytes on the wire ({b.wire_secs * 1e3:.2f} ms) + "
        f"{2 * b.requests} x {b.silence_secs * 1e3:.3f} ms silences = {b.spec_secs * 1e3:.2f} ms"
    )
    rep.text(f"window {secs:.1f} s, poll interval {args.poll} s per slave (bus saturated)")
    good = sum(probe.good.values())
    bad = sum(probe.bad.values())
    theory_pps = b.points / b.spec_secs
    rep.add("rtu_requests_per_slave", "requests per slave per poll (the plan)", b.requests, "")
    pps = rate(good, secs)
    rep.add("rtu_points_per_s", f"good points committed, {args.slaves} slaves", pps, "points/s")
    rep.add("rtu_theory_points_per_s", "    theoretical line rate (wire + 2 x 3.5 char)",
            theory_pps, "points/s")  # fmt: skip
    rep.add("rtu_ratio", "    measured / theoretical", pps / theory_pps, "")
    rep.add("rtu_driver_bound_points_per_s", "    bound with the driver's one silence/request",
            b.points / b.driver_secs, "points/s")  # fmt: skip
    rep.add("rtu_ratio_driver_bound", "    measured / that bound",
            pps / (b.points / b.driver_secs), "")  # fmt: skip
    rqs = rate(result.requests, secs)
    rep.add("rtu_requests_per_s", "requests (RtuBus.requests)", rqs, "requests/s")
    rep.add("rtu_theory_requests_per_s", "    theoretical", b.requests / b.spec_secs,
            "requests/s")  # fmt: skip
    rep.add("rtu_registers_per_s", "registers read (10 per slave poll)",
            rqs * b.registers / b.requests, "registers/s")  # fmt: skip
    per_request_ms = secs / result.requests * 1e3 if result.requests else math.nan
    theory_request_ms = b.spec_secs / b.requests * 1e3
    rep.add("rtu_ms_per_request", "bus time per request, measured", per_request_ms, "ms")
    rep.add("rtu_theory_ms_per_request", "    theoretical (mean over the plan)",
            theory_request_ms, "ms")  # fmt: skip
    rep.add("rtu_overhead_ms_per_request", "    beyond wire time + the driver's one silence",
            per_request_ms - b.driver_secs / b.requests * 1e3, "ms")  # fmt: skip
    t = result.sim
    rep.add("rtu_slave_turnaround_ms", "    of which the simulated slave's turnaround (mean)",
            rate(t["turnaround"], t["responses"]) * 1e3, "ms")  # fmt: skip
    rep.add("rtu_line_idle_ms", "    line idle, response -> next request (mean; silence "
            f"{b.silence_secs * 1e3:.2f})", rate(t["idle"], t["cycles"]) * 1e3, "ms")  # fmt: skip
    wire_bytes = result.sim["to_device"] + result.sim["to_gateway"]
    rep.add("rtu_line_busy_pct", "line occupancy (bytes delivered x char time / window)",
            wire_bytes * char_secs / secs * 100, "%")  # fmt: skip
    served = result.sim["served"]
    rep.add("rtu_bytes_per_request", "    bytes per request on the line (simulator count)",
            wire_bytes / served if served else math.nan, "bytes")  # fmt: skip
    per_slave = [rate(probe.good[f"rtu-{u:02d}"], secs) for u in range(1, args.slaves + 1)]
    rep.add("rtu_slave_min_points_per_s", "per slave: lowest points/s", min(per_slave),
            "points/s")  # fmt: skip
    rep.add("rtu_slave_max_points_per_s", "per slave: highest points/s", max(per_slave),
            "points/s")  # fmt: skip
    rep.add("rtu_bad_points", "bad points in the window", float(bad), "")
    show_errors(rep, probe)
    rep.add("rtu_overruns_per_s", "poll slots skipped (overruns, all slaves)",
            rate(result.overruns, secs), "/s")  # fmt: skip
    rep.add("rtu_agent_cpu_pct", "agent process CPU (% of one core)",
            result.cpu_secs / secs * 100, "%")  # fmt: skip
    report_load(rep, "rtu_", result.load)


def report_rtu_silent(
    args: argparse.Namespace, rep: Report, healthy: RtuResult, result: RtuResult, unit: int
) -> None:
    b, secs, probe = result.budget, result.secs, result.probe
    silent_device = f"rtu-{unit:02d}"
    others = [f"rtu-{u:02d}" for u in range(1, args.slaves + 1) if u != unit]
    rep.text("")
    rep.text(
        f"slave {unit} silent (no_answer), timeout_ms {RTU_TIMEOUT_MS}, reconnect_max_secs "
        f"{args.silent_reconnect_max}; window {secs:.1f} s"
    )
    good = sum(probe.good[d] for d in others)
    pps = rate(good, secs)
    healthy_pps = rate(sum(healthy.probe.good.values()), healthy.secs)
    rep.add("rtu_silent_nine_points_per_s", f"good points committed, the other {len(others)}",
            pps, "points/s")  # fmt: skip
    rep.add("rtu_silent_vs_healthy", "    / all slaves' rate with none silent", pps / healthy_pps,
            "")  # fmt: skip
    attempts = probe.bad[silent_device] / b.points  # every attempt: a bad sample per point
    rep.add("rtu_silent_attempts_per_s", f"attempts on the silent slave {unit}",
            rate(attempts, secs), "/s")  # fmt: skip
    char_secs = BITS_PER_CHAR / args.baud
    lost = attempts * (READ_REQUEST_BYTES * char_secs + RTU_TIMEOUT_MS / 1000 + b.silence_secs)
    rep.add("rtu_silent_bus_lost_pct", "    bus time those attempts take (request + timeout)",
            lost / secs * 100, "%")  # fmt: skip
    theory = b.points / b.spec_secs * max(0.0, 1 - lost / secs)
    rep.add("rtu_silent_theory_points_per_s", "    theoretical for the others, given that",
            theory, "points/s")  # fmt: skip
    rep.add("rtu_silent_ratio", "    measured / theoretical", pps / theory if theory else math.nan,
            "")  # fmt: skip
    per_slave = [rate(probe.good[d], secs) for d in others]
    rep.add("rtu_silent_slave_min_points_per_s", "per other slave: lowest points/s",
            min(per_slave), "points/s")  # fmt: skip
    rep.add("rtu_silent_bad_others", "bad points of the other slaves",
            float(sum(probe.bad[d] for d in others)), "")  # fmt: skip
    show_errors(rep, probe, exclude=silent_device)
    report_load(rep, "rtu_silent_", result.load)


def show_errors(rep: Report, probe: RtuProbe, exclude: str = "") -> None:
    errors = [(k, n) for k, n in probe.errors.most_common() if k[0] != exclude]
    for (device, error), n in errors[:5]:
        rep.text(f"    {device}: {n} bad point(s): {error}")


# -- section 2: logger back-fill -------------------------------------------------------------


@dataclass
class BackfillProbe:
    """A Recorder listener: back-filled readings committed, per record index."""

    records: int
    per_record: bytearray = field(init=False)
    readings: int = 0
    good: int = 0
    first_commit: float = math.nan
    first_group_readings: int = 0
    """Back-filled readings in the first group that held any (read before ``first_commit``)."""
    commits: int = 0
    """Commit groups from the first back-filled reading on."""
    committed_facts: int = 0
    events: Counter[str] = field(default_factory=Counter)
    """Audit events committed (backfill_started, backfill_answer_rejected, device_offline...)."""

    def __post_init__(self) -> None:
        self.per_record = bytearray(self.records + 1)

    def on_commit(self, facts: Sequence[Any]) -> None:
        if not math.isnan(self.first_commit) or any(f.data.get("backfill") for f in facts):
            self.commits += 1
            self.committed_facts += len(facts)
        first = math.isnan(self.first_commit)
        for fact in facts:
            if fact.kind == "audit":
                self.events[str(fact.data.get("event"))] += 1
            if fact.kind != "reading" or not fact.data.get("backfill"):
                continue
            if math.isnan(self.first_commit):
                self.first_commit = time.perf_counter()
            self.readings += 1
            self.first_group_readings += first
            self.good += fact.quality == "good"
            index = fact.data.get("record")
            if isinstance(index, int) and 0 < index <= self.records:
                self.per_record[index] = min(255, self.per_record[index] + 1)


@dataclass
class Sampler:
    """The recorder's queue depth and this process's RSS, every ``period`` seconds."""

    samples: list[tuple[int, float]] = field(default_factory=list)

    async def run(self, agent: Agent, period: float = 0.05) -> None:
        while True:
            if agent.recorder is not None:
                self.samples.append((agent.recorder.queued, proc_status()["VmRSS"]))
            await asyncio.sleep(period)

    @property
    def queue_peak(self) -> int:
        return max((q for q, _ in self.samples), default=0)

    @property
    def queue_mean(self) -> float:
        return sum(q for q, _ in self.samples) / len(self.samples) if self.samples else math.nan

    @property
    def rss_peak(self) -> float:
        return max((r for _, r in self.samples), default=math.nan)


@dataclass
class BackfillResult:
    chunk: int
    secs: float
    to_first_secs: float
    probe: BackfillProbe
    cpu_secs: float
    sim_cpu_secs: float
    caught_up: int
    rss: dict[str, float]
    sim_catch_up_secs: float
    line: dict[str, Any]
    sampler: Sampler
    queue_size: int
    max_batch: int
    load: tuple[float, float]
    enrolled_rss: dict[str, float]
    loop_cpu_secs: float
    worker_cpu_secs: float
    enrolled_state: str


async def backfill_pass(
    args: argparse.Namespace, directory: Path, sim: SimChild, chunk: int
) -> BackfillResult:
    from gxpgate.agent.devices.supervisor import DevicePoller
    from tests.running import observe, watch_event

    n = args.records
    config = write_config(directory, logger_device(sim.hello["path"], chunk, args.logger_poll))
    enrolled: dict[str, asyncio.Event] = {}
    running = running_agent(
        config, lambda agent: enrolled.setdefault("e", watch_event(agent, "logger_enrolled"))
    )
    async with running:  # enrolment: first contact with an empty logger
        await wait_event(running, enrolled["e"], 20, "logger_enrolled")
        enrolled_rss = proc_status()
    enrolled_state = resume_state(config)
    advanced = sim.ask(f"advance {n * LOGGER_INTERVAL_SECS}", timeout=300)
    if (advanced["first"], advanced["last"]) != (1, n):
        raise BenchError(f"the logger holds {advanced['first']}..{advanced['last']}, not 1..{n}")
    line = sim.ask(f"reclen {chunk}", timeout=120)

    probe = BackfillProbe(n)
    events: dict[str, asyncio.Event] = {}

    def hook(agent: Agent) -> None:
        observe(agent, probe.on_commit)
        events["done"] = watch_event(agent, "backfill_completed")

    sampler = Sampler()
    meter = LoadMeter(sim)
    sim_cpu0, cpu0, threads0 = sim.cpu_secs(), cpu_self_secs(), thread_cpu_secs()
    t0 = time.perf_counter()
    running = running_agent(config, hook)
    async with running as agent:
        sampling = asyncio.create_task(sampler.run(agent))
        try:
            await wait_event(running, events["done"], args.backfill_limit, "backfill_completed")
        finally:
            sampling.cancel()
        secs = time.perf_counter() - t0
        cpu_secs, sim_cpu = cpu_self_secs() - cpu0, sim.cpu_secs() - sim_cpu0
        load = meter.stop()
        threads1 = thread_cpu_secs()
        poller = next(p for p in agent.pollers if p.device == LOGGER)
        caught_up = poller.caught_up if isinstance(poller, DevicePoller) else -1
        rss = proc_status()
        assert agent.recorder is not None
        queue_size, max_batch = agent.recorder._queue.maxsize, agent.recorder.max_batch
    return BackfillResult(
        chunk=chunk,
        secs=secs,
        to_first_secs=probe.first_commit - t0,
        probe=probe,
        cpu_secs=cpu_secs,
        sim_cpu_secs=sim_cpu,
        caught_up=caught_up,
        rss=rss,
        sim_catch_up_secs=advanced["secs"],
        line=line,
        sampler=sampler,
        queue_size=queue_size,
        max_batch=max_batch,
        load=load,
        enrolled_rss=enrolled_rss,
        loop_cpu_secs=threads1[0] - threads0[0],
        worker_cpu_secs=threads1[1] - threads0[1],
        enrolled_state=enrolled_state,
    )


def resume_state(config: Path) -> str:
    """The logger's resume state as committed in the buffer (JSON)."""
    from gxpgate.agent.devices.supervisor import cursor_prefix
    from gxpgate.buffer import Outbox
    from gxpgate.config import load_config

    outbox = Outbox(load_config(config).config.buffer.path, GW)
    try:
        return outbox.states(cursor_prefix(LOGGER)).get(cursor_prefix(LOGGER) + "logger", "?")
    finally:
        outbox.close()


def section_backfill(args: argparse.Namespace, rep: Report, tmp: Path) -> None:
    n = args.records
    rep.section(f"2. Logger back-fill: {n:,} stored records (2 points each) into the buffer")
    rep.text(
        f"GXL/1 logger, a record every {LOGGER_INTERVAL_SECS} s, memory {n:,} records, enrolled "
        f"empty; then {n:,} records taken; poll interval {args.logger_poll} s"
    )
    rep.text("the logger's pty is NOT paced: these are the gateway's rates, not a real line's")
    rep.text(f"before the back-fill: this process {fmt_rss(proc_status())}")
    results: list[BackfillResult] = []
    for chunk in args.chunks:
        note(f"back-fill of {n:,} records, backfill_chunk_records = {chunk}")
        sim_args = ["--child-logger-sim", "--records", str(n)]
        try:
            with SimChild(sim_args, tmp / f"logger-{chunk}.stderr") as sim:
                result = asyncio.run(backfill_pass(args, tmp / f"logger-{chunk}", sim, chunk))
        except Exception as exc:
            rep.error(f"back-fill chunk {chunk}", exc)
            continue
        results.append(result)
        report_backfill(rep, n, result)
    if results:
        report_line_bound(rep, results[0])
    end = proc_status()
    rep.text("")
    rep.add("rss_end_mb", "this process at the end: VmRSS", end["VmRSS"], "MB")
    rep.add("rss_peak_mb", "    peak (VmHWM; the RTU passes ran in this process too)",
            end["VmHWM"], "MB")  # fmt: skip


def report_backfill(rep: Report, n: int, r: BackfillResult) -> None:
    probe, k = r.probe, f"backfill_c{r.chunk}_"
    rep.text("")
    rep.text(
        f"backfill_chunk_records = {r.chunk}: {r.secs:.2f} s from agent start to "
        f"backfill_completed committed (the logger computed its records in "
        f"{r.sim_catch_up_secs:.1f} s beforehand, untimed)"
    )
    rep.text(f"resume state after the enrolment run: {r.enrolled_state}")
    complete = sum(1 for c in probe.per_record[1:] if c == LOGGER_POINTS)
    extra = sum(1 for c in probe.per_record[1:] if c > LOGGER_POINTS)
    rep.add(k + "records_per_s", f"chunk {r.chunk}: records into the buffer", rate(n, r.secs),
            "records/s")  # fmt: skip
    rep.add(k + "readings_per_s", f"    readings ({LOGGER_POINTS} per record) committed",
            rate(probe.readings, r.secs), "readings/s")  # fmt: skip
    rep.add(k + "secs", "    agent start -> backfill_completed committed", r.secs, "s")
    rep.add(k + "to_first_secs", "    agent start -> first back-filled reading committed",
            r.to_first_secs, "s")  # fmt: skip
    steady = r.secs - r.to_first_secs
    rep.add(k + "steady_readings_per_s", "    readings/s after the first group's commit",
            rate(probe.readings - probe.first_group_readings, steady),
            "readings/s")  # fmt: skip
    rep.add(k + "records_complete", "    records with both readings committed", float(complete),
            "records")  # fmt: skip
    rep.add(k + "records_duplicated", "    records committed more than once", float(extra),
            "records")  # fmt: skip
    rep.add(k + "bad", "    readings not good", float(probe.readings - probe.good), "")
    events = ", ".join(f"{name} x{n}" for name, n in sorted(probe.events.items()))
    rep.text(f"    audit events committed in this run: {events or 'none'}")
    rep.add(k + "agent_cpu_pct", "    agent process CPU (user+sys, % of one core)",
            r.cpu_secs / r.secs * 100, "%")  # fmt: skip
    rep.add(k + "sim_cpu_pct", "    logger simulator process CPU (for context)",
            r.sim_cpu_secs / r.secs * 100, "%")  # fmt: skip
    rep.add(k + "agent_us_per_reading", "    agent CPU per back-filled reading",
            r.cpu_secs / probe.readings * 1e6 if probe.readings else math.nan, "us")  # fmt: skip
    per = probe.readings or 1
    rep.add(k + "loop_us_per_reading", "        event-loop thread (driver, parsing, facts)",
            r.loop_cpu_secs / per * 1e6, "us")  # fmt: skip
    rep.add(k + "worker_us_per_reading", "        worker threads (recorder: seal + commit)",
            r.worker_cpu_secs / per * 1e6, "us")  # fmt: skip
    rep.add(k + "commit_groups", "    commit groups (recorder)", float(probe.commits), "")
    rep.add(k + "group_size", f"    mean facts per group (max_batch {r.max_batch})",
            rate(probe.committed_facts, probe.commits), "facts")  # fmt: skip
    rep.add(k + "queue_peak", f"    recorder queue peak (of {r.queue_size:,})",
            float(r.sampler.queue_peak), "facts")  # fmt: skip
    rep.add(k + "queue_mean", "    recorder queue mean (sampled every 50 ms)",
            r.sampler.queue_mean, "facts")  # fmt: skip
    rep.add(k + "rss_enrolled_mb", "    this process's VmRSS, agent running, before the back-fill",
            r.enrolled_rss["VmRSS"], "MB")  # fmt: skip
    rep.add(k + "rss_mb", "    this process's VmRSS at backfill_completed", r.rss["VmRSS"], "MB")
    rep.add(k + "rss_peak_mb", "    this process's VmRSS, highest sample during it",
            r.sampler.rss_peak, "MB")  # fmt: skip
    report_load(rep, k, r.load)
    if complete != n or extra:
        rep.error(
            f"back-fill chunk {r.chunk}",
            BenchError(f"{complete:,} of {n:,} records complete, {extra:,} duplicated"),
        )


def report_line_bound(rep: Report, r: BackfillResult) -> None:
    line, n_records = r.line, r.probe.records
    rec = line["rec_bytes"]
    rep.text("")
    rep.text(
        f"a real logger's line: REC lines average {rec:.1f} bytes ({line['sampled']:,} sampled), "
        f"READ request {line['request_bytes']} bytes, END line {line['end_bytes']} bytes; 8N1"
    )
    for baud in (REAL_LOGGER_BAUD, SLOW_LOGGER_BAUD):
        for chunk in (100, 1000):
            # per record: its REC line, and its share of the request and the END line
            per_record = rec + (line["request_bytes"] + line["end_bytes"]) / chunk
            bound = baud / BITS_PER_CHAR / per_record
            rep.add(f"line_bound_{baud}_c{chunk}_records_per_s",
                    f"line-rate bound at {baud:,} baud, chunk {chunk}", bound,
                    "records/s")  # fmt: skip
            rep.add(f"line_read_{baud}_c{chunk}_secs", f"    one READ of {chunk} records on "
                    "that line", chunk * per_record * BITS_PER_CHAR / baud, "s")  # fmt: skip
        rep.add(f"line_all_{baud}_min", f"    all {n_records:,} records at {baud:,} baud, "
                "chunk 1000", n_records / bound / 60, "min")  # fmt: skip


def fmt_rss(status: dict[str, float]) -> str:
    return f"VmRSS {status['VmRSS']:.1f} MB, VmHWM {status['VmHWM']:.1f} MB"


# -- the run ---------------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "pymodbus": package_version("pymodbus"),
        "pyserial": package_version("pyserial"),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python tests/benchmarks/bench_serial.py",
        description="Benchmark gxpgate's serial drivers: Modbus RTU points/s against the line "
        "rate, and a data logger's back-fill into the buffer.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short run (under a minute): --window 5 --warmup 1.5 --records 10000 "
        "(explicit options still win)",
    )
    parser.add_argument("--window", type=float, default=None,
                        help="RTU measurement window per pass, seconds (default 20)")  # fmt: skip
    parser.add_argument("--warmup", type=float, default=None,
                        help="RTU seconds ignored before each window (default 3)")  # fmt: skip
    parser.add_argument("--records", type=int, default=None,
                        help="stored logger records to back-fill (default 100000)")  # fmt: skip
    parser.add_argument("--slaves", type=int, default=10, help="RTU slaves (default 10)")
    parser.add_argument("--baud", type=int, default=19200, help="RTU line rate (default 19200)")
    parser.add_argument("--poll", type=float, default=0.05,
                        help="RTU poll interval per slave (default 0.05 s: saturates)")  # fmt: skip
    parser.add_argument(
        "--silent-reconnect-max",
        type=float,
        default=1.0,
        help="reconnect_max_secs in the silent-slave pass: the cap of the silent slave's "
        "retry backoff (default 1; the config default is 60)",
    )
    parser.add_argument(
        "--chunks",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[100, 1000],
        help="backfill_chunk_records values, comma-separated (default 100,1000)",
    )
    parser.add_argument("--logger-poll", type=float, default=60.0,
                        help="the logger's poll_interval_secs (default 60)")  # fmt: skip
    parser.add_argument("--backfill-limit", type=float, default=900.0,
                        help="give up a back-fill after this many seconds")  # fmt: skip
    parser.add_argument("--skip-rtu", action="store_true", help="only the back-fill")
    parser.add_argument("--skip-backfill", action="store_true", help="only the RTU passes")
    parser.add_argument("--child-rtu-sim", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-logger-sim", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = {"window": 5.0, "warmup": 1.5, "records": 10_000}
    full = {"window": 20.0, "warmup": 3.0, "records": 100_000}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.window <= 0 or args.warmup < 0 or args.records < 1:
        parser.error("--window and --records must be positive, --warmup not negative")
    if not 2 <= args.slaves <= 247:
        parser.error("--slaves must be 2 to 247 (one of them goes silent in pass 2)")
    if not all(1 <= c <= 1000 for c in args.chunks):
        parser.error("backfill_chunk_records must be 1 to 1000")
    if args.poll <= 0 or args.logger_poll <= 0 or args.silent_reconnect_max <= 0:
        parser.error("poll intervals and --silent-reconnect-max must be positive")
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child_rtu_sim:
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(child_rtu_main(args.slaves, args.baud))
        return 0
    if args.child_logger_sim:
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(child_logger_main(args.records))
        return 0
    quiet_logs()
    # SIGTERM (and SIGHUP) unwind like Ctrl-C, so the simulator children and temp dirs go.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    started = time.perf_counter()
    rep = Report("gxpgate.serial")
    machine = machine_facts()
    params: dict[str, Any] = {
        "slaves": args.slaves,
        "baud": args.baud,
        "framing": "8N1",
        "rtu_poll_secs": args.poll,
        "rtu_timeout_ms": RTU_TIMEOUT_MS,
        "window_secs": args.window,
        "warmup_secs": args.warmup,
        "silent_reconnect_max_secs": args.silent_reconnect_max,
        "records": args.records,
        "chunks": args.chunks,
        "logger_poll_secs": args.logger_poll,
        "logger_line": "pty, unpaced",
    }
    print("gxpgate serial benchmark", flush=True)
    for name, value in {**machine, **params}.items():
        print(f"  {name:<26} {value}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gxpgate-bench-serial-") as tmp_name:
        tmp = Path(tmp_name)
        sections = [("rtu", section_rtu, args.skip_rtu),
                    ("backfill", section_backfill, args.skip_backfill)]  # fmt: skip
        for name, section, skip in sections:
            if skip:
                continue
            try:
                section(args, rep, tmp)
            except Exception as exc:
                rep.error(name, exc)
    wall = time.perf_counter() - started
    rep.summary()
    print(f"\n  wall time {wall:.1f} s", flush=True)
    print(rep.as_json(machine, wall, params), flush=True)
    return 1 if rep.errors else 0


if __name__ == "__main__":
    sys.exit(main())
