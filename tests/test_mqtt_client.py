"""RetainedPublisher against a real broker (tests/broker.py: mosquitto, or amqtt)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gxpgate.agent.alarms.mqtt_client import MqttSettings, RetainedPublisher

from .broker import Broker, free_port, retained, retained_messages
from .running import until

ALARMS = "gxpgate/gw-test/alarms"


def settings(broker: Broker, **overrides: object) -> MqttSettings:
    values: dict[str, object] = {
        "host": broker.host,
        "port": broker.port,
        "client_id": f"gxpgate-test-{uuid.uuid4().hex[:8]}",
        "keepalive_secs": 5,
        "reconnect_min_secs": 0.05,
        "reconnect_max_secs": 0.2,
    }
    values.update(overrides)
    return MqttSettings(**values)  # type: ignore[arg-type]


class States:
    """Collects on_state calls and checks they arrive on the event-loop thread."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str | None]] = []
        self.loop_thread = threading.get_ident()

    def __call__(self, event: str, error: str | None) -> None:
        assert threading.get_ident() == self.loop_thread, "on_state off the event-loop thread"
        self.events.append((event, error))

    def kinds(self) -> list[str]:
        return [event for event, _ in self.events]

    def count(self, event: str) -> int:
        return self.kinds().count(event)


def paho_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("paho-mqtt-client-")]


def test_late_subscriber_sees_the_retained_state(mqtt_broker: Broker) -> None:
    async def main() -> None:
        states = States()
        async with RetainedPublisher(settings(mqtt_broker), on_state=states) as pub:
            pub.publish(f"{ALARMS}/cold-1/high", b'{"state":"active"}')
            pub.publish(f"{ALARMS}/ambient/low", b'{"state":"cleared"}')
            assert await pub.wait_delivered(10)
            assert pub.connected
            assert pub.undelivered == 0
        # The publisher is gone: only the broker holds the state now.
        assert await retained(mqtt_broker, f"{ALARMS}/#") == {
            f"{ALARMS}/cold-1/high": b'{"state":"active"}',
            f"{ALARMS}/ambient/low": b'{"state":"cleared"}',
        }
        assert states.kinds() == ["connected"]

    asyncio.run(main())


def test_latest_payload_wins(mqtt_broker: Broker) -> None:
    topic = f"{ALARMS}/cold-1/high"

    async def main() -> None:
        pub = RetainedPublisher(settings(mqtt_broker))
        # Before start (no connection): only the latest is remembered and sent.
        for n in range(5):
            pub.publish(topic, f"offline-{n}".encode())
        assert pub.undelivered == 1
        await pub.start()
        try:
            assert await pub.wait_delivered(10)
            assert await retained(mqtt_broker, topic) == {topic: b"offline-4"}
            # Connected, back to back: every payload goes out, the last one stays.
            for n in range(50):
                pub.publish(topic, f"online-{n}".encode())
            assert await pub.wait_delivered(10)
            assert await retained(mqtt_broker, topic) == {topic: b"online-49"}
        finally:
            await pub.stop()

    asyncio.run(main())


def test_clear_deletes_the_retained_message(mqtt_broker: Broker) -> None:
    async def main() -> None:
        async with RetainedPublisher(settings(mqtt_broker)) as pub:
            pub.publish(f"{ALARMS}/cold-1/high", b"active")
            pub.publish(f"{ALARMS}/cold-1/low", b"active")
            assert await pub.wait_delivered(10)
            assert len(await retained(mqtt_broker, f"{ALARMS}/#")) == 2
            pub.clear(f"{ALARMS}/cold-1/high")
            assert pub.undelivered == 1
            assert await pub.wait_delivered(10)
            assert await retained(mqtt_broker, f"{ALARMS}/#") == {f"{ALARMS}/cold-1/low": b"active"}

    asyncio.run(main())


def test_broker_down_at_start_then_up(mqtt_broker: Broker) -> None:
    """Nothing blocks or raises while the broker is down; the state arrives once it is up."""
    mqtt_broker.stop()
    topic = f"{ALARMS}/cold-1/high"

    async def main() -> None:
        states = States()
        pub = RetainedPublisher(settings(mqtt_broker), on_state=states)
        t0 = time.monotonic()
        await pub.start()
        pub.publish(topic, b"active")
        assert time.monotonic() - t0 < 1.0
        await until(lambda: states.count("disconnected") == 1, 5, "disconnected reported")
        assert not pub.connected
        assert pub.undelivered == 1
        assert not await pub.wait_delivered(0.5)  # several reconnect attempts fail meanwhile
        pub.publish(topic, b"acknowledged")  # superseded while down
        try:
            await asyncio.to_thread(mqtt_broker.start)
            assert await pub.wait_delivered(10)
            assert pub.connected
            assert await retained(mqtt_broker, f"{ALARMS}/#") == {topic: b"acknowledged"}
        finally:
            await pub.stop()
        # One episode each, however many connection attempts failed.
        assert states.kinds() == ["disconnected", "connected"]
        error = states.events[0][1]
        assert error is not None
        assert "refused" in error.lower()

    asyncio.run(main())


