"""The quality service's side of the MQTT uplink (CONTRACT §4): a consumer of evidence batches.

:class:`MqttEvidenceConsumer` subscribes to ``gxpgate/+/evidence`` with QoS 1 and a persistent
session, and hands every batch to :meth:`QualityServiceSimulator.accept_batch
<gxpgate.simulators.quality_service.QualityServiceSimulator.accept_batch>`: the same checks (hashes,
signatures, ``prev`` links, ``seq`` without gaps), the same de-duplication by (``gw``,
``chain``, ``seq``) and the same store as batches POSTed over HTTP.

Order. A batch that starts beyond what the store holds for its chain (one before it has not
arrived: it may still be queued at the broker, or a broker without persistence lost it) is
held in memory and applied once the gap is filled; :attr:`MqttEvidenceConsumer.held` shows
what is waiting. The gateway never re-sends a batch the broker acknowledged, so a gap that
stays is a loss to report, not to wait out.

Acknowledgement. paho sends the PUBACK for a message after ``on_message`` returns, i.e. after
the batch is stored (or held): the broker keeps, and delivers again after a reconnect, whatever
the consumer has not acknowledged.

Threads. paho's network thread (``loop_start``) runs the callbacks; the simulator is
thread-safe, and the consumer's own counters are guarded by one lock.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, Self

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gxpgate.simulators.quality_service import BatchOutcome, QualityServiceSimulator

__all__ = ["EVIDENCE_FILTER", "MqttEvidenceConsumer"]

logger = logging.getLogger("gxpgate.simulators.mqtt_consumer")

EVIDENCE_FILTER = "gxpgate/+/evidence"


class MqttEvidenceConsumer:
    """Feeds a running :class:`QualityServiceSimulator` from an MQTT broker."""

    def __init__(
        self,
        sink: QualityServiceSimulator,
        host: str,
        port: int = 1883,
        *,
        client_id: str = "gxpgate-quality-service",
        protocol: Literal["5", "3.1.1"] = "5",
        session_expiry_secs: int = 7 * 86400,
        tls: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
        topic_filter: str = EVIDENCE_FILTER,
        on_batch: Callable[[BatchOutcome], None] | None = None,
    ) -> None:
        self.sink = sink
        self.host = host
        self.port = port
        self.topic_filter = topic_filter
        self.on_batch = on_batch
        self._v5 = protocol == "5"
        self._session_expiry = session_expiry_secs
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._held: dict[tuple[str, str], dict[int, bytes]] = {}
        self.stats: dict[str, int] = {
            "messages": 0,
            "records": 0,
            "held": 0,
            "refused": 0,
            "connects": 0,
            "largest_payload": 0,
        }
        """``messages`` and ``records`` received (duplicates included), batches ``held`` for a
        gap, batches ``refused`` by the checks (an integrity incident in the simulator),
        ``connects``, and the ``largest_payload`` seen, in bytes."""
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=None if self._v5 else False,
            protocol=paho.MQTTv5 if self._v5 else paho.MQTTv311,
        )
        client.enable_logger(logging.getLogger(f"{logger.name}.paho"))
        client.reconnect_delay_set(1, 10)
        if username is not None:
            client.username_pw_set(username, password)
        if tls is not None:
            client.tls_set_context(tls)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        self._started = False

    def start(self, timeout: float = 10.0) -> Self:
        """Connect and subscribe; return once the broker confirmed the subscription."""
        if self._started:
            raise RuntimeError("consumer already started")
        self._started = True
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self._session_expiry
            self._client.connect_async(
                self.host, self.port, 30, clean_start=False, properties=properties
            )
        else:
            self._client.connect_async(self.host, self.port, 30)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise TimeoutError(f"no subscription at {self.host}:{self.port} in {timeout}s")
        return self

    def stop(self) -> None:
        """Disconnect (the broker keeps the session) and end paho's thread."""
        if not self._started:
            return
        self._started = False
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def held(self) -> dict[tuple[str, str], list[int]]:
        """First ``seq`` of each batch waiting for a gap to be filled, per (gw, chain)."""
        with self._lock:
            return {key: sorted(batches) for key, batches in self._held.items() if batches}

    # -- paho's thread -----------------------------------------------------------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        if reason_code.is_failure:
            logger.warning("mqtt consumer refused: %s", reason_code)
            return
        with self._lock:
            self.stats["connects"] += 1
        logger.info("mqtt consumer connected session_present=%s", flags.session_present)
        # Subscribing again is harmless, and needed when the broker lost the session.
        if self._v5:
            client.subscribe(self.topic_filter, options=SubscribeOptions(qos=1))
        else:
            client.subscribe(self.topic_filter, qos=1)

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any
    ) -> None:
        if all(not code.is_failure for code in reason_codes):
            self._subscribed.set()
        else:
            logger.warning("mqtt consumer subscription refused: %s", reason_codes)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        payload = bytes(message.payload)
        outcome = self.sink.accept_batch(payload)
        with self._lock:
            self.stats["messages"] += 1
            self.stats["records"] += max(0, outcome.last_seq - outcome.first_seq + 1)
            self.stats["largest_payload"] = max(self.stats["largest_payload"], len(payload))
        self._settle(payload, outcome)
        if self.on_batch is not None:
            self.on_batch(outcome)

    def _settle(self, payload: bytes, outcome: BatchOutcome) -> None:
        if outcome.gw is None or outcome.chain is None:
            self._refused(outcome)
            return
        key = (outcome.gw, outcome.chain)
        if outcome.status != 200:
            self._refused(outcome)
            return
        acked = int(outcome.answer["acked_through"])
        if acked < outcome.first_seq - 1:
            with self._lock:
                self.stats["held"] += 1
                self._held.setdefault(key, {})[outcome.first_seq] = payload
            logger.info(
                "mqtt consumer holds seq %d-%d: the store has %d",
                outcome.first_seq,
                outcome.last_seq,
                acked,
            )
            return
        while True:  # apply what was held and now follows on
            with self._lock:
                waiting = self._held.get(key, {})
                ready = [first for first in waiting if first <= acked + 1]
                batches = [waiting.pop(first) for first in sorted(ready)]
            if not batches:
                return
            for held in batches:
                again = self.sink.accept_batch(held)
                if again.status != 200:
                    self._refused(again)
                    continue
                acked = max(acked, int(again.answer["acked_through"]))

    def _refused(self, outcome: BatchOutcome) -> None:
        with self._lock:
            self.stats["refused"] += 1
        logger.warning(
            "mqtt consumer: batch seq %d-%d refused with %d: %s",
            outcome.first_seq,
            outcome.last_seq,
            outcome.status,
            outcome.answer.get("error"),
        )
