"""The uplink seam: one error classifier, the error vocabulary, build_uplink, the paho bridge."""

from __future__ import annotations

import asyncio
import gzip
import logging
import ssl
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_args

import httpx
import orjson
import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from gxpgate.agent._paho import LinkDown, LinkUp, MqttSettings, PahoLink
from gxpgate.agent.health.metrics import UPLINK_ERROR_KINDS
from gxpgate.agent.uplink.base import read_batch
from gxpgate.agent.uplink.http import Forwarder
from gxpgate.agent.uplink.mqtt import MqttUplink
from gxpgate.agent.uplink.seam import ErrorKind, build_uplink, classify_error
from gxpgate.config.model import UplinkConfig
from gxpgate.config.mqtt_model import MqttUplinkConfig

from .sealed import fill


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        # Exceptions: the type decides a timeout and TLS ...
        (TimeoutError("timed out"), "timeout"),
        (httpx.ConnectTimeout("timed out"), "timeout"),
        (httpx.ReadTimeout("SSL read timed out"), "timeout"),
        (ssl.SSLCertVerificationError("certificate verify failed"), "tls"),
        (ssl.SSLError("wrong version number"), "tls"),
        # ... the text names TLS a library wrapped ...
        (httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"), "tls"),
        # ... and the rest is a connection failure, whatever its text says of time.
        (ConnectionRefusedError(111, "Connection refused"), "connect"),
        (httpx.ConnectError("[Errno 110] Connection timed out"), "connect"),
        (OSError("Network is unreachable"), "connect"),
        # paho's messages (a lost connection keeps no exception): TLS, then a timeout.
        ("connection lost: [SSL: SSLV3_ALERT_CERTIFICATE_REVOKED] sslv3 alert", "tls"),
        ("connection lost: SSL read timed out", "tls"),
        ("connection lost: timed out", "timeout"),
        ("connection lost: Keep alive timeout", "timeout"),
        ("connection lost: Unspecified error", "connect"),
        ("connection failed", "connect"),
    ],
)
def test_one_classifier_for_exceptions_and_messages(error: BaseException | str, kind: str) -> None:
    assert classify_error(error) == kind


def test_metrics_count_from_zero_the_kinds_both_transports_report() -> None:
    assert UPLINK_ERROR_KINDS == ("connect", "timeout", "tls", "rejected")
    assert set(UPLINK_ERROR_KINDS) < set(get_args(ErrorKind))


def test_build_uplink_builds_the_transport_the_config_names() -> None:
    outbox: Any = SimpleNamespace(gw="gw-1", chain="c")

    async def record(fact: object) -> None:
        pass

    http = UplinkConfig(url="http://quality.local")
    assert isinstance(build_uplink(http, outbox, record), Forwarder)
    mqtt = MqttUplinkConfig(transport="mqtt", host="broker.local")
    assert isinstance(build_uplink(mqtt, outbox, record), MqttUplink)


def test_the_bridge_hands_paho_events_to_the_loop_once_each() -> None:
    """paho's callbacks, played from another thread as paho would: a refused CONNACK is told
    once (not again by the disconnect paho reports after it), a DISCONNECT from the broker
    keeps its reason code, a lost connection carries paho's last error message."""
    ups: list[LinkUp] = []
    downs: list[LinkDown] = []
    acks: list[tuple[int, int, str]] = []
    link = PahoLink(
        MqttSettings(host="broker.local", client_id="gw-1"),
        on_up=ups.append,
        on_down=downs.append,
        on_puback=lambda *ack: acks.append(ack),
        paho_log=logging.getLogger("tests.paho"),
        paho_log_as_debug=True,
    )
    client = link.client
    refused = ReasonCode(PacketTypes.CONNACK, identifier=0x87)
    accepted = ReasonCode(PacketTypes.CONNACK, identifier=0)
    too_large = ReasonCode(PacketTypes.DISCONNECT, identifier=0x95)
    unspecified = ReasonCode(PacketTypes.DISCONNECT, identifier=0x80)
    puback = ReasonCode(PacketTypes.PUBACK, identifier=0x10)

    def paho_thread() -> None:
        link._paho_on_connect(client, None, paho.ConnectFlags(False), refused, None)
        link._paho_on_disconnect(client, None, paho.DisconnectFlags(False), unspecified, None)
        link._paho_on_connect(client, None, paho.ConnectFlags(True), accepted, None)
        link._paho_on_publish(client, None, 7, puback, None)
        link._paho_on_disconnect(client, None, paho.DisconnectFlags(True), too_large, None)
        link._paho_on_log(client, None, paho.MQTT_LOG_ERR, "failed to receive on socket: EOF")
        link._paho_on_disconnect(client, None, paho.DisconnectFlags(False), unspecified, None)

    async def main() -> None:
        link._loop = asyncio.get_running_loop()  # what start() records, without connecting
        await asyncio.to_thread(paho_thread)
        await asyncio.sleep(0)

    asyncio.run(main())
    assert ups == [LinkUp(True, [], None, None)]
    assert acks == [(7, 0x10, "No matching subscribers")]
    assert [(d.how, d.code, d.error) for d in downs] == [
        ("refused", 0x87, "connection refused: Not authorized"),
        ("by_broker", 0x95, "connection lost: Packet too large"),
        ("lost", 0x80, "connection lost: Unspecified error"),
    ]
    assert downs[2].paho_error == "failed to receive on socket: EOF"


def test_a_batch_body_is_the_records_exactly_whatever_their_number(tmp_path: Path) -> None:
    """The body is gzipped a few hundred records at a time; unzipped it is the contract's
    batch, each record byte for byte as sealed, at and around those boundaries."""
    key = Ed25519PrivateKey.generate()
    outbox = fill(tmp_path / "b.db", key, 700)
    try:
        sealed = list(outbox.export())
        for count in (1, 255, 256, 257, 512, 700):
            batch = read_batch(outbox, 0, count)
            assert batch is not None
            assert (batch.first, batch.last, batch.count) == (1, count, count)
            head = b'{"gw":"gw-test","chain":' + orjson.dumps(outbox.chain)
            expected = head + b',"records":[' + b",".join(sealed[:count]) + b"]}"
            assert gzip.decompress(batch.payload) == expected
        capped = read_batch(outbox, 0, 700, max_bytes=20_000)  # an MQTT broker's packet cap
        assert capped is not None
        whole = read_batch(outbox, 0, 700)
        assert whole is not None
        assert len(capped.payload) <= 20_000 < len(whole.payload)
        records = orjson.loads(gzip.decompress(capped.payload))["records"]
        assert [r["seq"] for r in records] == list(range(1, capped.count + 1))
    finally:
        outbox.close()
