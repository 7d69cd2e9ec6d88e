"""paho-mqtt bridged into asyncio, in one place: :class:`PahoLink`, :class:`MqttSettings`.

Both MQTT clients of the agent (:class:`~gxpgate.agent.alarms.mqtt_client.RetainedPublisher` for
alarms,
:class:`~gxpgate.agent.uplink.mqtt.MqttUplink` for evidence) drive paho through a :class:`PahoLink`.

Threads. paho runs its network loop in a thread of its own (``loop_start``) and reconnects there
with capped exponential backoff. Its callbacks do one thing in that thread: hand the event to
the asyncio loop with ``call_soon_threadsafe`` (:func:`call_in_loop`). All of the owner's state
is therefore owned by the event-loop thread and needs no lock. (A lock would deadlock: paho
calls ``on_publish`` holding its message mutex, which ``Client.publish`` takes too.) The only
paho call made from its own thread is ``drop_out_messages`` in ``on_connect``, which is what
paho documents it for: at every CONNACK the messages paho still had queued are dropped (paho may
or may not keep unacknowledged messages across reconnects, and they may be stale), and the owner
publishes again what it still wants delivered. The bridge's own two flags (a refused CONNACK,
paho's last error message) are touched only in paho's thread.

What the owner is told, always on the event loop: :class:`LinkUp` (a CONNACK that accepted),
:class:`LinkDown` (a refused CONNACK, a failed connection attempt, a DISCONNECT from the broker,
a connection lost; the disconnect that follows a refused CONNACK is not told twice) and each
PUBACK. paho's exceptions and reason codes do not leave this module; the owner words them.

Bad settings raise :class:`ValueError` at once; unreadable TLS files raise :class:`OSError` or
:class:`ssl.SSLError` when the link is built. The password is never logged.
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
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["LinkDown", "LinkUp", "MqttSettings", "PahoLink", "call_in_loop", "tls_context"]


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


@dataclass(frozen=True, slots=True)
class LinkUp:
    """The broker accepted the connection (its CONNACK)."""

    session_present: bool
    dropped: list[int]
    """Message ids paho still had queued, dropped before it could send them again."""
    receive_maximum: int | None = None
    """MQTT 5: how many QoS 1 messages the broker takes in flight; None: not said."""
    max_packet_bytes: int | None = None
    """MQTT 5: the largest packet the broker takes; None: not said."""


@dataclass(frozen=True, slots=True)
class LinkDown:
    """The connection is gone, or never came up."""

    how: Literal["refused", "failed", "by_broker", "lost"]
    """``refused``: a CONNACK with a failure code; ``failed``: the connection attempt failed
    (refused, unreachable, TLS, timeout); ``by_broker``: a DISCONNECT from the broker;
    ``lost``: any other end of the connection."""
    reason: str
    """The reason code's text; for ``failed``, the error (``"ConnectionRefusedError: …"``)."""
    code: int = 0
    """The reason code's value (0 for ``failed``)."""
    exception: BaseException | None = None
    """For ``failed``: the error paho caught, when there was one."""
    paho_error: str | None = None
    """For ``lost``: paho's last error message before it, its only word on why (paho keeps no
    exception)."""

    @property
    def error(self) -> str:
        """In plain words: ``connection refused: …``, the error, or ``connection lost: …``."""
        if self.how == "refused":
            return f"connection refused: {self.reason}"
        if self.how == "failed":
            return self.reason
        return f"connection lost: {self.reason}"


