"""The MQTT uplink (CONTRACT §4): evidence batches published QoS 1 to ``gxpgate/{gw}/evidence``.

Same batches as HTTP (:func:`gxpgate.agent.uplink.base.read_batch`: ``{"gw", "chain", "records"}``,
records exactly as sealed, gzipped), same interface as :class:`gxpgate.agent.uplink.http.Forwarder`
(:class:`gxpgate.agent.uplink.seam.Uplink`), so the agent picks one by ``[uplink] transport``.

Delivery and the cursor
    A batch is delivered when the broker's PUBACK arrives (MQTT 5: with a reason code below
    0x80). The buffer's ``acked_through`` advances only over a contiguous prefix of PUBACKed
    batches. Up to ``inflight_max_batches`` batches are in flight at once (fewer when the
    broker's ``Receive Maximum`` says so), each read and gzipped in a thread while the earlier
    ones travel. When the connection drops, whatever was not PUBACKed is published again from
    ``acked_through + 1`` after the reconnect; paho's own queued copies are dropped at the
    CONNACK, so nothing goes twice without need (a duplicate is harmless: consumers
    de-duplicate by ``gw``, ``chain``, ``seq``). A restarted agent resumes from the stored
    cursor.

What a PUBACK means
    There is no cursor endpoint over MQTT: the gateway cannot ask what the consumer holds, so
    once a broker has PUBACKed a batch the gateway trusts the broker and the consumer to keep it
    (CONTRACT §4), and retention may prune it. The broker must therefore hold the evidence
    until the consumer has it: the consumer subscribes QoS 1 with a persistent session
    (``clean_start`` false and a session expiry long enough to cover its outages), and a broker
    that restarts must persist its sessions (Mosquitto ``persistence true``; EMQX and HiveMQ
    clusters replicate them). A broker without persistence loses, on restart, every batch it
    had acknowledged and not yet handed to the consumer; the gateway cannot notice that, and
    the consumer sees a gap in ``seq`` it can prove but not fill from the gateway (an operator
    can: ``gxpgate export --since``, within the retention). A PUBACK saying "no matching
    subscribers" (0x10) still counts as delivered (a rule engine may consume the topic without
    subscribing) but is logged and sealed as an ``uplink_no_subscribers`` audit record once per
    episode, since nobody may have received those records.

Refusals and limits
    A PUBLISH refused with an MQTT 5 reason code (not authorised, quota exceeded, …) is sealed
    as an ``uplink_rejected`` audit record once per episode (a reason code different from the
    last) and retried with backoff from the cursor. Batches are cut to fit ``max_payload_kb``
    and the ``Maximum Packet Size`` an MQTT 5 broker announces in its CONNACK; a broker that
    disconnects with "packet too large" halves the size of what it refused, for the rest of
    the process's life (also sealed as ``uplink_rejected``). With MQTT 3.1.1 a broker
    acknowledges even what it drops, and closes the connection without a reason on an
    oversized packet: set ``max_payload_kb`` to its limit.

Threads
    As in :mod:`gxpgate.agent.alarms.mqtt_client`: paho runs in its own thread, bridged by
    :class:`gxpgate.agent._paho.PahoLink`, so all state here is owned by the event-loop thread and
    needs no lock. Reading and gzipping batches and moving the cursor run in worker threads
    (``asyncio.to_thread``).

Failures are counted in :class:`~gxpgate.agent.uplink.base.UplinkStats` by kind (``connect``,
``tls``,
``timeout``, ``broker`` for a refused CONNACK or a DISCONNECT from the broker, ``rejected``
for a refused PUBLISH) and logged once per episode (``uplink.failing`` … ``uplink.recovered``).
The password is never logged.

Exceptions::

    MqttUplinkError     the uplink cannot be set up (TLS or password file unreadable)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gxpgate.agent._paho import LinkDown, LinkUp, MqttSettings, PahoLink
from gxpgate.agent._retry import Backoff
from gxpgate.agent.recording.audit import UPLINK_NO_SUBSCRIBERS, UPLINK_REJECTED
from gxpgate.agent.recording.sealing import Fact
from gxpgate.agent.uplink.base import (
    Batch,
    ErrorKind,
    MqttUplinkError,
    UplinkStats,
    classify_error,
    read_batch,
)
from gxpgate.agent.uplink.redact import Redactor
from gxpgate.buffer import BufferWriteError, Outbox
from gxpgate.config.mqtt_model import MqttUplinkConfig
from gxpgate.drivers.base import utc_now

__all__ = ["MqttUplink", "MqttUplinkError", "evidence_topic"]

log = logging.getLogger(__name__)
paho_log = logging.getLogger(f"{__name__}.paho")

_NO_SUBSCRIBERS = 0x10
_PACKET_TOO_LARGE = 0x95
_IDLE_SECS = 5.0
# PUBLISH header around the payload: fixed header (<= 5), topic length (2), packet id (2),
# properties length (1, MQTT 5), with room to spare.
_HEADER_BYTES = 16


def evidence_topic(gw: str) -> str:
    """CONTRACT §4: ``gxpgate/{gw}/evidence``."""
    return f"gxpgate/{gw}/evidence"


@dataclass
class _InFlight:
    first: int
    last: int
    size: int
    acked: bool = False


class MqttUplink:
    """Publishes the buffer's records from its cursor onwards to an MQTT broker."""

    def __init__(
        self,
        outbox: Outbox,
        config: MqttUplinkConfig,
        record: Callable[[Fact], Awaitable[None]],
    ) -> None:
        """Build the client; no I/O except reading the TLS and password files, so bad ones
        fail here (:class:`MqttUplinkError`)."""
        self.outbox = outbox
        self.config = config
        self.record = record
        self.stats = UplinkStats(log, "uplink.recovered delivered_through=%d")
        self.topic = evidence_topic(outbox.gw)
        self._settings = _settings(config, config.client_id or f"gxpgate-{outbox.gw}-uplink")
        # A broker's error text may echo the credentials; none of it reaches a log or record.
        self._redact = Redactor([self._settings.password])
        self._link = self._build_link()
        self._backoff = Backoff(config.backoff_initial_secs, config.backoff_max_secs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._started = False
        self._stopping = False
        # Everything below is owned by the event-loop thread.
        self._connected = False
        self._inflight: dict[int, _InFlight] = {}  # mid -> batch, in publication order
        self._stale: set[int] = set()  # mids given up on whose PUBACK may still come
        self._delivered = 0  # contiguous PUBACKed prefix; the cursor follows it
        self._persisted = 0
        self._next_after = 0  # last seq published on this connection
        self._epoch = 0  # bumped whenever what is in flight is forgotten
        self._window = config.inflight_max_batches
        self._broker_max_bytes: int | None = None
        self._learned_max_bytes: int | None = None
        self._paused_until = 0.0
        self._rejection: int | str | None = None  # reason code (or text) of this episode
        self._no_subscribers = False
        self._audits: list[dict[str, Any]] = []

    # -- the interface the agent uses ------------------------------------------------------

    async def __aenter__(self) -> MqttUplink:
        if self._started:
            raise RuntimeError("MqttUplink entered twice")
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._delivered = self._persisted = self._next_after = await asyncio.to_thread(
            lambda: self.outbox.acked_through
        )
        s = self._settings
        if s.tls and s.insecure_skip_verify:
            log.warning("uplink.tls_unverified host=%s port=%d", s.host, s.port)
        log.info(
            "uplink.starting transport=mqtt host=%s port=%d client_id=%s tls=%s protocol=%s",
            s.host,
            s.port,
            s.client_id,
            s.tls,
            self.config.protocol,
        )
        self._link.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Disconnect and end paho's thread; keep the cursor reached. Takes at most about the
        connect timeout when a connection attempt is under way."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        await self._link.stop()
        self._connected = False
        await self._persist()
        log.info("uplink.stopped delivered_through=%d", self._delivered)

    def wake(self) -> None:
        """New records are committed (called by the recorder)."""
        self._changed.set()

    async def run(self) -> None:
        while True:
            self._changed.clear()
            await self._step(seal=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._idle_secs()):
                    await self._changed.wait()

    async def flush(self, deadline_secs: float) -> bool:
        """Publish until everything is PUBACKed or the deadline passes; True when all delivered.

        Called after :meth:`run` has ended, when the recorder is closed: refusals are logged
        but not sealed. Like the HTTP uplink's, it gives up at once while the uplink is failing
        (not connected, or a refusal is being backed off): the buffer keeps the records."""
        loop = asyncio.get_running_loop()
        failing = self.stats.last_error is not None
        if failing and (not self._connected or loop.time() < self._paused_until):
            log.warning("uplink.flush_incomplete reason=%s", self.stats.last_error)
            return False
        try:
            async with asyncio.timeout_at(loop.time() + deadline_secs):
                while True:
                    self._changed.clear()
                    await self._step(seal=False)
                    if not self._inflight and self._delivered >= self.outbox.last_seq:
                        return True
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._idle_secs()):
                            await self._changed.wait()
        except TimeoutError:
            log.warning(
                "uplink.flush_incomplete delivered_through=%d last_seq=%d connected=%s",
                self._delivered,
                self.outbox.last_seq,
                self._connected,
            )
            return False
        finally:
            await self._persist()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def published_through(self) -> int:
        """The last ``seq`` published on this connection (acknowledged or not)."""
        return self._next_after

    # -- the event-loop side -----------------------------------------------------------------

    async def _step(self, *, seal: bool) -> None:
        if seal:
            while self._audits:
                await self.record(Fact("audit", utc_now(), self._audits[0]))
                del self._audits[0]
        await self._persist()
        await self._fill()

    async def _persist(self) -> None:
        through = self._delivered
        if through > self._persisted:
            try:
                await asyncio.to_thread(self.outbox.set_acked_through, through)
            except BufferWriteError as exc:
                # A full disk must not take the uplink down; the cursor is written once the
                # disk takes it (until then a restart offers those batches again, harmlessly).
                log.warning("uplink.cursor_write_failed error=%s", exc)
                return
            self._persisted = through

    async def _fill(self) -> None:
        """Publish batches from the last one published while the window has room."""
        while self._can_publish():
            epoch, budget = self._epoch, self._budget()
            batch = await asyncio.to_thread(
                read_batch, self.outbox, self._next_after, self.config.batch_max_records, budget
            )
            if epoch != self._epoch:
                continue  # a refusal or the link forgot what was in flight while reading
            if batch is None or not self._can_publish():
                return
            if len(batch.payload) > budget:
                reason = (
                    f"record {batch.first} is {len(batch.payload)} bytes gzipped; "
                    f"the broker takes at most {budget}"
                )
                self._refused(batch.first, batch.last, None, reason)
                return
            self._publish(batch)

    def _can_publish(self) -> bool:
        assert self._loop is not None
        return (
            self._connected
            and len(self._inflight) + len(self._stale) < self._window
            and self._loop.time() >= self._paused_until
        )

    def _budget(self) -> int:
        budget = self.config.max_payload_kb * 1024
        if self._broker_max_bytes is not None:
            budget = min(budget, self._broker_max_bytes - _HEADER_BYTES - len(self.topic))
        if self._learned_max_bytes is not None:
            budget = min(budget, self._learned_max_bytes)
        return max(budget, 1)

    def _publish(self, batch: Batch) -> None:
        sent = self._link.publish(self.topic, batch.payload)
        if isinstance(sent, str):
            # Not when the link dropped and we have not heard yet: paho holds the message until
            # the next CONNACK, where it is dropped and the batch published again.
            self._retry_later("connect", f"publish failed: {sent}")
            return
        self._inflight[sent] = _InFlight(batch.first, batch.last, len(batch.payload))
        self._next_after = batch.last

    def _idle_secs(self) -> float:
        assert self._loop is not None
        wait = self._paused_until - self._loop.time()
        return min(_IDLE_SECS, wait) if wait > 0 else _IDLE_SECS

    def _rewind(self) -> None:
        """Forget what is in flight; publishing starts again after the delivered prefix."""
        self._stale.update(self._inflight)
        self._inflight.clear()
        self._next_after = self._delivered
        self._epoch += 1

    def _retry_later(self, kind: ErrorKind, reason: str) -> None:
        assert self._loop is not None
        reason = self._redact(reason)
        self.stats.failed(kind, reason)
        self._rewind()
        self._paused_until = self._loop.time() + self._backoff.next_delay()

    def _refused(self, first: int, last: int, code: int | None, reason: str) -> None:
        """The broker will not take this batch: seal that once per episode, retry later."""
        reason = self._redact(reason)
        episode = reason if code is None else code
        if self._rejection != episode:
            log.error("uplink.rejected first_seq=%d last_seq=%d error=%s", first, last, reason)
            audit: dict[str, Any] = {"event": UPLINK_REJECTED, "transport": "mqtt"}
            if code is not None:
                audit["reason_code"] = code
            audit |= {"error": reason, "first_seq": first, "last_seq": last}
            self._audits.append(audit)
        self._rejection = episode
        self._retry_later("rejected", reason)
        self._changed.set()

    def _on_link_up(self, up: LinkUp) -> None:
        if self._stopping:
            return
        self._connected = True
        self._inflight.clear()
        self._stale.clear()
        self._next_after = self._delivered
        self._epoch += 1
        self._window = min(self.config.inflight_max_batches, up.receive_maximum or 65535)
        self._broker_max_bytes = up.max_packet_bytes
        s = self._settings
        log.info(
            "uplink.connected host=%s port=%d session_present=%s window=%d max_bytes=%d",
            s.host,
            s.port,
            up.session_present,
            self._window,
            self._budget(),
        )
        self._changed.set()

    def _on_link_down(self, down: LinkDown) -> None:
        if self._stopping:
            return
        kind, error = _described(down)
        error = self._redact(error)
        self._connected = False
        if down.how == "by_broker" and down.code == _PACKET_TOO_LARGE and self._inflight:
            largest = max(sent.size for sent in self._inflight.values())
            self._learned_max_bytes = max(1, largest // 2)
            first = min(sent.first for sent in self._inflight.values())
            last = max(sent.last for sent in self._inflight.values())
            self._refused(first, last, _PACKET_TOO_LARGE, error)
            self._paused_until = 0.0  # smaller batches can go as soon as the link is back
        else:
            self.stats.failed(kind, error)
        self._inflight.clear()
        self._stale.clear()
        self._next_after = self._delivered
        self._epoch += 1
        self._changed.set()

    def _on_puback(self, mid: int, code: int, reason: str) -> None:
        sent = self._inflight.get(mid)
        if sent is None:
            self._stale.discard(mid)
            self._changed.set()
            return
        if code >= 0x80:
            self._refused(sent.first, sent.last, code, f"{reason} (reason code {code:#04x})")
            return
        sent.acked = True
        if code == _NO_SUBSCRIBERS and not self._no_subscribers:
            self._no_subscribers = True
            log.warning("uplink.no_subscribers topic=%s first_seq=%d", self.topic, sent.first)
            self._audits.append(
                {"event": UPLINK_NO_SUBSCRIBERS, "topic": self.topic, "first_seq": sent.first}
            )
        elif code != _NO_SUBSCRIBERS and self._no_subscribers:
            self._no_subscribers = False
            log.warning("uplink.subscribers topic=%s first_seq=%d", self.topic, sent.first)
        while self._inflight:
            mid, oldest = next(iter(self._inflight.items()))
            if not oldest.acked:
                break
            del self._inflight[mid]
            self._delivered = oldest.last
            self.stats.delivered(oldest.last)
            self._rejection = None
            self._backoff.reset()
        self._changed.set()

    def _build_link(self) -> PahoLink:
        try:
            return PahoLink(
                self._settings,
                on_up=self._on_link_up,
                on_down=self._on_link_down,
                on_puback=self._on_puback,
                # paho's own messages go to debug: it logs every failed reconnect attempt as an
                # error, and the uplink logs state changes only (with paho's last error as the
                # reason).
                paho_log=paho_log,
                paho_log_as_debug=True,
                session_expiry_secs=(
                    self.config.session_expiry_secs if self.config.protocol == "5" else None
                ),
                connect_timeout_secs=self.config.connect_timeout_secs,
            )
        except (OSError, ssl.SSLError) as exc:
            raise MqttUplinkError(f"uplink: TLS files: {exc}") from exc


def _described(down: LinkDown) -> tuple[ErrorKind, str]:
    """The failure's kind and its words for the log and the stats."""
    if down.how == "refused":
        return "broker", down.error
    if down.how == "by_broker":
        return "broker", f"disconnected by the broker: {down.reason}"
    if down.how == "failed":
        return classify_error(down.exception or down.error), down.error
    error = f"connection lost: {down.paho_error or down.reason}"
    return classify_error(error), error


def _settings(config: MqttUplinkConfig, client_id: str) -> MqttSettings:
    password = config.password.get_secret_value() if config.password is not None else None
    if config.password_file is not None:
        try:
            lines = config.password_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise MqttUplinkError(f"uplink.password_file: {exc.strerror or exc}") from exc
        password = lines[0].strip() if lines else ""
    try:
        return MqttSettings(
            host=config.host,
            port=config.port,
            client_id=client_id,
            keepalive_secs=config.keepalive_secs,
            tls=config.tls,
            ca_file=config.ca_file,
            cert_file=config.cert_file,
            key_file=config.key_file,
            insecure_skip_verify=config.tls and not config.tls_verify,
            username=config.username,
            password=password,
            reconnect_min_secs=config.backoff_initial_secs,
            reconnect_max_secs=max(config.backoff_max_secs, config.backoff_initial_secs),
        )
    except ValueError as exc:
        raise MqttUplinkError(str(exc)) from exc
