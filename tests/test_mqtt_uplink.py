"""The MQTT uplink (CONTRACT §4) through a real broker (tests/broker.py: mosquitto, or amqtt).

Modbus simulator → agent → broker → :class:`gxpgate.simulators.mqtt_consumer.MqttEvidenceConsumer`
(QoS 1, persistent session) → quality-service simulator, which de-duplicates by seq and
verifies the chain exactly as it does for HTTP deliveries. Tests that need a mosquitto feature
(MQTT 5 reason codes, persistence across a restart, packet limits, ACLs) skip where only amqtt
is installed and fail in CI (:func:`tests.broker.require_mosquitto`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import ssl
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gxpgate.agent.cli.main import app
from gxpgate.agent.evidence import public_key_pem
from gxpgate.agent.service.runtime import Agent, AgentStartError
from gxpgate.agent.uplink.mqtt import MqttUplink
from gxpgate.config import ConfigError, example_config_text, load_config
from gxpgate.config.mqtt_model import MqttUplinkConfig
from gxpgate.simulators.modbus_sim import ModbusSimulator
from gxpgate.simulators.mqtt_consumer import MqttEvidenceConsumer
from gxpgate.simulators.quality_service import QualityServiceSimulator

from .broker import Broker, require_mosquitto
from .running import GW, Running, exported, until


def uplink_toml(broker: Broker, *, batch: int = 1000, tls: bool = False, **keys: Any) -> str:
    """An ``[uplink]`` table for ``broker``: MQTT 5 with mosquitto, 3.1.1 with amqtt."""
    values: dict[str, Any] = {
        "transport": "mqtt",
        "host": broker.host,
        "port": broker.port,
        "tls": tls,
        "protocol": "5" if broker.kind == "mosquitto" else "3.1.1",
        "batch_max_records": batch,
        "keepalive_secs": 5,
        "connect_timeout_secs": 5,
        "backoff_initial_secs": 0.05,
        "backoff_max_secs": 0.5,
    }
    values.update(keys)
    lines = ["[uplink]"]
    for key, value in values.items():
        shown = str(value).lower() if isinstance(value, bool) else value
        lines.append(f'{key} = "{shown}"' if isinstance(value, str | Path) else f"{key} = {shown}")
    return "\n".join(lines) + "\n"


def with_uplink(path: Path, table: str) -> Path:
    path.write_text(path.read_text(encoding="utf-8") + "\n" + table, encoding="utf-8")
    return path


def client_context(broker: Broker, *, client_cert: bool = True) -> ssl.SSLContext:
    assert broker.tls is not None
    context = ssl.create_default_context(cafile=broker.tls.ca_file)
    if client_cert:
        assert broker.tls.client_cert_file is not None
        context.load_cert_chain(broker.tls.client_cert_file, broker.tls.client_key_file)
    return context


@contextmanager
def consumer(
    qs: QualityServiceSimulator, broker: Broker, client_id: str | None = None, **options: Any
) -> Iterator[MqttEvidenceConsumer]:
    protocol = "5" if broker.kind == "mosquitto" else "3.1.1"
    with MqttEvidenceConsumer(
        qs,
        broker.host,
        broker.port,
        client_id=client_id or f"quality-{uuid.uuid4().hex[:8]}",
        protocol=protocol,
        **options,
    ) as sub:
        yield sub


def check_complete(qs: QualityServiceSimulator, config: Path, chain: str) -> list[dict[str, Any]]:
    """The consumer holds every sealed record, once, in order, verified; the cursor is at the
    end."""
    ours = exported(config)
    theirs = qs.records(GW, chain)
    assert [r["seq"] for r in theirs] == list(range(1, len(ours) + 1))
    assert theirs == ours, "the consumer holds exactly what was sealed"
    report = qs.verification_report(GW, chain)
    assert report["ok"], report
    assert qs.stats["integrity_incidents"] == 0
    return ours


async def backlog(config: Path, records: int) -> Path:
    """Run the agent without an uplink until ``records`` are sealed: a backlog to send."""
    async with Running(config) as agent:
        await until(lambda: agent.outbox.last_seq >= records, what="a backlog")
    return config


def cursor_of(config: Path) -> int:
    from gxpgate.buffer import Outbox

    outbox = Outbox(load_config(config).config.buffer.path, GW)
    try:
        return outbox.acked_through
    finally:
        outbox.close()


def test_records_arrive_verified_at_a_persistent_consumer(
    tmp_path: Path, write_config, signing_key, mqtt_broker: Broker
) -> None:
    public = signing_key[1].public_key()

    async def main() -> None:
        async with ModbusSimulator() as sim:
            with (
                QualityServiceSimulator(tmp_path / "qs.db", [public]) as qs,
                consumer(qs, mqtt_broker) as sub,
            ):
                config = with_uplink(write_config(sim.port), uplink_toml(mqtt_broker, batch=7))
                async with Running(config) as agent:
                    assert isinstance(agent.forwarder, MqttUplink)
                    chain = agent.outbox.chain
                    await until(lambda: qs.acked_through(GW, chain) >= 40, what="40 records")
                    assert agent.forwarder.connected
                await until(lambda: qs.acked_through(GW, chain) == len(exported(config)))
                ours = check_complete(qs, config, chain)
                assert cursor_of(config) == len(ours), "the final flush delivered everything"
                assert sub.stats["records"] == len(ours), "nothing was published twice"
                assert sub.stats["messages"] >= len(ours) // 7
                assert sub.held == {}

    asyncio.run(main())


def test_broker_restarted_mid_stream_loses_nothing(
    tmp_path: Path, write_config, signing_key, mqtt_broker_factory
) -> None:
    require_mosquitto("amqtt keeps no queued messages across a restart")
    broker: Broker = mqtt_broker_factory(persistence=True)
    public = signing_key[1].public_key()

    async def main() -> None:
        async with ModbusSimulator() as sim:
            with QualityServiceSimulator(tmp_path / "qs.db", [public]) as qs:
                config = with_uplink(
                    write_config(sim.port, poll=0.05), uplink_toml(broker, batch=5)
                )
                with consumer(qs, broker, "quality-service") as sub:
                    async with Running(config) as agent:
                        chain = agent.outbox.chain
                        uplink = agent.forwarder
                        assert isinstance(uplink, MqttUplink)
                        await until(lambda: qs.acked_through(GW, chain) >= 20)
                        sub.stop()  # the broker now queues batches for the consumer's session
                        queued_from = agent.outbox.acked_through
                        await until(
                            lambda: agent.outbox.acked_through >= queued_from + 30,
                            what="batches PUBACKed while the consumer is away",
                        )
                        # Mid-stream: the agent is publishing (every 50 ms a poll, batches of 5).
                        await asyncio.to_thread(broker.restart)
                        await until(lambda: uplink.stats.errors >= 1, what="the link lost")
                        sealed_then = agent.outbox.last_seq
                        await until(
                            lambda: agent.outbox.acked_through >= sealed_then + 20,
                            what="the agent delivering again after the restart",
                        )
                        assert uplink.stats.last_error is None
                # The same consumer session again, after the broker restart.
                with consumer(qs, broker, "quality-service") as sub:
                    await until(
                        lambda: qs.acked_through(GW, chain) == len(exported(config)),
                        what="the consumer holding every record, queued across the restart",
                    )
                    assert sub.held == {}
                ours = check_complete(qs, config, chain)
                assert cursor_of(config) == len(ours)

    asyncio.run(main())


def test_frozen_broker_is_left_and_everything_sent_again(
    tmp_path: Path, write_config, signing_key, mqtt_broker: Broker
) -> None:
    public = signing_key[1].public_key()

    async def main() -> None:
        async with ModbusSimulator() as sim:
            with (
                QualityServiceSimulator(tmp_path / "qs.db", [public]) as qs,
                consumer(qs, mqtt_broker) as sub,
            ):
                table = uplink_toml(mqtt_broker, batch=5)
                config = with_uplink(write_config(sim.port, poll=0.05), table)
                async with Running(config) as agent:
                    chain = agent.outbox.chain
                    uplink = agent.forwarder
                    assert isinstance(uplink, MqttUplink)
                    await until(lambda: qs.acked_through(GW, chain) >= 20)
                    mqtt_broker.pause()  # sockets open, nothing acknowledged
                    try:
                        # PUBACKs sent just before the freeze may still land; nothing beyond what
                        # was published by then can be acknowledged.
                        published = uplink.published_through
                        await until(
                            lambda: uplink.stats.errors_by_kind.get("timeout", 0) >= 1,
                            within=30,
                            what="the keepalive noticing the frozen broker",
                        )
                        # Records go on being sealed: an uplink counting publications as
                        # delivered would have moved past them.
                        assert agent.outbox.acked_through <= published
                    finally:
                        mqtt_broker.resume()
                    sealed = agent.outbox.last_seq
                    await until(lambda: qs.acked_through(GW, chain) >= sealed, within=30)
                await until(lambda: qs.acked_through(GW, chain) == len(exported(config)))
                check_complete(qs, config, chain)
                assert sub.held == {}

    asyncio.run(main())


def test_tls_with_a_client_certificate(
    tmp_path: Path, write_config, signing_key, mqtt_broker_factory
) -> None:
    broker: Broker = mqtt_broker_factory(tls=True, require_client_cert=True)
    assert broker.tls is not None
    public = signing_key[1].public_key()
    tls_keys = {
        "ca_file": broker.tls.ca_file,
        "cert_file": broker.tls.client_cert_file,
        "key_file": broker.tls.client_key_file,
    }

    async def main() -> None:
        async with ModbusSimulator() as sim:
            with (
                QualityServiceSimulator(tmp_path / "qs.db", [public]) as qs,
                consumer(qs, broker, tls=client_context(broker)),
            ):
                table = uplink_toml(broker, tls=True, **tls_keys)
                config = with_uplink(write_config(sim.port), table)
                async with Running(config) as agent:
                    chain = agent.outbox.chain
                    await until(lambda: qs.acked_through(GW, chain) >= 20)
                await until(lambda: qs.acked_through(GW, chain) == len(exported(config)))
                check_complete(qs, config, chain)

    asyncio.run(main())


def test_tls_verifies_the_broker_and_the_broker_wants_a_certificate(
    tmp_path: Path, write_config, mqtt_broker_factory
) -> None:
    require_mosquitto("amqtt asks for a client certificate but does not require one")
    broker: Broker = mqtt_broker_factory(tls=True, require_client_cert=True)
    assert broker.tls is not None

    async def main() -> None:
        async with ModbusSimulator() as sim:
            # 1. No ca_file: the system trust store does not know the broker's CA.
            config = with_uplink(write_config(sim.port), uplink_toml(broker, tls=True))
            async with Running(config) as agent:
                uplink = agent.forwarder
                assert isinstance(uplink, MqttUplink)
                await until(lambda: uplink.stats.last_error is not None)
                assert uplink.stats.errors_by_kind.get("tls", 0) >= 1
                assert "CERTIFICATE_VERIFY_FAILED" in uplink.stats.last_error
                assert agent.outbox.acked_through == 0
            # 2. The CA, but no client certificate: the broker refuses the handshake.
            table = uplink_toml(broker, tls=True, ca_file=broker.tls.ca_file)
            config = with_uplink(write_config(sim.port, name="no-cert.toml"), table)
            async with Running(config) as agent:
                uplink = agent.forwarder
                assert isinstance(uplink, MqttUplink)
                await until(lambda: uplink.stats.errors >= 2)
                assert not uplink.connected
                assert uplink.stats.errors_by_kind.get("tls", 0) >= 1, uplink.stats
                assert "certificate required" in (uplink.stats.last_error or ""), uplink.stats
                assert agent.outbox.acked_through == 0

    asyncio.run(main())


def test_credentials_from_a_password_file(
    tmp_path: Path, write_config, signing_key, mqtt_broker_factory, caplog
) -> None:
    require_mosquitto("amqtt's password file is not set up by tests/broker.py")
    broker: Broker = mqtt_broker_factory(users={"gw-test": "right-horse", "quality": "q"})
    public = signing_key[1].public_key()
    password_file = tmp_path / "uplink.password"

    async def main() -> None:
        async with ModbusSimulator() as sim:
            with (
                QualityServiceSimulator(tmp_path / "qs.db", [public]) as qs,
                consumer(qs, broker, username="quality", password="q"),
            ):
                table = uplink_toml(broker, username="gw-test", password_file=password_file.name)
                config = with_uplink(write_config(sim.port), table)
                password_file.write_text("wrong-battery\n", encoding="utf-8")
                async with Running(config) as agent:
                    uplink = agent.forwarder
                    assert isinstance(uplink, MqttUplink)
                    chain = agent.outbox.chain
                    await until(lambda: uplink.stats.errors_by_kind.get("broker", 0) >= 2)
                    assert "Not authorized" in (uplink.stats.last_error or "")
                    assert set(uplink.stats.errors_by_kind) == {"broker"}
                password_file.write_text("right-horse\n", encoding="utf-8")
                async with Running(config) as agent:
                    await until(lambda: qs.acked_through(GW, chain) >= 20)
                await until(lambda: qs.acked_through(GW, chain) == len(exported(config)))
                check_complete(qs, config, chain)

    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())
    assert "wrong-battery" not in caplog.text
    assert "right-horse" not in caplog.text


def test_agent_restart_resumes_from_its_cursor(
    tmp_path: Path, write_config, signing_key, mqtt_broker: Broker
) -> None:
    public = signing_key[1].public_key()

    async def main() -> None:
        async with ModbusSimulator() as sim:
            with (
                QualityServiceSimulator(tmp_path / "qs.db", [public]) as qs,
                consumer(qs, mqtt_broker) as sub,
            ):
                config = with_uplink(write_config(sim.port), uplink_toml(mqtt_broker, batch=10))
                async with Running(config) as agent:
                    chain = agent.outbox.chain
                    await until(lambda: qs.acked_through(GW, chain) >= 30)
                first_run = len(exported(config))
                await until(lambda: qs.acked_through(GW, chain) == first_run)
                assert cursor_of(config) == first_run
                received = sub.stats["records"]
                assert received == first_run
                async with Running(config) as agent:
                    assert agent.outbox.chain == chain
                    await until(lambda: qs.acked_through(GW, chain) >= first_run + 30)
                await until(lambda: qs.acked_through(GW, chain) == len(exported(config)))
                ours = check_complete(qs, config, chain)
                # Each record was published once: the second run started after its cursor.
                assert sub.stats["records"] == len(ours)
                assert qs.stats["duplicates"] == 0

    asyncio.run(main())


def test_broker_packet_limit_splits_batches(
    tmp_path: Path, write_config, signing_key, mqtt_broker_factory
) -> None:
    require_mosquitto("amqtt announces no maximum packet size (MQTT 5 CONNACK property)")
    limit = 2048
    broker: Broker = mqtt_broker_factory(extra=f"max_packet_size {limit}")
    public = signing_key[1].public_key()

    async def main() -> None:
        async with ModbusSimulator() as sim:
            with (
                QualityServiceSimulator(tmp_path / "qs.db", [public]) as qs,
                consumer(qs, broker) as sub,
            ):
                config = await backlog(write_config(sim.port), 150)
                with_uplink(config, uplink_toml(broker))
                async with Running(config) as agent:
                    chain = agent.outbox.chain
                    await until(lambda: qs.acked_through(GW, chain) >= 150)
                    uplink = agent.forwarder
                    assert isinstance(uplink, MqttUplink)
                    assert uplink.stats.errors == 0, uplink.stats
                await until(lambda: qs.acked_through(GW, chain) == len(exported(config)))
                check_complete(qs, config, chain)
                assert 0 < sub.stats["largest_payload"] <= limit - 32
                assert sub.stats["messages"] >= 10

    asyncio.run(main())


def test_configured_payload_limit_splits_a_backlog(
    tmp_path: Path, write_config, signing_key, mqtt_broker_factory
) -> None:
    broker: Broker = mqtt_broker_factory()
    public = signing_key[1].public_key()

    async def main() -> None:
        async with ModbusSimulator() as sim:
            config = await backlog(write_config(sim.port), 120)
            with_uplink(config, uplink_toml(broker, max_payload_kb=1))
            with (
                QualityServiceSimulator(tmp_path / "qs.db", [public]) as qs,
                consumer(qs, broker) as sub,
            ):
                async with Running(config) as agent:
                    chain = agent.outbox.chain
                    await until(lambda: qs.acked_through(GW, chain) >= 120)
                await until(lambda: qs.acked_through(GW, chain) == len(exported(config)))
                check_complete(qs, config, chain)
                assert 0 < sub.stats["largest_payload"] <= 1024
                assert sub.stats["messages"] >= 10

    asyncio.run(main())


def test_refused_publish_is_sealed_once_and_retried(
    tmp_path: Path, write_config, signing_key, mqtt_broker_factory
) -> None:
    require_mosquitto("amqtt speaks MQTT 3.1.1, whose PUBACK carries no reason code")
    acl = tmp_path / "acl"
    acl.write_text("topic read gxpgate/#\n", encoding="utf-8")  # nobody may publish evidence
    broker: Broker = mqtt_broker_factory(extra=f"acl_file {acl}")
    public = signing_key[1].public_key()

    async def main() -> None:
        async with ModbusSimulator() as sim:
            with (
                QualityServiceSimulator(tmp_path / "qs.db", [public]) as qs,
                consumer(qs, broker),
            ):
                config = with_uplink(write_config(sim.port), uplink_toml(broker, batch=5))
                async with Running(config) as agent:
                    uplink = agent.forwarder
                    assert isinstance(uplink, MqttUplink)
                    chain = agent.outbox.chain
                    await until(lambda: uplink.stats.errors_by_kind.get("rejected", 0) >= 3)
                    assert "Not authorized" in (uplink.stats.last_error or "")
                    assert agent.outbox.acked_through == 0
                    assert qs.acked_through(GW, chain) == 0
                    acl.write_text("topic readwrite gxpgate/#\n", encoding="utf-8")
                    broker.reload()
                    await until(lambda: qs.acked_through(GW, chain) >= 30, what="retried")
                    assert uplink.stats.last_error is None
                await until(lambda: qs.acked_through(GW, chain) == len(exported(config)))
                ours = check_complete(qs, config, chain)
                rejected = [r["data"] for r in ours if r["data"].get("event") == "uplink_rejected"]
                assert len(rejected) == 1, "one audit record for the episode"
                assert rejected[0]["reason_code"] == 0x87
                assert rejected[0]["first_seq"] == 1

    asyncio.run(main())


def test_publishing_without_subscribers_is_on_record(
    tmp_path: Path, write_config, mqtt_broker_factory
) -> None:
    require_mosquitto("amqtt speaks MQTT 3.1.1, whose PUBACK carries no reason code")
    broker: Broker = mqtt_broker_factory()

    async def main() -> None:
        async with ModbusSimulator() as sim:
            config = with_uplink(write_config(sim.port), uplink_toml(broker, batch=5))
            async with Running(config) as agent:
                await until(lambda: agent.outbox.acked_through >= 20)
            ours = exported(config)
            events = [r["data"] for r in ours if r["data"].get("event") == "uplink_no_subscribers"]
            assert len(events) == 1
            assert events[0]["topic"] == f"gxpgate/{GW}/evidence"
            assert cursor_of(config) == len(ours)

    asyncio.run(main())


def test_quality_service_simulator_consumes_the_mqtt_uplink(
    tmp_path: Path, write_config, signing_key, mqtt_broker: Broker
) -> None:
    require_mosquitto("the simulator's consumer speaks MQTT 5")
    pub = tmp_path / "pub.pem"
    pub.write_text(public_key_pem(signing_key[1].public_key()), encoding="utf-8")
    db = tmp_path / "qs.db"
    service = subprocess.Popen(
        [sys.executable, "-m", "gxpgate", "simulate", "quality-service", "--public-key", str(pub),
         "--port", "0", "--db", str(db), "--mqtt-broker", f"{mqtt_broker.host}:{mqtt_broker.port}"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip

    def stored() -> int:
        with contextlib.closing(sqlite3.connect(db)) as con:
            row = con.execute("SELECT max(acked_through) FROM chains").fetchone()
        return row[0] or 0

    async def main() -> None:
        async with ModbusSimulator() as sim:
            config = with_uplink(write_config(sim.port), uplink_toml(mqtt_broker, batch=10))
            async with Running(config) as agent:
                await until(lambda: agent.outbox.acked_through >= 30)
            sealed = len(exported(config))
            await until(lambda: stored() == sealed, what="the simulator storing every record")

    try:
        assert service.stdout is not None
        assert "listening on" in service.stdout.readline()
        assert "Consuming gxpgate/+/evidence from mqtt://" in service.stdout.readline()
        asyncio.run(main())
    finally:
        service.send_signal(signal.SIGINT)
        assert service.wait(10) == 0
    with QualityServiceSimulator(db) as qs:
        (gw, chain), *_ = qs.chains()
        assert gw == GW
        assert qs.records(GW, chain) == exported(tmp_path / "gxpgate.toml")
        assert qs.verification_report(GW, chain)["ok"]


# -- config ----------------------------------------------------------------------------------


def _site(tmp_path: Path, uplink: str) -> Path:
    text = example_config_text()
    start = text.index("[uplink]\n")
    end = text.index("\n# Zones:")
    path = tmp_path / "site.toml"
    path.write_text(text[:start] + uplink + text[end:], encoding="utf-8")
    return path


def test_http_uplink_config_unchanged(tmp_path: Path) -> None:
    loaded = load_config(_site(tmp_path, '[uplink]\nurl = "https://q.example.com"\n'))
    assert loaded.config.uplink is not None
    assert loaded.config.uplink.transport == "http"


def test_mqtt_uplink_config_defaults_and_relative_paths(tmp_path: Path) -> None:
    table = '[uplink]\ntransport = "mqtt"\nhost = "broker.example.com"\nca_file = "ca.pem"\n'
    loaded = load_config(_site(tmp_path, table))
    uplink = loaded.config.uplink
    assert isinstance(uplink, MqttUplinkConfig)
    assert (uplink.port, uplink.tls, uplink.tls_verify, uplink.protocol) == (8883, True, True, "5")
    assert uplink.ca_file == tmp_path / "ca.pem"


@pytest.mark.parametrize(
    ("table", "where", "why"),
    [
        ('transport = "mqtt"\nhost = "b"\nport = 0\n', "uplink.port", "greater than or equal"),
        ('transport = "mqtt"\nhost = "b"\nurl = "https://x"\n', "uplink.url", "unknown key"),
        ('transport = "mqtt"\n', "uplink.host", "required key is missing"),
        ('transport = "amqp"\nhost = "b"\n', "uplink.transport", "unknown transport 'amqp'"),
        ('url = "https://x"\nhost = "b"\n', "uplink.host", "unknown key"),
        ('transport = "mqtt"\nhost = "b"\ntls = false\nca_file = "x"\n', "uplink", "needs tls"),
        ('transport = "mqtt"\nhost = "b"\npassword = "s3cret"\n', "uplink", "needs a username"),
        ('transport = "mqtt"\nhost = "b"\nprotocol = "4"\n', "uplink.protocol", "'5'"),
    ],
)
def test_mqtt_uplink_config_errors_name_the_field(
    tmp_path: Path, table: str, where: str, why: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_site(tmp_path, "[uplink]\n" + table))
    lines = caught.value.lines()
    assert any(f": {where}: " in line and why in line for line in lines), lines
    assert not any("s3cret" in line for line in lines)


def test_config_validate_prints_the_field_path(tmp_path: Path) -> None:
    path = _site(tmp_path, '[uplink]\ntransport = "mqtt"\nhost = "b"\nport = 99999\n')
    result = CliRunner().invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}: uplink.port: " in result.output + result.stderr


def test_example_shows_the_mqtt_uplink() -> None:
    text = example_config_text()
    commented = text[text.index("# [uplink]") :].split("\n\n")[0]
    table = "\n".join(line.removeprefix("# ") for line in commented.splitlines())
    model = MqttUplinkConfig.model_validate(tomllib.loads(table)["uplink"])
    assert model.transport == "mqtt"


def test_unreadable_password_file_stops_the_start(tmp_path: Path, write_config) -> None:
    table = (
        '[uplink]\ntransport = "mqtt"\nhost = "127.0.0.1"\nusername = "gw"\n'
        'password_file = "missing.password"\n'
    )
    config = with_uplink(write_config(modbus=False), table)

    async def main() -> None:
        agent = Agent(load_config(config))
        with pytest.raises(AgentStartError, match=r"uplink\.password_file"):
            await agent.run(asyncio.Event())

    asyncio.run(main())