class PahoLink:
    """One paho client, its network thread and its callbacks, for one owner on one event loop.

    ``on_up``, ``on_down`` and ``on_puback(mid, reason_code, reason)`` are called on the event
    loop's thread, never in paho's. Building the link does no I/O except reading the TLS files.
    Call :meth:`start` once, from the event loop, and :meth:`stop` at the end.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        on_up: Callable[[LinkUp], None],
        on_down: Callable[[LinkDown], None],
        on_puback: Callable[[int, int, str], None],
        paho_log: logging.Logger,
        paho_log_as_debug: bool = False,
        session_expiry_secs: int | None = None,
        connect_timeout_secs: float | None = None,
    ) -> None:
        """``session_expiry_secs``: MQTT 5, with a session kept that long (``clean_start``
        false); None: MQTT 3.1.1 with a persistent session (``clean_session`` false).
        ``paho_log`` gets paho's own messages, at paho's levels or all at debug."""
        self.settings = settings
        self._on_up = on_up
        self._on_down = on_down
        self._on_puback = on_puback
        self._paho_log = paho_log
        self._paho_log_as_debug = paho_log_as_debug
        self._session_expiry_secs = session_expiry_secs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refused = False  # paho's thread only: the disconnect that follows a refusal
        self._paho_error: str | None = None  # paho's thread only: its last error message
        v5 = session_expiry_secs is not None
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            clean_session=None if v5 else False,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            reconnect_on_failure=True,
        )
        client.on_log = self._paho_on_log
        if not paho_log_as_debug:
            client.enable_logger(paho_log)
        # The owner keeps its own window, if any; paho's in-flight counter is not adjusted by
        # drop_out_messages().
        client.max_inflight_messages_set(0)
        # paho sleeps with float arithmetic; its int annotation is narrower than the code.
        client.reconnect_delay_set(
            settings.reconnect_min_secs,  # type: ignore[arg-type]
            settings.reconnect_max_secs,  # type: ignore[arg-type]
        )
        if connect_timeout_secs is not None:
            client.connect_timeout = connect_timeout_secs
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            client.tls_set_context(tls_context(settings))
        client.on_connect = self._paho_on_connect
        client.on_connect_fail = self._paho_on_connect_fail
        client.on_disconnect = self._paho_on_disconnect
        client.on_publish = self._paho_on_publish
        self.client = client
        """The paho client, for what the owner tunes itself (e.g. queue limits in tests)."""

    # -- the event loop's side ---------------------------------------------------------------

    def start(self) -> None:
        """Start connecting in paho's thread and return at once, broker up or not."""
        self._loop = asyncio.get_running_loop()
        s = self.settings
        if self._session_expiry_secs is not None:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self._session_expiry_secs
            self.client.connect_async(
                s.host, s.port, s.keepalive_secs, clean_start=False, properties=properties
            )
        else:
            self.client.connect_async(s.host, s.port, s.keepalive_secs)
        self.client.loop_start()

    async def stop(self) -> None:
        """Disconnect and end paho's thread. Takes at most about the connect timeout when a
        connection attempt is under way."""
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)
        # A connection attempt racing the first disconnect() may have completed: close it too.
        self.client.disconnect()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int | str:
        """Hand a QoS 1 message to paho: its message id, or paho's error text when paho would
        not take it. Not connected is taken: paho holds the message until the next CONNACK,
        where it is dropped (:attr:`LinkUp.dropped`) for the owner to publish again."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            return info.mid
        return paho.error_string(info.rc)

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        call_in_loop(self._loop, callback, *args)

    # -- paho's network thread: hand over to the event loop, nothing else --------------------

    def _paho_on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._refused = True
            self._post(self._on_down, LinkDown("refused", str(reason_code), reason_code.value))
            return
        self._refused = False
        # Before paho re-sends its own queue right after this callback returns.
        dropped = [message.mid for message in client.drop_out_messages()]
        up = LinkUp(
            flags.session_present,
            dropped,
            getattr(properties, "ReceiveMaximum", None),
            getattr(properties, "MaximumPacketSize", None),
        )
        self._post(self._on_up, up)

    def _paho_on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho calls this inside its ``except OSError`` block, so the error is at hand.
        exc = sys.exception()
        error = f"{type(exc).__name__}: {exc}" if exc is not None else "connection failed"
        self._paho_error = None
        self._post(self._on_down, LinkDown("failed", error, exception=exc))

    def _paho_on_log(self, client: paho.Client, userdata: Any, level: int, message: str) -> None:
        if level == paho.MQTT_LOG_ERR:
            self._paho_error = message
        if self._paho_log_as_debug:
            self._paho_log.debug("%s", message)

    def _paho_on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        if self._refused:  # already told with the CONNACK's better reason
            self._refused = False
            self._paho_error = None
            return
        if flags.is_disconnect_packet_from_server:
            down = LinkDown("by_broker", str(reason_code), reason_code.value)
        else:
            cause, self._paho_error = self._paho_error, None
            down = LinkDown("lost", str(reason_code), reason_code.value, paho_error=cause)
        self._post(self._on_down, down)

    def _paho_on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        self._post(self._on_puback, mid, reason_code.value, str(reason_code))


def call_in_loop(
    loop: asyncio.AbstractEventLoop | None, callback: Callable[..., None], *args: Any
) -> None:
    """From paho's network thread: hand an event to the event loop (dropped once it closed)."""
    if loop is None or loop.is_closed():
        return
    with contextlib.suppress(RuntimeError):  # the loop closed between check and call
        loop.call_soon_threadsafe(callback, *args)


def tls_context(settings: MqttSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=settings.ca_file)
    if settings.cert_file is not None:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    if settings.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
