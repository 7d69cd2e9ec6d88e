"""``gxpgate demo``: the bundled simulators, the quality-service simulator and the agent, live.

It is the product running for real on loopback: real Modbus TCP, OPC UA, a serial data logger
and a barcode scanner on pseudo-terminals, fixed-mount scanners over TCP, real HTTP, the real
buffer and signatures. A script plays pallets received at the dock door and their cases put
away into a cold room — one case first into a room-temperature zone by mistake (a ``wrong_zone``
exception until it is moved), and one lot's cases left waiting at the dock until the time out
of storage they use there raises a ``tos_warning`` — a temperature excursion, a network outage,
a sensor that stops answering and a logger cable pulled (its memory is read back when it is
plugged in again); the live view shows what is read, sealed, buffered and delivered and tells
the custody exceptions as they are sealed; the summary says where the lots are, how much of
their allowance they have used, and ends with the verification of what the quality service
holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import signal
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from gxpgate.agent.alarms.service import control_socket_path
from gxpgate.agent.custody.lots import LotRegister, LotRegisterError, lot_id, lots_path_for
from gxpgate.agent.custody.report import lot_history
from gxpgate.agent.devices.scanners import CustodyStreamer
from gxpgate.agent.evidence import (
    Verdict,
    generate_key_file,
    load_private_key,
    public_key_pem,
    verify_lines,
)
from gxpgate.agent.recording.audit import AGENT_STARTED, AGENT_STOPPED
from gxpgate.agent.recording.sealing import Committed
from gxpgate.agent.service.control import request as control_request
from gxpgate.agent.service.logging_setup import quiet_libraries
from gxpgate.agent.service.runtime import Agent, AgentStartError
from gxpgate.buffer import Outbox, OutboxError
from gxpgate.config import LoadedConfig, load_config
from gxpgate.config.policy_files import load_policy
from gxpgate.config.products import PolicyError
from gxpgate.simulators.logger_sim import LoggerSimulator
from gxpgate.simulators.modbus_sim import ModbusSimulator
from gxpgate.simulators.opcua_sim import OpcUaSimulator, ZoneSpec
from gxpgate.simulators.quality_service import QualityServiceSimulator
from gxpgate.simulators.scanner_sim import DOCK_RECEIVING, PUT_AWAY, BarcodeScannerSimulator, Scan

__all__ = ["run_demo"]

log = logging.getLogger(__name__)

Echo = Callable[[str], None]

ZONES = (("cold-room-1", 1, "refrigerated"), ("cold-room-2", 2, "refrigerated"),
         ("ambient-a", 3, "controlled-room"))  # fmt: skip
OPCUA_ZONE = ("freezer-1", "frozen")
LOGGER_ZONE = "cold-room-1"
LOGGER_INTERVAL_SECS = 2
ALL_ZONES = (*((zone, profile) for zone, _unit, profile in ZONES), OPCUA_ZONE)
DOCK_ZONE = ("dock-1", "unclassified")
BEACON_COIL = 0
PUT_AWAY_ZONE = "cold-room-2"
ROOM_ZONE = "ambient-a"
"""Room temperature (controlled-room, 15–30 °C): where a 2–8 °C case is put away by mistake."""
CUSTODY_KINDS = ("wrong_zone", "expired", "expiring", "on_hold", "not_received")
TOS_KINDS = ("tos_warning", "tos_exhausted")


@dataclass(frozen=True)
class _Product:
    """A product of the scanner scripts (simulators/scanner_sim.py) and its one lot there."""

    gtin: str
    lot_number: str
    name: str
    allowance_units: float
    """Its time-out-of-storage allowance, in units of :meth:`_Plan.allowance_unit_secs`."""
    flags: tuple[str, ...] = ()

    @property
    def lot(self) -> str:
        return lot_id(self.gtin, self.lot_number)

    def cases(self) -> list[Scan]:
        return [s for s in PUT_AWAY if f"(01){self.gtin}" in (s.hri or "")]


VACCINE_A = _Product("10614141000019", "LOT-A1", "Vaccine A", 1.0, ("do_not_freeze",))
"""Its three cases wait at the dock until they have used 80 % of the allowance."""
INSULIN_B = _Product("10614141000026", "LOT-B7", "Insulin B", 4.0)
"""One of its two cases is put away into :data:`ROOM_ZONE` first."""
PRODUCTS = (VACCINE_A, INSULIN_B)


@dataclass(frozen=True)
class _Plan:
    """The script's 60-second timeline, scaled down to a shorter ``--seconds``."""

    seconds: float | None

    @property
    def scale(self) -> float:
        return min(1.0, (self.seconds or 60.0) / 60.0)

    @property
    def allowance_unit_secs(self) -> float:
        # Vaccine A's allowance: its cases reach the warning (80 %) at the dock before the
        # cold-room excursion starts (12 s into the timeline). Never below 8 s: the lot feed
        # checks the allowance once a second, and the 20 % left must cover that and the put-away,
        # so that the dock alone does not use it all.
        return max(8.0, 10.0 * self.scale)

    def allowance_secs(self, product: _Product) -> float:
        return product.allowance_units * self.allowance_unit_secs

    def deadline(self, started: float) -> float:
        """Monotonic time by which a scripted wait gives up, so the acts end within the run."""
        return started + (max(0.5, self.seconds - 1.0) if self.seconds else 3600.0)


