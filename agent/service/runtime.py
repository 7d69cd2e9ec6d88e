"""The daemon: composes key, outbox, recorder, device pollers and forwarder, and stops cleanly.

Start-up checks everything it can before any device is polled: the key (file mode, type), the
buffer (integrity, chain tail hashes and signature under the configured key). Shutdown order:
stop the producers, seal the ``agent_stopped`` record, commit what is queued, one bounded final
flush to the service, close the buffer. The buffer, not the flush, is the durability guarantee.

Exceptions::

    AgentStartError     the agent cannot start (key, buffer, uplink credentials); says why
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gxpgate.agent.alarms.sampling import RecordingPolicy
from gxpgate.agent.alarms.service import AlarmService, build_engine, control_socket_path
from gxpgate.agent.custody.exceptions import ExceptionJudge
from gxpgate.agent.custody.exposure import ExposureBook
from gxpgate.agent.custody.feed import LotFeed
from gxpgate.agent.custody.lots import LotRegister, LotRegisterError, lots_path_for
from gxpgate.agent.custody.policy import PolicyHolder
from gxpgate.agent.devices.scanners import CustodyStreamer
from gxpgate.agent.devices.supervisor import DevicePoller, DeviceStreamer, cursor_prefix
from gxpgate.agent.devices.zones import ZoneMap
from gxpgate.agent.evidence import (
    ChainVerifier,
    KeyFileError,
    RecordInvalid,
    key_id,
    key_path_for,
    load_private_key,
    record_hash,
    verify_signature,
)
from gxpgate.agent.health.capacity import BufferGuard, Thinning
from gxpgate.agent.health.clock import ClockMonitor, SyncProbe, UnsyncedFlag, ntp_synchronized
from gxpgate.agent.health.snapshot import Snapshot, status_line, take_snapshot
from gxpgate.agent.recording.audit import (
    AGENT_STARTED,
    AGENT_STOPPED,
    BUFFER_MIGRATED,
    BUFFER_REPAIRED,
    CHAIN_REPLACED,
    CONTROL_SOCKET_UNAVAILABLE,
    METRICS_UNAVAILABLE,
)
from gxpgate.agent.recording.intake import Intake
from gxpgate.agent.recording.recorder import CommitListener, Recorder
from gxpgate.agent.recording.sealing import Fact, Sealer
from gxpgate.agent.service.control import ControlError, ControlServer
from gxpgate.agent.service.control_ops import AlarmOps
from gxpgate.agent.service.preflight import start_problems
from gxpgate.agent.service.sdnotify import Notifier
from gxpgate.agent.uplink.seam import MqttUplinkError, Uplink, build_uplink
from gxpgate.buffer import (
    MIGRATION_KEY,
    BufferLock,
    BufferLocked,
    BufferWriteError,
    Outbox,
    OutboxError,
)
from gxpgate.config import LoadedConfig
from gxpgate.config.products import PolicyError
from gxpgate.drivers.base import BuildContext, is_pushed, utc_now
from gxpgate.drivers.scanner_model import BarcodeScannerDevice, RfidReaderDevice

if TYPE_CHECKING:
    from gxpgate.agent.health.metrics import Metrics

__all__ = [
    "Agent",
    "AgentAlreadyRunning",
    "AgentStartError",
    "agent_version",
    "open_outbox",
]

log = logging.getLogger(__name__)

PRUNE_EVERY_SECS = 600.0
FINAL_FLUSH_SECS = 5.0
STOP_COMMIT_SECS = 10.0
"""At a stop, how long commits may keep failing before what is queued is given up: with the
final flush, well inside systemd's TimeoutStopSec=30s."""


class AgentStartError(Exception):
    """The agent cannot start; the message says what to fix. ``exit_code`` 2 when it is the
    operator's usage (a second agent on one buffer), 1 otherwise."""

    exit_code = 1


class AgentAlreadyRunning(AgentStartError):
    exit_code = 2


def agent_version() -> str:
    try:
        return version("gxpgate")
    except PackageNotFoundError:
        return "unknown"