def test_broker_restart_mid_stream(mqtt_broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    """A restarted broker without persistence lost the retained state: it is sent again, and
    what was published while it was down arrives too, without the caller doing anything."""
    caplog.set_level(logging.INFO, logger="gxpgate.agent.alarms.mqtt_client")

    async def main() -> None:
        states = States()
        async with RetainedPublisher(settings(mqtt_broker), on_state=states) as pub:
            pub.publish(f"{ALARMS}/cold-1/high", b"active")
            pub.publish(f"{ALARMS}/ambient/low", b"active")
            assert await pub.wait_delivered(10)

            await asyncio.to_thread(mqtt_broker.stop)
            await until(lambda: not pub.connected, 10, "disconnect noticed")
            pub.clear(f"{ALARMS}/ambient/low")
            pub.publish(f"{ALARMS}/cold-1/door", b"open")
            await asyncio.to_thread(mqtt_broker.start)  # it forgot: see the test below
            await until(lambda: states.count("connected") == 2, 10, "reconnected")
            assert await pub.wait_delivered(10)
            assert await retained(mqtt_broker, f"{ALARMS}/#") == {
                f"{ALARMS}/cold-1/high": b"active",
                f"{ALARMS}/cold-1/door": b"open",
            }
        assert states.kinds() == ["connected", "disconnected", "connected"]

    asyncio.run(main())
    messages = [r.getMessage() for r in caplog.records]
    connected = [m for m in messages if m.startswith("mqtt.connected ")]
    assert len(connected) == 2
    assert f"host=127.0.0.1 port={mqtt_broker.port}" in connected[0]
    assert len([m for m in messages if m.startswith("mqtt.disconnected ")]) == 1


def test_restarted_broker_forgets_retained_messages(mqtt_broker: Broker) -> None:
    """The fixture's promise that the test above relies on (no persistence)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="fixture-check")
    client.connect(mqtt_broker.host, mqtt_broker.port)
    client.loop_start()
    try:
        client.publish(f"{ALARMS}/x", b"1", qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
    assert retained_messages(mqtt_broker, f"{ALARMS}/#") == {f"{ALARMS}/x": b"1"}
    mqtt_broker.restart()
    assert retained_messages(mqtt_broker, f"{ALARMS}/#") == {}


def test_wait_delivered_waits_for_the_puback(mqtt_broker: Broker) -> None:
    """A frozen broker takes the bytes (the socket is open) but sends no PUBACK."""
    topic = f"{ALARMS}/cold-1/high"

    async def main() -> None:
        async with RetainedPublisher(settings(mqtt_broker, keepalive_secs=30)) as pub:
            assert await pub.wait_delivered(0)  # nothing desired: delivered at once
            pub.publish(topic, b"first")
            assert await pub.wait_delivered(10)

            mqtt_broker.pause()
            try:
                pub.publish(topic, b"second")
                t0 = time.monotonic()
                assert not await pub.wait_delivered(0.5)
                assert 0.4 < time.monotonic() - t0 < 2.0
                assert pub.undelivered == 1
                assert pub.connected
            finally:
                mqtt_broker.resume()
            assert await pub.wait_delivered(10)
            assert pub.undelivered == 0
            assert await retained(mqtt_broker, topic) == {topic: b"second"}

    asyncio.run(main())


def test_stop_leaves_no_threads(mqtt_broker: Broker) -> None:
    before = set(threading.enumerate())

    async def main() -> None:
        up = RetainedPublisher(settings(mqtt_broker))
        await up.start()
        up.publish(f"{ALARMS}/cold-1/high", b"active")
        assert await up.wait_delivered(10)
        # A broker that never answers: a closed port.
        down = RetainedPublisher(settings(mqtt_broker, port=free_port()))
        await down.start()
        down.publish(f"{ALARMS}/cold-1/high", b"active")
        never = RetainedPublisher(settings(mqtt_broker))  # stop without start is a no-op
        assert len(paho_threads()) == 2
        t0 = time.monotonic()
        await asyncio.gather(up.stop(), down.stop(), never.stop())
        assert time.monotonic() - t0 < 3.0
        assert paho_threads() == []
        assert not up.connected
        await up.stop()  # idempotent

    asyncio.run(main())
    assert set(threading.enumerate()) == before


def test_password_is_never_logged(mqtt_broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "s3cret-" + uuid.uuid4().hex
    config = settings(mqtt_broker, username="gw-test", password=secret)
    assert secret not in repr(config)

    async def main() -> None:
        async with RetainedPublisher(config) as pub:
            pub.publish(f"{ALARMS}/cold-1/high", b"active")
            assert await pub.wait_delivered(10)

    asyncio.run(main())
    assert "mqtt.connected" in caplog.text
    assert "Sending CONNECT" in caplog.text  # paho's own debug log is captured too
    assert secret not in caplog.text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"client_id": ""}, "client_id"),
        ({"port": 0}, "port"),
        ({"ca_file": Path("ca.pem")}, "need tls"),
        ({"insecure_skip_verify": True}, "need tls"),
        ({"tls": True, "key_file": Path("k.pem")}, "key_file without cert_file"),
        ({"password": "x"}, "password without username"),
        ({"reconnect_min_secs": 2.0, "reconnect_max_secs": 1.0}, "reconnect"),
    ],
)
def test_settings_are_checked(overrides: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"host": "broker.local", "client_id": "gw-1"}
    values.update(overrides)
    with pytest.raises(ValueError, match=message):
        MqttSettings(**values)  # type: ignore[arg-type]


def test_tls_verification_is_on_by_default() -> None:
    config = MqttSettings(host="broker.local", client_id="gw-1", tls=True)
    assert not config.insecure_skip_verify


@pytest.mark.parametrize("topic", ["", "a/+/b", "a/#", "a\0b"])
def test_publish_rejects_topics_that_are_not_names(topic: str) -> None:
    pub = RetainedPublisher(MqttSettings(host="broker.local", client_id="gw-1"))
    with pytest.raises(ValueError, match="not a topic name"):
        pub.publish(topic, b"x")
    assert pub.undelivered == 0


# paho 2.2 leaves the socket of a failed TLS handshake to the garbage collector.
@pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")
def test_tls_verifies_the_broker_by_default(
    mqtt_tls_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    broker, tls = mqtt_tls_broker, mqtt_tls_broker.tls
    assert tls is not None
    topic = f"{ALARMS}/cold-1/high"

    async def main() -> None:
        # The system trust store does not know the test CA: no connection, reported once.
        states = States()
        async with RetainedPublisher(settings(broker, tls=True), on_state=states) as pub:
            pub.publish(topic, b"active")
            await until(lambda: states.count("disconnected") == 1, 10, "refused")
            assert not await pub.wait_delivered(0.3)
            assert not pub.connected
        assert states.kinds() == ["disconnected"]
        assert "CERTIFICATE_VERIFY_FAILED" in str(states.events[0][1])

        # The CA that signed the broker's certificate.
        config = settings(broker, tls=True, ca_file=tls.ca_file)
        async with RetainedPublisher(config) as pub:
            pub.publish(topic, b"active")
            assert await pub.wait_delivered(10)

        # Verification off on purpose: connects, and says so.
        async with RetainedPublisher(settings(broker, tls=True, insecure_skip_verify=True)) as pub:
            pub.publish(topic, b"active")
            assert await pub.wait_delivered(10)

    caplog.set_level(logging.INFO, logger="gxpgate.agent.alarms.mqtt_client")
    asyncio.run(main())
    assert "mqtt.tls_unverified" in caplog.text


def _linked(pub: RetainedPublisher) -> None:
    """White box: mark the link up without a broker; paho then holds every publish (NO_CONN)
    and hands out message ids, and the test plays the broker's PUBACKs."""
    pub._on_link_up(session_present=True, dropped=[])


def _mid(pub: RetainedPublisher, topic: str) -> int:
    mid = pub._topics[topic].mid
    assert mid is not None
    return mid


def test_puback_of_a_superseded_payload_does_not_count() -> None:
    """A real broker acknowledges back to back, too fast to tell the two PUBACKs apart."""
    pub = RetainedPublisher(MqttSettings(host="broker.local", client_id="gw-1"))
    _linked(pub)
    topic = f"{ALARMS}/cold-1/high"
    pub.publish(topic, b"active")
    first = _mid(pub, topic)
    pub.publish(topic, b"acknowledged")
    second = _mid(pub, topic)
    assert first != second
    pub._on_puback(first)
    assert pub.undelivered == 1
    pub._on_puback(second)
    assert pub.undelivered == 0


def test_publish_failed_is_reported_once_per_episode() -> None:
    states = States()
    pub = RetainedPublisher(MqttSettings(host="broker.local", client_id="gw-1"), on_state=states)
    pub._link.client.max_queued_messages_set(1)  # paho refuses a second queued message
    _linked(pub)
    pub.publish(f"{ALARMS}/a/r", b"1")
    pub.publish(f"{ALARMS}/b/r", b"1")
    pub.publish(f"{ALARMS}/c/r", b"1")
    assert states.kinds() == ["connected", "publish_failed"]
    assert states.events[1][1] is not None
    assert pub.undelivered == 3
    pub._on_puback(_mid(pub, f"{ALARMS}/a/r"))  # the link works again
    pub.publish(f"{ALARMS}/d/r", b"1")
    assert states.kinds() == ["connected", "publish_failed", "publish_failed"]