def _seconds(plan: _Plan, product: _Product) -> str:
    return f"{plan.allowance_secs(product):g} s"


def demo_config(
    modbus_port: int,
    opcua: OpcUaSimulator,
    logger_path: str,
    scanners: _Scanners,
    uplink_url: str,
    metrics_port: int,
    plan: _Plan,
) -> str:
    """The demo's site config: the example's shape, pointed at the simulators."""
    zones = "".join(
        f'[zones.{zone}]\nprofile = "{profile}"\n\n' for zone, profile in (*ALL_ZONES, DOCK_ZONE)
    )
    dock, door, room_door = scanners.dock, scanners.cold_door, scanners.room_door
    products = "".join(
        f"""[[products.items]]
gtin = "{product.gtin}"
profile = "refrigerated"
name = "{product.name}"
tos_allowance_hours = {plan.allowance_secs(product) / 3600:.8f}  # {_seconds(plan, product)}
flags = [{", ".join(f'"{flag}"' for flag in product.flags)}]

"""
        for product in PRODUCTS
    )
    products = f"""# The product master: both products are kept at 2–8 °C. The time-out-of-storage
# allowances are shortened to seconds for the demo (real products have tens of hours, e.g.
# 72), so that the wait at the dock shows.
{products}"""
    alarms = f"""# The demo shortens {PUT_AWAY_ZONE}'s on-delay (the profile's: 15 min) to two
# readings in a row, so that its excursion alarms within the run.
[zones.{PUT_AWAY_ZONE}.rules.temperature]
on_delay_samples = 2
off_delay_secs = 1
rate = false

[alarms]
snapshot_secs = 10

# The siren: coil 0 of the {PUT_AWAY_ZONE} probe, on while an alarm is unacknowledged.
[[alarms.coils]]
device = "{PUT_AWAY_ZONE}-probe"
address = {BEACON_COIL}
when = "unacknowledged"
refresh_secs = 5

"""
    scanner_devices = f"""[devices.dock-door-1]
type = "barcode_scanner"
transport = "tcp"
host = "{dock.host}"
port = {dock.port}
zone = "{DOCK_ZONE[0]}"
biz_step = "receiving"
disposition = "in_progress"
reconnect_max_secs = 2

[devices.{PUT_AWAY_ZONE}-door]
type = "barcode_scanner"
transport = "serial"
serial = {{ port = "{door.device_path}", baudrate = 9600 }}
zone = "{PUT_AWAY_ZONE}"
biz_step = "storing"
disposition = "in_progress"
reconnect_max_secs = 2

[devices.{ROOM_ZONE}-door]
type = "barcode_scanner"
transport = "tcp"
host = "{room_door.host}"
port = {room_door.port}
zone = "{ROOM_ZONE}"
biz_step = "storing"
disposition = "in_progress"
reconnect_max_secs = 2

"""
    freezer = OPCUA_ZONE[0]
    door_node = opcua.node_id(freezer, "door_open")  # a contact nobody alarms on: monitored = false
    opcua_device = f"""[devices.{freezer}-bms]
type = "opcua"
endpoint = "{opcua.endpoint}"
zone = "{freezer}"
mode = "subscription"
publishing_interval_ms = 500
sampling_interval_ms = 250
timeout_ms = 2000
reconnect_max_secs = 2
points.temperature = {{ node_id = "{opcua.node_id(freezer, "temperature")}", unit = "Cel" }}
points.humidity = {{ browse_path = "{opcua.browse_path(freezer, "humidity")}", unit = "%" }}
points.door_open = {{ node_id = "{door_node}", unit = "1", monitored = false }}

"""
    logger_device = f"""[devices.{LOGGER_ZONE}-logger]
type = "serial_logger"
serial = {{ port = "{logger_path}", baudrate = 9600 }}
zone = "{LOGGER_ZONE}"
poll_interval_secs = 1
timeout_ms = 500
reconnect_max_secs = 2
points.temperature = {{ unit = "Cel" }}
points.humidity = {{ unit = "%" }}

"""
    devices = "".join(
        f"""[devices.{zone}-probe]
type = "modbus_tcp"
host = "127.0.0.1"
port = {modbus_port}
unit_id = {unit}
zone = "{zone}"
poll_interval_secs = 1
timeout_ms = 500
reconnect_max_secs = 5
points.temperature = {{ table = "input", address = 0, type = "float32", unit = "Cel" }}
points.humidity = {{ table = "holding", address = 101, type = "uint16", scale = 0.1, unit = "%" }}
points.door_open = {{ table = "discrete", address = 0, unit = "1", monitored = false }}

"""
        for zone, unit, _profile in ZONES
    )
    return f"""# gxpgate demo config: written by `gxpgate demo`, pointed at the bundled simulators.
[gateway]
id = "gw-demo"
site = "gxpgate demo warehouse"

[signing]
key_file = "signing.key"

[buffer]
path = "buffer.db"
retention_days = 30

[uplink]
url = "{uplink_url}"
batch_max_records = 500
timeout_secs = 5
backoff_initial_secs = 0.5
backoff_max_secs = 4

# A free port, so the demo runs beside an installed gateway (default 19720).
[metrics]
port = {metrics_port}

{zones}{products}{alarms}{devices}{opcua_device}{logger_device}{scanner_devices}"""