def open_outbox(loaded: LoadedConfig, *, must_exist: bool = False, agent: bool = False) -> Outbox:
    """The configured buffer; ``must_exist`` for operator commands that should not mint a chain
    in a mistyped path; ``agent`` for the agent, the writer, which keeps the disk reserve and
    the witness (see buffer/outbox.py)."""
    cfg = loaded.config
    if must_exist and not cfg.buffer.path.exists():
        raise AgentStartError(
            f"{cfg.buffer.path}: no buffer yet (the agent creates it when it first runs)"
        )
    try:
        reserve_mb = cfg.buffer.reserve_mb if agent else 0
        # The agent logs; an operator's command shows a migration's progress on stderr (stdout
        # may be the export itself).
        progress = None if agent else _on_stderr
        return Outbox(
            cfg.buffer.path, cfg.gateway.id, quota_mb=cfg.buffer.quota_mb,
            reserve_mb=reserve_mb, witness=agent, progress=progress,
        )  # fmt: skip
    except OutboxError as exc:
        raise AgentStartError(str(exc)) from exc
    except OSError as exc:
        raise AgentStartError(f"{cfg.buffer.path}: {exc.strerror or exc}") from exc


def _on_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


SAMPLE_RECORDS = 64
"""Records checked at random at start-up beside the tail: damage inside a body is found and
refused then, not when the forwarder or the alarm replay trips over it."""


def check_buffer(outbox: Outbox, private_key: Ed25519PrivateKey) -> None:
    """Refuse a buffer whose newest records, or a random sample of the rest, do not verify."""
    check_tail(outbox, private_key)
    public_key = private_key.public_key()
    keys = {key_id(public_key): public_key}
    for seq, stored_hash, body in outbox.sample(SAMPLE_RECORDS):
        problem = _body_problem(seq, stored_hash, body, keys)
        if problem:
            raise AgentStartError(
                f"{outbox.path}: record {seq} is damaged ({problem}); restore the buffer from a "
                "backup (gxpgate export and gxpgate verify show every damaged record)"
            )


def _body_problem(
    seq: int, stored_hash: str, body: bytes, keys: dict[str, Ed25519PublicKey]
) -> str | None:
    try:
        record = orjson.loads(body)
        if not isinstance(record, dict) or record.get("seq") != seq:
            return "its body is not the record with that seq"
        if record_hash(record) != record["hash"] or record["hash"] != stored_hash:
            return "its hash does not recompute"
        if record["key"] in keys:  # older keys' records are checked by verify, with the PEMs
            verify_signature(record, keys)
    except orjson.JSONDecodeError:
        return "its body is not JSON"
    except (KeyError, TypeError, RecordInvalid) as exc:
        return str(exc) or type(exc).__name__
    return None


def check_tail(outbox: Outbox, private_key: Ed25519PrivateKey) -> None:
    """Refuse a buffer whose newest records do not verify under the configured key."""
    bodies = outbox.tail(2)
    if not bodies:
        return
    try:
        records = [orjson.loads(body) for body in bodies]
    except orjson.JSONDecodeError:
        raise AgentStartError(
            f"{outbox.path}: the newest records are damaged (not JSON); restore the buffer "
            "from a backup"
        ) from None
    public_key = private_key.public_key()
    verifier = ChainVerifier(
        keys={key_id(public_key): public_key},
        chain=outbox.chain,
        last_seq=records[0]["seq"] - 1,
        last_hash=records[0]["prev"],
    )
    try:
        for record in records:
            verifier.check(record)
    except RecordInvalid as exc:
        if "unknown signing key" in exc.reason:
            raise AgentStartError(
                f"{outbox.path}: the chain was signed with key {records[-1]['key']}, but the "
                f"configured key is {key_id(public_key)}; restore the original key file "
                "(a silent key change would break the chain's verification)"
            ) from exc
        raise AgentStartError(f"{outbox.path}: chain tail fails verification: {exc}") from exc
    if records[-1]["hash"] != outbox.last_hash:
        raise AgentStartError(f"{outbox.path}: record {outbox.last_seq} differs from its index")


