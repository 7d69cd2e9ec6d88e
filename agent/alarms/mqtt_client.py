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

Threads. paho runs in a thread of its own, bridged by :class:`gxpgate.agent._paho.PahoLink`: its
events reach the publisher on the event loop, so the publisher's state is owned by the
event-loop thread and needs no lock. Every public method must be called from the event loop.

Failures. Network trouble never raises: it is logged once per episode (``mqtt.disconnected``,
``mqtt.connected``) and reported through ``on_state``. Bad arguments (a topic with wildcards,
inconsistent settings) raise :class:`ValueError` at once. The password is never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from gxpgate.agent._paho import MqttSettings, PahoLink
from gxpgate.agent._retry import Episode

__all__ = ["MqttSettings", "RetainedPublisher", "StateEvent"]

log = logging.getLogger(__name__)

StateEvent = Literal["connected", "disconnected", "publish_failed"]
"""What ``on_state`` reports, once per episode: the first of a run of the same kind."""

_MAX_TOPIC_BYTES = 65535
_MAX_PAYLOAD_BYTES = 268_435_455


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
        self._link = PahoLink(
            settings,
            on_up=lambda up: self._on_link_up(up.session_present, up.dropped),
            on_down=lambda down: self._on_link_down(down.error),
            on_puback=lambda mid, _code, _reason: self._on_puback(mid),
            paho_log=logging.getLogger(f"{__name__}.paho"),
        )

    # -- public surface (event-loop thread) ------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background and return at once, broker up or not."""
        if self._started:
            raise RuntimeError("RetainedPublisher.start() called twice")
        self._started = True
        s = self._settings
        if s.tls and s.insecure_skip_verify:
            log.warning("mqtt.tls_unverified host=%s port=%d", s.host, s.port)
        log.info(
            "mqtt.starting host=%s port=%d client_id=%s tls=%s", s.host, s.port, s.client_id, s.tls
        )
        self._link.start()

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
        await self._link.stop()
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
        sent = self._link.publish(topic, desired.payload, retain=True)
        if isinstance(sent, int):
            # Also when the link dropped and we have not heard yet: paho holds the message
            # until the next CONNACK, where it is dropped and we send it again.
            desired.mid = sent
            self._inflight[sent] = (topic, desired.version)
            return
        desired.mid = None  # sent again on the next connect
        if self._publishing.fail(sent, topic):
            self._report("publish_failed", sent)

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


def _check_topic(topic: str) -> None:
    if not topic or "+" in topic or "#" in topic or "\0" in topic:
        raise ValueError(f"mqtt: {topic!r} is not a topic name to publish to")
    if len(topic.encode("utf-8")) > _MAX_TOPIC_BYTES:
        raise ValueError("mqtt: topic is too long")