@dataclass
class LiveState:
    """What the live view shows, fed by the recorder's commit listener."""

    latest: dict[str, float] = field(default_factory=dict)
    extremes: dict[str, tuple[float, float]] = field(default_factory=dict)
    audits: list[str] = field(default_factory=list)
    alarms: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each alarm's latest sealed transition, by id, in the order they were raised."""
    echo: Echo | None = None
    """Where custody exceptions and time-out-of-storage alarms are told as they are sealed."""
    started: float = 0.0
    sealed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at each alarm transition sealed; the script waits on it (:meth:`wait_for`)."""

    def on_commit(self, committed: Sequence[Committed]) -> None:
        for fact in committed:
            if fact.kind == "alarm":
                alarm_id = fact.data["alarm_id"]
                before = self.alarms.get(alarm_id, {})
                states = [*before.get("states", []), fact.data["state"]]
                # Only the raising transition of an event is sure to carry its detail.
                detail = fact.data.get("detail") or before.get("detail")
                alarm = {**fact.data, "zone": fact.zone, "states": states, "detail": detail}
                self.alarms[alarm_id] = alarm
                self._tell(alarm)
                self.sealed.set()
            elif fact.kind == "audit":
                self.audits.append(str(fact.data.get("event")))
            elif fact.data.get("backfill"):
                continue  # old values from the logger's memory: not the live view
            elif (
                fact.kind == "reading"
                and fact.point == "temperature"
                and fact.zone
                and not (fact.device or "").endswith("-logger")
            ):
                if fact.value is None:
                    continue
                self.latest[fact.zone] = fact.value
                low, high = self.extremes.get(fact.zone, (fact.value, fact.value))
                self.extremes[fact.zone] = (min(low, fact.value), max(high, fact.value))

    def raised(self, kinds: Sequence[str], lot: str) -> bool:
        """Has an alarm of one of ``kinds`` naming ``lot`` been sealed in this run?"""
        return any(a["kind"] in kinds and lot in a["lots"] for a in self.alarms.values())

    async def wait_for(self, found: Callable[[], bool], deadline: float) -> bool:
        """Wait until ``found()`` (checked as alarms are sealed) or the monotonic ``deadline``."""
        while not found():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sealed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.sealed.wait()
        return True

    def _tell(self, alarm: dict[str, Any]) -> None:
        kind, state, detail = alarm["kind"], alarm["state"], alarm["detail"] or {}
        if self.echo is None or kind not in (*CUSTODY_KINDS, *TOS_KINDS):
            return
        t = f"{time.monotonic() - self.started:5.0f}s"
        what = f"{detail.get('product') or 'unknown product'} lot {detail.get('lot')}"
        alarm_id, zone = alarm["alarm_id"], alarm["zone"]
        if kind == "wrong_zone" and state == "active":
            self.echo(
                f"{t}  ⚠ wrong zone: {what} put away in {zone} ({detail.get('zone_profile')}); "
                f"it requires {detail.get('required_profile')} — alarm {alarm_id}"
            )
        elif kind == "wrong_zone" and state == "cleared":
            self.echo(f"{t}  ✔ wrong zone put right: {what} has left {zone} — {alarm_id} cleared")
        elif kind in TOS_KINDS and state == "active":
            share = float(detail.get("share") or 0)
            used = float(detail.get("used_hours") or 0) * 3600
            allowed = float(detail.get("allowance_hours") or 0) * 3600
            level = "warning" if kind == "tos_warning" else "used up, alarm"
            self.echo(
                f"{t}  ⚠ time out of storage: {what} has used {share:.0%} of its allowance "
                f"({used:.1f} of {allowed:.0f} s), now in {zone} — {level} {alarm_id}"
            )
        elif state == "active":
            self.echo(f"{t}  ⚠ {kind}: {what} in {zone} — alarm {alarm_id}")


class _EventLines(logging.Handler):
    """Shows the agent's state-change log events as lines in the live view."""

    def __init__(self, echo: Echo, started: float) -> None:
        super().__init__(logging.WARNING)
        self.echo = echo
        self.started = started

    def emit(self, record: logging.LogRecord) -> None:
        self.echo(f"{time.monotonic() - self.started:5.0f}s  ! {record.getMessage()}")


