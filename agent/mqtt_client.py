"""MQTT publishing of retained state (CONTRACT §4): the broker holds the latest payload per topic.

:class:`RetainedPublisher` keeps the *desired* retained state, one payload per topic, and makes
the broker hold it: every payload goes out retained with QoS 1 and counts as delivered when its
PUBACK arrives. The latest payload per topic wins; a superseded payload still in flight is
simply overtaken.

Reconnects. paho-mqtt reconnects on its own with capped exponential backoff. On every CONNACK
the publisher drops whatever paho still had queued (``drop_out_messages``: paho may or may not
keep unacknowledged messages across reconnects, and they may be stale) and sends, once, the
latest payload of every topic not yet acknowledged. When the broker reports no stored session
(``session_present`` false: typically a broker restarted without persistence, which lost its
retained messages too), it sends every desired topic again, so stack lights and HMIs that
subscribe afterwards see the current state without the caller doing anything.

Threads. paho runs its network loop in a thread of its own (``loop_start``). Its callbacks do
one thing there: hand the event to the asyncio loop with ``call_soon_threadsafe``. All of the
publisher's state is therefore owned by the event-loop thread and needs no lock. (A lock would
deadlock: paho calls ``on_publish`` holding its message mutex, which ``Client.publish`` takes
too.) The only paho call made from its own thread is ``drop_out_messages`` in ``on_connect``,
which is what paho documents it for. Every public method must be called from the event loop.

Failures. Network trouble never raises: it is logged once per episode (``mqtt.disconnected``,
``mqtt.connected``) and reported through ``on_state``. Bad arguments (a topic with wildcards,
inconsistent settings) raise :class:`ValueError` at once. The password is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from ._retry import Episode

__all__ = ["MqttSettings", "RetainedPublisher", "StateEvent", "call_in_loop"]

log = logging.getLogger(__name__)

StateEvent = Literal["connected", "disconnected", "publish_failed"]
"""What ``on_state`` reports, once per episode: the first of a run of the same kind."""

_MAX_TOPIC_BYTES = 65535
_MAX_PAYLOAD_BYTES = 268_435_455


@dataclass(frozen=True, kw_only=True)
class MqttSettings:
    """Where and how to connect. TLS verifies the broker unless ``insecure_skip_verify``."""

    host: str
    port: int = 1883
    client_id: str
    """Stable across restarts: the broker keeps the session (``clean_session`` false) by it."""
    keepalive_secs: int = 30
    tls: bool = False
    ca_file: Path | None = None
    """CA bundle for the broker's certificate; the system trust store when ``None``."""
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    reconnect_min_secs: float = 0.5
    reconnect_max_secs: float = 30.0

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("mqtt: host is empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"mqtt: port {self.port} is out of range")
        if not self.client_id:
            raise ValueError("mqtt: client_id is empty (a stable id keeps the session)")
        if self.keepalive_secs < 1:
            raise ValueError("mqtt: keepalive_secs must be at least 1")
        if not 0 < self.reconnect_min_secs <= self.reconnect_max_secs:
            raise ValueError("mqtt: need 0 < reconnect_min_secs <= reconnect_max_secs")
        if not self.tls and (
            self.ca_file or self.cert_file or self.key_file or self.insecure_skip_verify
        ):
            raise ValueError("mqtt: ca_file, cert_file, key_file, insecure_skip_verify need tls")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("mqtt: key_file without cert_file")
        if self.password is not None and self.username is None:
            raise ValueError("mqtt: password without username")


@dataclass
class _Desired:
    payload: bytes
    version: int
    acked: bool = False
    mid: int | None = None
    """paho message id of the send of *this* version still awaiting its PUBACK."""


class RetainedPublisher:
    """Keeps the desired retained state per topic and makes the broker hold it."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        on_state: Callable[[str, str | None], None] | None = None,
    ) -> None:
        """Build the client; no I/O except reading the TLS files, so bad ones fail here.

        ``on_state(event, error)`` is called from the event-loop thread with ``"connected"``
        (error ``None``), ``"disconnected"`` or ``"publish_failed"`` (with the error text), once
        per episode, so the caller can seal one audit record for each.
        """
        self._settings = settings
        self._on_state = on_state
        self._topics: dict[str, _Desired] = {}
        self._inflight: dict[int, tuple[str, int]] = {}  # mid -> (topic, version)
        self._all_acked = asyncio.Event()
        self._all_acked.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._reported: StateEvent | None = None
        self._publishing = Episode(
            log,
            "mqtt.publish_failed topic=%s error=%s",
            "mqtt.publish_recovered topic=%s",
            levels=(logging.WARNING, logging.INFO),
        )
        self._started = False
        self._stopping = False

        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            clean_session=False,
            protocol=paho.MQTTv311,
            reconnect_on_failure=True,
        )
        client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        # No in-flight window: the desired state is small, and paho's window counter is not
        # adjusted by drop_out_messages().
        client.max_inflight_messages_set(0)
        # paho sleeps with float arithmetic; its int annotation is narrower than the code.
        client.reconnect_delay_set(
            settings.reconnect_min_secs,  # type: ignore[arg-type]
            settings.reconnect_max_secs,  # type: ignore[arg-type]
        )
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            client.tls_set_context(_tls_context(settings))
        client.on_connect = self._paho_on_connect
        client.on_connect_fail = self._paho_on_connect_fail
        client.on_disconnect = self._paho_on_disconnect
        client.on_publish = self._paho_on_publish
        self._client = client

    # -- public surface (event-loop thread) ------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background and return at once, broker up or not."""
        if self._started:
            raise RuntimeError("RetainedPublisher.start() called twice")
        self._started = True
        self._loop = asyncio.get_running_loop()
        s = self._settings
        if s.tls and s.insecure_skip_verify:
            log.warning("mqtt.tls_unverified host=%s port=%d", s.host, s.port)
        log.info(
            "mqtt.starting host=%s port=%d client_id=%s tls=%s", s.host, s.port, s.client_id, s.tls
        )
        self._client.connect_async(s.host, s.port, s.keepalive_secs)
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        """Make ``payload`` the retained state of ``topic`` (QoS 1). Never blocks or raises for
        network trouble; sent now if connected, else on the next connect."""
        _check_topic(topic)
        if len(payload) > _MAX_PAYLOAD_BYTES:
            raise ValueError(f"mqtt: payload of {len(payload)} bytes is too large")
        previous = self._topics.get(topic)
        version = previous.version + 1 if previous is not None else 1
        self._topics[topic] = _Desired(bytes(payload), version)
        self._all_acked.clear()
        if self._connected:
            self._send(topic)

    def clear(self, topic: str) -> None:
        """Delete the retained message of ``topic`` (an empty retained payload, QoS 1)."""
        self.publish(topic, b"")

    async def wait_delivered(self, timeout: float) -> bool:  # noqa: ASYNC109 (a bool, not a raise)
        """True once every topic's latest payload has its PUBACK; False after ``timeout``."""
        if self.undelivered == 0:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._all_acked.wait()
        except TimeoutError:
            return False
        return True

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def undelivered(self) -> int:
        """Topics whose latest payload the broker has not acknowledged yet."""
        return sum(1 for d in self._topics.values() if not d.acked)

    async def stop(self) -> None:
        """Disconnect and end paho's thread. Undelivered state is not waited for: call
        :meth:`wait_delivered` first for a bounded flush. Takes at most about paho's connect
        timeout (5 s) when a connection attempt is under way."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        # A connection attempt racing the first disconnect() may have completed: close it too.
        self._client.disconnect()
        self._connected = False
        log.info("mqtt.stopped undelivered=%d", self.undelivered)

    async def __aenter__(self) -> RetainedPublisher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- event-loop side ----------------------------------------------------------------------

    def _send(self, topic: str) -> None:
        desired = self._topics[topic]
        desired.acked = False
        self._all_acked.clear()
        info = self._client.publish(topic, desired.payload, qos=1, retain=True)
        if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            # NO_CONN: the link dropped and we have not heard yet; paho holds the message
            # until the next CONNACK, where _paho_on_connect drops it and we send it again.
            desired.mid = info.mid
            self._inflight[info.mid] = (topic, desired.version)
            return
        desired.mid = None  # sent again on the next connect
        error = paho.error_string(info.rc)
        if self._publishing.fail(error, topic):
            self._report("publish_failed", error)

    def _on_link_up(self, session_present: bool, dropped: list[int]) -> None:
        if self._stopping:
            return
        for mid in dropped:
            ref = self._inflight.pop(mid, None)
            if ref is not None and (desired := self._topics.get(ref[0])) and desired.mid == mid:
                desired.mid = None
        self._connected = True
        resend = [
            topic
            for topic, desired in self._topics.items()
            if desired.mid is None and (not desired.acked or not session_present)
        ]
        s = self._settings
        if self._reported != "connected":
            log.info(
                "mqtt.connected host=%s port=%d session_present=%s resend=%d",
                s.host,
                s.port,
                session_present,
                len(resend),
            )
        for topic in resend:
            self._send(topic)
        if self._reported != "connected":
            self._report("connected", None)

    def _on_link_down(self, error: str) -> None:
        if self._stopping:
            return
        self._connected = False
        if self._reported != "disconnected":
            s = self._settings
            log.warning("mqtt.disconnected host=%s port=%d error=%s", s.host, s.port, error)
            self._report("disconnected", error)

    def _on_puback(self, mid: int) -> None:
        ref = self._inflight.pop(mid, None)
        if ref is None:
            return
        topic, version = ref
        desired = self._topics.get(topic)
        if desired is not None and desired.version == version:
            desired.acked = True
            desired.mid = None
        self._publishing.recover(topic)
        if self.undelivered == 0:
            self._all_acked.set()

    def _report(self, event: StateEvent, error: str | None) -> None:
        if event != "publish_failed":
            self._reported = event
        if self._on_state is not None:
            self._on_state(event, error)

    # -- paho's network thread: hand over to the event loop, nothing else ----------------------

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        call_in_loop(self._loop, callback, *args)

    def _paho_on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        if reason_code.is_failure:
            self._post(self._on_link_down, f"connection refused: {reason_code}")
            return
        # Before paho re-sends its own queue right after this callback returns.
        dropped = [message.mid for message in client.drop_out_messages()]
        self._post(self._on_link_up, flags.session_present, dropped)

    def _paho_on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho calls this inside its ``except OSError`` block, so the error is at hand.
        exc = sys.exception()
        error = f"{type(exc).__name__}: {exc}" if exc is not None else "connection failed"
        self._post(self._on_link_down, error)

    def _paho_on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        self._post(self._on_link_down, f"connection lost: {reason_code}")

    def _paho_on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        self._post(self._on_puback, mid)


def call_in_loop(
    loop: asyncio.AbstractEventLoop | None, callback: Callable[..., None], *args: Any
) -> None:
    """From paho's network thread: hand an event to the event loop (dropped once it closed)."""
    if loop is None or loop.is_closed():
        return
    with contextlib.suppress(RuntimeError):  # the loop closed between check and call
        loop.call_soon_threadsafe(callback, *args)


def _check_topic(topic: str) -> None:
    if not topic or "+" in topic or "#" in topic or "\0" in topic:
        raise ValueError(f"mqtt: {topic!r} is not a topic name to publish to")
    if len(topic.encode("utf-8")) > _MAX_TOPIC_BYTES:
        raise ValueError("mqtt: topic is too long")


def _tls_context(settings: MqttSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=settings.ca_file)
    if settings.cert_file is not None:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    if settings.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
