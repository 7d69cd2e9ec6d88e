"""The uplink seam: one error classifier, the error vocabulary, build_uplink."""

from __future__ import annotations

import ssl
from types import SimpleNamespace
from typing import Any, get_args

import httpx
import pytest

from agent.forwarder import Forwarder
from agent.metrics import UPLINK_ERROR_KINDS
from agent.mqtt_uplink import MqttUplink
from agent.uplink import ErrorKind, build_uplink, classify_error
from config.model import UplinkConfig
from config.mqtt_model import MqttUplinkConfig


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