@dataclass
class Step:
    at: float
    say: str
    act: Callable[[], Awaitable[object] | None]
    background: bool = False
    """Runs beside the live view (a scan sequence) instead of before its next line."""


INTERRUPTED = 130
"""Exit status after Ctrl-C, as a shell reports a command ended by SIGINT."""


def run_demo(
    *,
    seconds: float | None,
    workdir: Path | None,
    uplink: str | None,
    echo: Echo,
    resume: bool = False,
) -> int:
    if seconds is not None and seconds <= 0:
        echo("gxpgate: --seconds must be positive")
        return 2
    if uplink is not None:
        parts = urlsplit(uplink)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            echo(f"gxpgate: --uplink {uplink!r} must be an http:// or https:// URL with a host, "
                 "e.g. https://quality.example.com")  # fmt: skip
            return 2
    if workdir is not None and (workdir / "buffer.db").exists():
        earlier = _earlier_chain(workdir)
        if not resume:
            echo(f"gxpgate: {workdir} holds an earlier demo's chain ({earlier}); add --continue "
                 "to go on with it, or choose another --workdir")  # fmt: skip
            return 2
        echo(f"continuing the chain in {workdir} ({earlier})")
    elif resume:
        echo("gxpgate: --continue needs a --workdir holding an earlier demo's chain")
        return 2
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="gxpgate-demo-") as tmp:
            return asyncio.run(_demo(seconds, Path(tmp), uplink, echo, keep=False))
    workdir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_demo(seconds, workdir, uplink, echo, keep=True))


async def _demo(
    seconds: float | None, workdir: Path, uplink: str | None, echo: Echo, *, keep: bool
) -> int:
    key_path = workdir / "signing.key"
    key = load_private_key(key_path) if key_path.exists() else generate_key_file(key_path)
    (workdir / "signing.pub.pem").write_text(public_key_pem(key.public_key()))
    freezer = ZoneSpec(OPCUA_ZONE[0], temperature_c=-18.0, humidity_pct=30.0)
    stored = 30  # the logger has been logging for a minute before the gateway sees it
    logger_sim = LoggerSimulator(
        serial="L0042",
        interval_secs=LOGGER_INTERVAL_SECS,
        started_at=time.time() - stored * LOGGER_INTERVAL_SECS,
        clock_offset_secs=-42.0,
    )
    async with (
        ModbusSimulator() as modbus,
        OpcUaSimulator([freezer], update_interval_secs=1.0) as opcua,
        logger_sim as logger,
        BarcodeScannerSimulator("tcp") as dock,
        BarcodeScannerSimulator("pty") as cold_door,
        BarcodeScannerSimulator("tcp") as room_door,
    ):
        scanners = _Scanners(dock, cold_door, room_door)
        plan = _Plan(seconds)
        service = None
        if uplink is None:
            service = QualityServiceSimulator(workdir / "quality-service.db", [key.public_key()])
            service.start()
        try:
            url = uplink or (service.url if service else "")
            config_path = workdir / "gxpgate.toml"
            metrics_port = _free_port()
            config_path.write_text(
                demo_config(
                    modbus.port, opcua, logger.device_path, scanners, url, metrics_port, plan
                )
            )
            echo(f"gxpgate demo — files in {workdir}{'' if keep else ' (temporary)'}")
            echo(f"  Modbus TCP simulator  127.0.0.1:{modbus.port}  (3 sensors, units 1-3)")
            echo(f"  OPC UA simulator      {opcua.endpoint}  (freezer-1, subscription)")
            echo(
                f"  data logger L0042     {logger.device_path}  ({LOGGER_ZONE}, GXL/1, clock -42 s)"
            )
            echo(f"  dock-door-1 scanner   {dock.address}  (TCP, receiving at {DOCK_ZONE[0]})")
            echo(f"  {PUT_AWAY_ZONE}-door      {cold_door.address}  (serial, put-away: storing)")
            echo(f"  {ROOM_ZONE}-door        {room_door.address}  (TCP, put-away: storing)")
            echo(f"  quality service       {url}{'  (simulator)' if service else ''}")
            echo(f"  config                {config_path}")
            echo(
                f"  metrics               http://127.0.0.1:{metrics_port}/metrics  "
                f"(gxpgate status --config {config_path})"
            )
            sims = _Sims(modbus, opcua, logger, scanners, service)
            code = await _run_agent(config_path, sims, plan, echo, keep=keep)
        finally:
            if service is not None:
                service.stop()
    return code