class Agent:
    """One gateway process. ``run(stop)`` returns after a clean shutdown once ``stop`` is set."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        uplink_transport: httpx.AsyncBaseTransport | None = None,
        on_ready: Callable[[Agent], None] | None = None,
        notifier: Notifier | None = None,
        wall_clock: Callable[[], float] = time.time,
        sync_probe: SyncProbe = ntp_synchronized,
        listeners: Sequence[CommitListener] = (),
    ) -> None:
        self.loaded = loaded
        self.listeners = tuple(listeners)
        """Called after each commit too, after the agent's own (the demo's view, tests)."""
        self.wall_clock = wall_clock
        self.sync_probe = sync_probe
        self.clock: ClockMonitor | None = None
        self.buffer_guard: BufferGuard | None = None
        self.config = loaded.config
        self.uplink_transport = uplink_transport
        self.on_ready = on_ready
        self.notifier = Notifier.from_environment() if notifier is None else notifier
        self.outbox: Outbox | None = None
        self.recorder: Recorder | None = None
        self.forwarder: Uplink | None = None
        self.pollers: list[DevicePoller | DeviceStreamer | CustodyStreamer] = []
        self.lots: LotFeed | None = None
        self.alarms: AlarmService | None = None
        self.key_id: str | None = None
        self.metrics: Metrics | None = None
        self.policy: PolicyHolder | None = None
        self.unsaved = 0
        """Records given up at the stop because the disk refused them (the stop says so)."""

    def snapshot(self) -> Snapshot:
        """The health of the running components (call on the loop)."""
        return take_snapshot(
            devices=self.pollers,
            config=self.config,
            recorder=self.recorder,
            uplink=self.forwarder.stats if self.forwarder is not None else None,
            alarms=self.alarms.engine if self.alarms is not None else None,
            clock=self.clock,
            guard=self.buffer_guard,
            outbox=self.outbox,
        )

    def _load_key(self) -> Ed25519PrivateKey:
        path = key_path_for(self.config.signing.key_file)
        try:
            return load_private_key(path)
        except KeyFileError as exc:
            raise AgentStartError(str(exc)) from exc

    async def run(self, stop: asyncio.Event) -> None:
        problems = start_problems(self.config)  # what `config validate` checks too; reads only
        if problems:
            raise AgentStartError("\n".join(f"{field}: {why}" for field, why in problems))
        # Before anything opens the buffer: a second agent must not touch it at all.
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(BufferLock(self.config.buffer.path))
            except BufferLocked as exc:
                raise AgentAlreadyRunning(str(exc)) from None
            except OSError as exc:
                raise AgentStartError(f"{self.config.buffer.path}: cannot lock: {exc}") from exc
            await self._run_locked(stop)

    async def _run_locked(self, stop: asyncio.Event) -> None:
        private_key = self._load_key()
        outbox = await asyncio.to_thread(partial(open_outbox, self.loaded, agent=True))
        self.outbox = outbox
        try:
            await asyncio.to_thread(check_buffer, outbox, private_key)
            await self._run(outbox, private_key, stop)
        finally:
            outbox.close()
            self.notifier.close()

    async def _run(
        self, outbox: Outbox, private_key: Ed25519PrivateKey, stop: asyncio.Event
    ) -> None:
        """Build every component from the config, each given what it needs when it is built
        (the recorder last: its listeners are components), then run them in one task group."""
        cfg = self.config
        sealer = Sealer(private_key, cfg.gateway.id, outbox.chain)
        self.key_id = sealer.key_id
        lots_path = lots_path_for(cfg.buffer.path)
        try:
            register = await asyncio.to_thread(LotRegister.open, lots_path)
        except LotRegisterError as exc:
            raise AgentStartError(
                f"{exc}; the lot register is rebuilt from the buffer if {lots_path} is removed"
            ) from exc
        # The intake's filters judge each fact as it is put (a reading as taken): thinning asks
        # the alarm engine whether a reading is quiet, the clock flag what the clock watch knows.
        engine = build_engine(cfg, register.present_between)
        recording = RecordingPolicy(cfg, engine)  # points with record = "interval"
        thinning = Thinning(cfg.buffer, engine)
        unsynced = UnsyncedFlag(cfg.clock)
        intake = Intake(
            stage=recording if recording.active else None,
            filters=(thinning.thin, unsynced.flag),
        )
        try:
            policy = self.policy = await PolicyHolder.load(self.loaded, intake.put)
        except PolicyError as exc:
            register.close()
            raise AgentStartError("product master / hold list:\n" + str(exc)) from exc
        self.pollers = self._devices(outbox, intake)
        await intake.put(
            Fact(
                "audit",
                utc_now(),
                {
                    "event": AGENT_STARTED,
                    "version": agent_version(),
                    "config_sha256": self.loaded.sha256,
                    "config_path": str(self.loaded.path),
                    "key_id": sealer.key_id,
                    "devices": sorted(cfg.devices),
                },
            )
        )
        log.info("agent.started gw=%s chain=%s key=%s", cfg.gateway.id, outbox.chain, sealer.key_id)
        if outbox.predecessor is not None and outbox.last_seq <= 1:
            # The chain before this one was set aside by `gxpgate buffer reset`: say which.
            event = {"event": CHAIN_REPLACED, "previous": outbox.predecessor}
            await intake.put(Fact("audit", utc_now(), event))
        if outbox.migrated is not None:
            migrated = {"event": BUFFER_MIGRATED, **outbox.migrated}
            sealed = {MIGRATION_KEY: "sealed"}  # in the same transaction: sealed once
            await intake.put(Fact("audit", utc_now(), migrated, state=sealed))
        for repair in outbox.repairs:
            log.error("buffer.repaired what=%s", repair)
            await intake.put(Fact("audit", utc_now(), {"event": BUFFER_REPAIRED, "what": repair}))
        await policy.seal_loaded("start")
        book = ExposureBook(cfg, lambda: policy.current, clock=time.time)
        await asyncio.to_thread(register.attach, book)
        judge = ExceptionJudge(cfg, lambda: policy.current, register)
        async with AsyncExitStack() as stack, asyncio.TaskGroup() as core:
            alarms = self.alarms = AlarmService(
                cfg, intake, lots=register.present_between, engine=engine
            )
            # Entered first, so it is synced before the recorder commits and closed after it.
            feed = LotFeed(register, outbox, judge=judge, points=book.points, sink=alarms)
            self.lots = await stack.enter_async_context(feed)
            await asyncio.to_thread(alarms.restore, outbox, feed.rejudge)
            guard = BufferGuard(
                outbox, cfg.buffer, alarms, intake.put, thinning=thinning,
                write_failing=lambda: intake.write_failing,
            )  # fmt: skip
            clock = ClockMonitor(
                cfg.clock, intake.put, flag=unsynced, wall=self.wall_clock, probe=self.sync_probe
            )
            self.buffer_guard, self.clock = guard, clock
            await clock.check_sync()  # before the first reading, so that one is flagged too
            listeners: list[CommitListener] = [feed.on_commit]
            if cfg.uplink is not None:
                uplink = await stack.enter_async_context(self._uplink(outbox, intake))
                self.forwarder = uplink
                listeners.append(lambda _committed: uplink.wake())
            recorder = self.recorder = Recorder(
                outbox, sealer, intake,
                listeners=[*listeners, *self.listeners],
                sample_listeners=[alarms.on_samples],  # the rules see every sample
                commit_interval_secs=cfg.buffer.commit_interval_ms / 1000,
            )  # fmt: skip
            await self._open_control(stack, alarms, intake)
            policy.handle_sighup(stack)
            metrics = await self._open_metrics(stack, intake)
            recorder_task = core.create_task(recorder.run(), name="recorder")
            forwarder_task = (
                core.create_task(self.forwarder.run(), name="forwarder") if self.forwarder else None
            )
            reason = "stopped"
            try:
                async with asyncio.TaskGroup() as producers:
                    tasks = [
                        producers.create_task(p.run(), name=f"device:{p.device}")
                        for p in self.pollers
                    ]
                    tasks.append(producers.create_task(self._prune_periodically(outbox)))
                    tasks.append(producers.create_task(alarms.run(), name="alarms"))
                    tasks.append(producers.create_task(guard.run(), name="buffer-guard"))
                    tasks.append(producers.create_task(clock.run(), name="clock"))
                    tasks.append(producers.create_task(policy.run(), name="policy"))
                    if metrics is not None:
                        tasks.append(producers.create_task(metrics.run(), name="metrics"))
                    if self.on_ready is not None:
                        self.on_ready(self)
                    self.notifier.ready(status_line(self.snapshot()))
                    notify = self.notifier.run(
                        lambda: status_line(self.snapshot()), alive=lambda: not recorder_task.done()
                    )
                    tasks.append(producers.create_task(notify, name="sd_notify"))
                    await stop.wait()
                    self.notifier.stopping()
                    for task in tasks:
                        task.cancel()
            except BaseException:
                reason = "crashed"
                raise
            finally:
                await self._shutdown(recorder, recorder_task, forwarder_task, reason)

    def _devices(
        self, outbox: Outbox, intake: Intake
    ) -> list[DevicePoller | DeviceStreamer | CustodyStreamer]:
        """One task per device, each device's model building its source."""
        cfg = self.config
        zones = ZoneMap(cfg)
        ctx = BuildContext(buses=cfg.buses)
        runners: list[DevicePoller | DeviceStreamer | CustodyStreamer] = []
        for dev_id, dev in cfg.devices.items():
            if isinstance(dev, BarcodeScannerDevice | RfidReaderDevice):
                scanner = dev.build(dev_id, ctx)
                gw, gln = cfg.gateway.id, cfg.gateway.gln
                runners.append(CustodyStreamer(scanner, zones, intake, gw, site_gln=gln))
                continue
            source = dev.build(dev_id, ctx)
            restore = getattr(source, "restore", None)
            if restore is not None:
                prefix = cursor_prefix(dev_id)
                saved = outbox.states(prefix)
                restore({k[len(prefix) :]: orjson.loads(v) for k, v in saved.items()})
            if is_pushed(source):
                runners.append(DeviceStreamer(source, zones, intake, dev.reconnect_max_secs))
            else:
                runners.append(DevicePoller(source, zones, intake, dev.reconnect_max_secs))
        return runners

    async def _open_control(
        self, stack: AsyncExitStack, alarms: AlarmService, intake: Intake
    ) -> None:
        """The local channel for acknowledgements. Without it the gateway still monitors and
        alarms (that matters more); the failure is logged and on record."""
        path = control_socket_path(self.config)
        ops = AlarmOps(alarms)
        server = ControlServer(path, ops.handle, group=self.config.alarms.admin_group)
        try:
            await stack.enter_async_context(server)
        except (ControlError, OSError) as exc:
            log.error("control.unavailable path=%s error=%s", path, exc)
            event = {"event": CONTROL_SOCKET_UNAVAILABLE, "path": str(path), "error": str(exc)}
            await intake.put(Fact("audit", utc_now(), event))

    async def _open_metrics(self, stack: AsyncExitStack, intake: Intake) -> Metrics | None:
        """Health and metrics (``gxpgate status`` reads them too). Without them the gateway
        still monitors (that matters more); the failure is logged and on record."""
        cfg = self.config.metrics
        if not cfg.enabled:
            return None
        # prometheus_client is loaded only when metrics are served: 0.9 MiB of RSS otherwise.
        from gxpgate.agent.health.metrics import Metrics, MetricsUnavailable

        try:
            assert self.outbox is not None
            info = {
                "version": agent_version(),
                "gw": self.config.gateway.id,
                "site": self.config.gateway.site,
                "chain": self.outbox.chain,
                "key": self.key_id or "",
            }
            metrics = Metrics(cfg, self.snapshot, self.outbox, info)
            self.metrics = await stack.enter_async_context(metrics)
        except MetricsUnavailable as exc:
            log.error("metrics.unavailable error=%s", exc)
            event = {
                "event": METRICS_UNAVAILABLE, "address": str(cfg.address), "port": cfg.port,
                "error": str(exc),
            }  # fmt: skip
            await intake.put(Fact("audit", utc_now(), event))
        return self.metrics

    def _uplink(self, outbox: Outbox, intake: Intake) -> Uplink:
        """The uplink the config's ``transport`` names."""
        assert self.config.uplink is not None
        try:
            return build_uplink(
                self.config.uplink, outbox, intake.put, transport=self.uplink_transport
            )
        except MqttUplinkError as exc:
            raise AgentStartError(str(exc)) from exc

    async def _shutdown(
        self,
        recorder: Recorder,
        recorder_task: asyncio.Task[None],
        forwarder_task: asyncio.Task[None] | None,
        reason: str,
    ) -> None:
        self.notifier.stopping()  # before the final flush: systemd disarms the watchdog
        log.info("agent.stopping reason=%s queued=%d", reason, recorder.queued)
        stopped = Fact("audit", utc_now(), {"event": AGENT_STOPPED, "reason": reason})
        if not recorder_task.done():
            # A recorder that cannot commit (full disk) may have a full queue: never wait on it
            # for longer than the stop allows.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_COMMIT_SECS):
                    await recorder.put(stopped)
            recorder.close(STOP_COMMIT_SECS)
            await recorder_task
            self.unsaved = recorder.unsaved
        if forwarder_task is not None and self.forwarder is not None:
            forwarder_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await forwarder_task  # its batch in flight ends before the final flush starts
            delivered = await self.forwarder.flush(FINAL_FLUSH_SECS)
            log.info("agent.final_flush complete=%s", delivered)
        log.info("agent.stopped sealed=%d", recorder.sealed)

    async def _prune_periodically(self, outbox: Outbox) -> None:
        retention = self.config.buffer.retention_days * 86400
        while True:
            try:
                deleted = await asyncio.to_thread(outbox.prune, retention, time.time())
            except BufferWriteError as exc:  # a full disk: the buffer guard's alarm says so
                log.warning("buffer.prune_failed error=%s", exc)
                deleted = 0
            if deleted:
                log.info("buffer.pruned records=%d", deleted)
            await asyncio.sleep(PRUNE_EVERY_SECS)