def _earlier_chain(workdir: Path) -> str:
    try:
        outbox = Outbox(workdir / "buffer.db", "gw-demo")
    except OutboxError as exc:
        return f"unreadable: {exc}"
    try:
        return f"chain {outbox.chain}, {outbox.last_seq} records"
    finally:
        outbox.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class _Scanners:
    dock: BarcodeScannerSimulator
    """Fixed-mount scanner at the dock door (TCP): pallets and cases received."""
    cold_door: BarcodeScannerSimulator
    """Handheld at the cold-room door (serial): the cases put away."""
    room_door: BarcodeScannerSimulator
    """Fixed-mount at the room-temperature zone's door (TCP): one case put away there by mistake."""


@dataclass
class _Sims:
    modbus: ModbusSimulator
    opcua: OpcUaSimulator
    logger: LoggerSimulator
    scanners: _Scanners
    service: QualityServiceSimulator | None


def _script(
    sims: _Sims, agent: Agent, state: LiveState, plan: _Plan, echo: Echo, started: float
) -> list[Step]:
    # The timeline fits into a short --seconds run; without --seconds it plays once.
    scale = plan.scale
    modbus, opcua, logger, service = sims.modbus, sims.opcua, sims.logger, sims.service
    custody = _Custody(agent, sims.scanners, state, plan, echo, started)
    steps = [
        Step(2 * scale, f"dock-door-1 receives 2 pallets, 5 cases ({VACCINE_A.lot_number} of "
             f"{VACCINE_A.name}, {INSULIN_B.lot_number} of {INSULIN_B.name})",
             custody.run, background=True),
        Step(12 * scale, f"excursion: {PUT_AWAY_ZONE} rises to 9.5 °C for {12 * scale:.0f} s "
             "(profile 2–8 °C)", lambda: modbus.excursion(2, "temperature", 9.5, 12 * scale)),
        Step(12 * scale, "QA acknowledges the alarm (gxpgate alarms ack) once it is raised",
             lambda: _acknowledge(agent, echo), background=True),
        Step(30 * scale, "door opened in cold-room-1 for 5 s",
             lambda: modbus.excursion(1, "door_open", 1, 5 * scale)),
        Step(36 * scale, "ambient-a probe stops answering for 6 s",
             lambda: modbus.set_fault(3, "no_answer")),
        Step(42 * scale, "ambient-a probe answers again",
             lambda: modbus.set_fault(3, None)),
        Step(47 * scale, "freezer-1 OPC UA server restarts (down for 5 s)", opcua.stop),
        Step(52 * scale, "freezer-1 OPC UA server is back", opcua.start),
        Step(17 * scale, f"data logger cable pulled for {12 * scale:.0f} s (it keeps logging)",
             logger.go_silent),
        Step(29 * scale, "data logger plugged in again: its memory for the gap is read back",
             logger.resume),
    ]  # fmt: skip
    if service is not None:
        outage = 14 * scale
        steps.append(
            Step(10 * scale, f"network outage: quality service unreachable for {outage:.0f} s",
                 lambda: service.outage(outage))
        )  # fmt: skip
    return sorted(steps, key=lambda s: s.at)


async def _run_agent(
    config_path: Path,
    sims: _Sims,
    plan: _Plan,
    echo: Echo,
    *,
    keep: bool,
) -> int:
    seconds = plan.seconds
    loaded = load_config(config_path)
    state = LiveState()
    ready = asyncio.Event()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    interrupted: list[float] = []

    def on_signal(signum: int) -> None:
        if signum == signal.SIGINT and not interrupted:
            interrupted.append(time.monotonic() - started)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    agent = Agent(loaded, on_ready=lambda _a: ready.set(), listeners=[state.on_commit])
    quiet_libraries()
    started = time.monotonic()
    state.echo, state.started = echo, started
    handler = _EventLines(echo, started)
    logger = logging.getLogger("gxpgate.agent")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    task = asyncio.create_task(agent.run(stop))
    try:
        ready_wait = asyncio.create_task(ready.wait())
        await asyncio.wait({task, ready_wait}, return_when=asyncio.FIRST_COMPLETED)
        ready_wait.cancel()
        if task.done():
            task.result()  # raises the start error
        chain = agent.outbox.chain if agent.outbox else "?"
        echo(f"  gateway gw-demo, chain {chain}, key {agent.key_id}")
        echo("" if seconds is None else f"  running for {seconds:g} s (Ctrl-C stops early)")
        echo(_header())
        steps = _script(sims, agent, state, plan, echo, started)
        acts: set[asyncio.Future[object]] = set()
        while not stop.is_set():
            elapsed = time.monotonic() - started
            while steps and steps[0].at <= elapsed:
                step = steps.pop(0)
                echo(f"{elapsed:5.0f}s  ▶ {step.say}")
                outcome = step.act()
                if outcome is not None and step.background:
                    acts.add(asyncio.ensure_future(outcome))
                elif outcome is not None:
                    await outcome
            echo(_line(elapsed, agent, state))
            if seconds is not None and elapsed >= seconds:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await stop.wait()
        echo("stopping: final flush to the quality service …")
        await _finish(acts)
        stop.set()
        await task
    except AgentStartError as exc:
        echo(f"gxpgate: {exc}")
        return 1
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        if not task.done():
            stop.set()
            await task
    beacon = sims.modbus.coil(2, BEACON_COIL)
    cut_short = (
        interrupted[0] if interrupted and (seconds is None or interrupted[0] < seconds) else None
    )
    code = _summary(loaded, sims.service, state, beacon, echo, keep, cut_short)
    return INTERRUPTED if cut_short is not None and code == 0 else code


@dataclass
class _Custody:
    """The scanners' part of the script: receiving at the dock, then the put-away of each lot.

    Insulin B goes in at once, but one of its cases first into :data:`ROOM_ZONE` (a
    ``wrong_zone`` exception, cleared when the case is taken on to the cold room); Vaccine A's
    cases wait at the dock, where the time counts against the lot's allowance, until its
    ``tos_warning`` is sealed. Each wait ends at the run's end at the latest.
    """

    agent: Agent
    scanners: _Scanners
    state: LiveState
    plan: _Plan
    echo: Echo
    started: float
    door: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One handheld at the cold-room door: the two lots' put-aways take turns."""

    async def run(self) -> None:
        pause = 2 * self.plan.scale
        # A scan sent before the gateway has the port open is lost, as with a real scanner.
        await _listening(self.agent, "dock-door-1")
        await self.scanners.dock.play(DOCK_RECEIVING, interval_secs=0.2 * pause)
        await asyncio.sleep(pause)
        await _listening(self.agent, f"{PUT_AWAY_ZONE}-door")
        await _listening(self.agent, f"{ROOM_ZONE}-door")
        async with asyncio.TaskGroup() as group:
            group.create_task(self._misplaced_case(pause))
            group.create_task(self._dock_dwell(pause))

    async def _misplaced_case(self, pause: float) -> None:
        right, wrong = INSULIN_B.cases()
        self._say(f"{INSULIN_B.lot_number}: one case put away into {PUT_AWAY_ZONE}, the other "
                  f"by mistake into {ROOM_ZONE} (room temperature, 15–30 °C)")  # fmt: skip
        async with self.door:
            await self.scanners.cold_door.play([right])
        await self.scanners.room_door.play([wrong])
        deadline = self.plan.deadline(self.started)
        await self.state.wait_for(
            lambda: self.state.raised(["wrong_zone"], INSULIN_B.lot), deadline
        )
        await asyncio.sleep(pause)
        self._say(f"the case is taken from {ROOM_ZONE} on to {PUT_AWAY_ZONE}")
        async with self.door:
            await self.scanners.cold_door.play([wrong])

    async def _dock_dwell(self, pause: float) -> None:
        allowance = self.plan.allowance_secs(VACCINE_A)
        self._say(f"{VACCINE_A.lot_number}'s cases wait at {DOCK_ZONE[0]}: the time counts "
                  f"against its allowance ({allowance:g} s, shortened for the demo)")  # fmt: skip
        deadline = min(self.plan.deadline(self.started), time.monotonic() + 3 * allowance)
        await self.state.wait_for(lambda: self.state.raised(TOS_KINDS, VACCINE_A.lot), deadline)
        self._say(f"{VACCINE_A.lot_number}'s cases are put away into {PUT_AWAY_ZONE}")
        async with self.door:
            # Quickly: the lot is at the dock until its last case has left.
            await self.scanners.cold_door.play(VACCINE_A.cases(), interval_secs=min(0.1, pause))

    def _say(self, text: str) -> None:
        self.echo(f"{time.monotonic() - self.started:5.0f}s  ▶ {text}")


async def _acknowledge(agent: Agent, echo: Echo, timeout_secs: float = 20.0) -> None:
    # As an operator would: through the control socket, once the alarm is there.
    service = agent.alarms
    assert service is not None
    raised = (f"{PUT_AWAY_ZONE}-probe.temperature.high", "active")
    async with asyncio.timeout(timeout_secs):
        while not (found := [a for a in service.engine.alarms() if (a.rule, a.state) == raised]):
            service.sealed_event.clear()
            await service.sealed_event.wait()
    alarm_id = found[0].alarm_id
    answer = await control_request(
        control_socket_path(service.config),
        {"op": "ack", "alarm_id": alarm_id, "by": "demo.qa",
         "comment": "cold-room door found ajar and closed; lots quarantined for review"},
    )  # fmt: skip
    if answer.get("ok"):
        echo(f"        ✔ alarm {alarm_id} acknowledged by demo.qa (record {answer['seq']})")
    else:
        echo(f"        ✘ acknowledgement refused: {answer.get('error')}")


async def _listening(agent: Agent, device: str, timeout_secs: float = 10.0) -> None:
    streamer = next(p for p in agent.pollers if p.device == device)
    assert isinstance(streamer, CustodyStreamer)
    async with asyncio.timeout(timeout_secs):
        await streamer.listening.wait()


async def _finish(acts: set[asyncio.Future[object]], timeout_secs: float = 5.0) -> None:
    """Let scripted acts still running end (briefly), then cancel; a failure is said, not raised."""
    if not acts:
        return
    _done, pending = await asyncio.wait(acts, timeout=timeout_secs)
    for act in pending:
        act.cancel()
    for act in acts:
        try:
            await act
        except asyncio.CancelledError:
            log.warning("demo step cut short by the stop")
        except Exception as exc:  # a simulator hiccup must not hide the summary
            log.warning("demo step failed: %s", exc)


def _alarm_lines(state: LiveState, beacon: bool | None) -> list[str]:
    lines = [f"  alarms                {len(state.alarms)} raised (rules of each zone's profile)"]
    for alarm_id, alarm in state.alarms.items():
        lots = f"; lots {', '.join(alarm['lots'])}" if alarm["lots"] else ""
        lines.append(
            f"    {alarm_id:<5} {alarm['zone']:<12} {alarm['rule']:<51} {alarm['severity']:<8}"
            f"{' → '.join(alarm['states'])}{lots}"
        )
    if beacon is not None:
        lines.append(f"  siren coil            {'ON' if beacon else 'off'} at the end")
    return lines


def _lots_lines(loaded: LoadedConfig) -> list[str]:
    """Where the received lots ended up and how much of their allowance they have used, from
    the lot register (``gxpgate lots in ZONE``, ``gxpgate lots exposure ID``)."""
    config = loaded.config
    try:
        policy = load_policy(config, loaded.path)
        with LotRegister.open_existing(lots_path_for(config.buffer.path)) as register:
            held = {zone: register.in_zone(zone) for zone in (DOCK_ZONE[0], PUT_AWAY_ZONE)}
            now = time.time()
            histories = [
                lot_history(register, p.lot, config, policy.product(p.gtin), now) for p in PRODUCTS
            ]
    except (LotRegisterError, PolicyError) as exc:
        return [f"  lots                  unknown: {exc}"]
    lines = []
    for zone, presences in held.items():
        lots = sorted(p.identifier for p in presences if p.kind == "lot")
        others = len(presences) - len(lots)
        what = ", ".join(lots) or "no lots"
        lines.append(f"  lots in {zone:<13} {what} (+{others} SSCCs/items)")
    lines.append("  time out of storage   (allowances shortened for the demo)")
    for h in histories:
        allowed = (h.allowance_hours or 0) * 3600
        lines.append(
            f"    {h.lot:<31} {h.product or '?':<10} {h.used_secs:6.1f} s of {allowed:.0f} s "
            f"({(h.share or 0):.0%})"
        )
    return lines


def _header() -> str:
    zones = "".join(f"{zone:>13}" for zone, _p in ALL_ZONES)
    return f"{'t':>6}{zones}{'sealed':>9}{'pending':>9}{'delivered':>11}  uplink"


def _line(elapsed: float, agent: Agent, state: LiveState) -> str:
    temps = "".join(
        f"{state.latest[z]:>10.2f} °C" if z in state.latest else f"{'-':>13}" for z, _p in ALL_ZONES
    )
    outbox = agent.outbox
    last = outbox.last_seq if outbox else 0
    acked = outbox.acked_through if outbox else 0
    uplink = "ok"
    if agent.forwarder is not None and agent.forwarder.stats.last_error:
        uplink = f"retrying ({agent.forwarder.stats.last_error.split(':')[0][:30]})"
    return f"{elapsed:5.0f}s{temps}{last:>9}{last - acked:>9}{acked:>11}  {uplink}"


def _summary(
    loaded: LoadedConfig,
    service: QualityServiceSimulator | None,
    state: LiveState,
    beacon: bool | None,
    echo: Echo,
    keep: bool,
    interrupted_at: float | None = None,
) -> int:
    db, workdir = loaded.config.buffer.path, loaded.path.parent
    key = load_private_key(workdir / "signing.key")
    outbox = Outbox(db, "gw-demo")
    try:
        status = outbox.status()
        export_path = workdir / "evidence.jsonl"
        bad = backfilled = 0
        with export_path.open("wb") as handle:
            for body in outbox.export():
                handle.write(body + b"\n")
                if b'"kind":"reading"' in body:  # the summary counts what the evidence says
                    record = orjson.loads(body)
                    bad += record["quality"] == "bad"
                    backfilled += bool(record["data"].get("backfill"))
        local = verify_lines(outbox.export(), [key.public_key()])
    finally:
        outbox.close()
    echo("")
    echo("summary")
    echo(f"  records sealed        {status.last_seq} (chain {status.chain})")
    echo(f"  delivered             {status.acked_through} acknowledged by the quality service")
    echo(f"  still buffered        {status.pending}")
    for zone, profile in ALL_ZONES:
        if zone in state.extremes:
            low, high = state.extremes[zone]
            echo(f"  {zone:<21} {low:.2f} … {high:.2f} °C  (profile {profile})")
    echo(f"  bad readings          {bad} in the evidence (each with its error on record)")
    echo(f"  back-filled readings  {backfilled} (read back from the data logger's memory)")
    for line in _lots_lines(loaded):
        echo(line)
    custody = [a["kind"] for a in state.alarms.values() if a["kind"] in CUSTODY_KINDS]
    counts = ", ".join(f"{custody.count(k)} {k}" for k in CUSTODY_KINDS if k in custody)
    echo(f"  custody exceptions    {len(custody)}{f' ({counts})' if counts else ''}")
    interesting = [e for e in state.audits if e not in (AGENT_STARTED, AGENT_STOPPED)]
    echo(f"  audit events          {', '.join(interesting) or 'none'}")
    for line in _alarm_lines(state, beacon):
        echo(line)
    echo(f"  local export          {export_path}: {local.summary()}")
    ok = local.ok
    if service is not None:
        held = service.records("gw-demo", status.chain)
        remote: Verdict = verify_lines((orjson.dumps(r) for r in held), [key.public_key()])
        complete = len(held) == status.acked_through
        echo(f"  quality service copy  {remote.summary()}")
        ok = ok and remote.ok and complete
    echo(f"  public key            {workdir / 'signing.pub.pem'}")
    if keep:
        lot, config = shlex.quote(VACCINE_A.lot), shlex.quote(str(loaded.path))
        echo(f"  a lot's history       gxpgate lots exposure {lot} --config {config}")
    else:
        echo("  (files are in a temporary folder, removed now; --workdir DIR keeps them)")
    if interrupted_at is not None:
        echo(f"  run                   interrupted by Ctrl-C after {interrupted_at:.0f} s: the "
             "script did not finish")  # fmt: skip
    cut = "" if interrupted_at is None else f" (of a run interrupted after {interrupted_at:.0f} s)"
    echo(f"verification: {'PASSED' if ok else 'FAILED'}{cut}")
    return 0 if ok else 1
