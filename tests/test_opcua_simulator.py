"""The OPC UA simulator, exercised over real loopback TCP with asyncua's own client.

Tests that check exact values or SourceTimestamps use a fake clock: drift is exactly zero at
the start and model time moves only when the test says so (the update task still runs on
the real clock, every 50 ms). Each test builds its own server, and asyncua needs about two
seconds to build the standard address space, so related checks share one simulator.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, Node, ua
from asyncua.common.subscription import DataChangeNotif
from asyncua.crypto import cert_gen, security_policies
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from gxpgate.simulators.opcua_sim import (
    APPLICATION_URI,
    DEFAULT_ZONES,
    NAMESPACE_URI,
    POINTS,
    SECURITY_POLICY_URI,
    OpcUaSimulator,
    ZoneSpec,
    run_forever,
)

TIMEOUT_SECS = 5.0
FAST_UPDATES_SECS = 0.05
MAX_NODES_PER_READ = f"i={ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead}"
CLIENT_URI = "urn:gxpgate:test:client"

EXPECTED = {
    ("cold-room-1", "temperature"): 5.0,
    ("cold-room-1", "humidity"): 45.0,
    ("cold-room-1", "door_open"): False,
    ("freezer-1", "temperature"): -18.0,
    ("freezer-1", "humidity"): 30.0,
    ("freezer-1", "door_open"): False,
    ("ambient-1", "temperature"): 21.0,
    ("ambient-1", "humidity"): 40.0,
    ("ambient-1", "door_open"): False,
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run one async test body; fail if it leaves a task behind."""

    async def main() -> None:
        await test()
        leftover = asyncio.all_tasks() - {asyncio.current_task()}
        assert not leftover, f"tasks left behind: {leftover}"

    asyncio.run(main())


@asynccontextmanager
async def connect(sim: OpcUaSimulator, client: Client | None = None) -> AsyncIterator[Client]:
    client = client or Client(sim.endpoint, timeout=TIMEOUT_SECS)
    await client.connect()
    try:
        yield client
    finally:
        await client.disconnect()


class Changes:
    """Subscription handler: every data change as (NodeId string, DataValue), in order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, ua.DataValue]] = asyncio.Queue()

    def datachange_notification(self, node: Node, val: Any, data: DataChangeNotif) -> None:
        self.queue.put_nowait((node.nodeid.to_string(), data.monitored_item.Value))

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        pass

    async def wait_for(self, node_id: str, accept: Callable[[ua.DataValue], bool]) -> ua.DataValue:
        """The first change of ``node_id`` that ``accept`` takes."""
        async with asyncio.timeout(TIMEOUT_SECS):
            while True:
                changed, value = await self.queue.get()
                if changed == node_id and accept(value):
                    return value


def server_tasks() -> list[asyncio.Task[Any]]:
    """Tasks of asyncua's server side (connections, sessions, subscriptions) still pending."""
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done()
        and task.get_coro().__qualname__.split(".")[0]  # type: ignore[union-attr]
        in {
            "OPCUAProtocol",
            "UaProcessor",
            "InternalSession",
            "InternalSubscription",
            "BinaryServer",
        }
    ]


def value_is(expected: object) -> Callable[[ua.DataValue], bool]:
    return lambda dv: dv.Value is not None and dv.Value.Value == expected


def make_client_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed OPC UA client application certificate (PEM) and key (PEM)."""
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        name,
        {},
        [x509.UniformResourceIdentifier(CLIENT_URI), x509.DNSName("localhost")],
        extended=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


async def secure_client(
    sim: OpcUaSimulator, cert: Path, key: Path, user: str | None, password: str | None
) -> Client:
    assert sim.server_certificate_path is not None
    client = Client(sim.endpoint, timeout=TIMEOUT_SECS)
    client.application_uri = CLIENT_URI
    if user is not None:
        client.set_user(user)
    if password is not None:
        client.set_password(password)
    await client.set_security(
        security_policies.SecurityPolicyBasic256Sha256,
        certificate=str(cert),
        private_key=str(key),
        server_certificate=str(sim.server_certificate_path),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    return client


# ------------------------------------------------------------------------------- address space


def test_points_read_by_node_id_and_by_browse_path_with_timestamps_and_no_read_limit() -> None:
    async def body() -> None:
        clock = FakeClock()
        threads = set(threading.enumerate())
        async with OpcUaSimulator(clock=clock) as sim, connect(sim) as client:
            assert sim.port != 0
            assert sim.endpoint == f"opc.tcp://127.0.0.1:{sim.port}/gxpgate/"
            assert sim.namespace_index == await client.get_namespace_index(NAMESPACE_URI)
            assert sim.node_id("cold-room-1", "temperature") == (
                f"ns={sim.namespace_index};s=cold-room-1.temperature"
            )
            ns = sim.namespace_index
            assert sim.browse_path("freezer-1", "door_open") == (
                f"0:Objects/{ns}:Warehouse/{ns}:freezer-1/{ns}:door_open"
            )
            assert sim.points() == list(EXPECTED)

            for (zone, point), expected in EXPECTED.items():
                by_id = client.get_node(sim.node_id(zone, point))
                steps = sim.browse_path(zone, point).split("/")
                by_path = await client.nodes.root.get_child(steps)
                assert by_path.nodeid == by_id.nodeid
                from_objects = await client.nodes.objects.get_child(steps[1:])
                assert from_objects.nodeid == by_id.nodeid

                dv = await by_id.read_data_value()
                assert dv.Value is not None
                assert dv.Value.Value == expected, (zone, point)
                kind = ua.VariantType.Boolean if point == "door_open" else ua.VariantType.Double
                assert dv.Value.VariantType == kind
                assert dv.StatusCode is not None
                assert dv.StatusCode.is_good()
                assert dv.SourceTimestamp == clock.datetime()
                assert dv.ServerTimestamp is not None
                assert sim.value(zone, point) == float(expected)

            # No limit is advertised as 0 (the specification's "no limit") and all 9 read at once.
            assert await client.get_node(MAX_NODES_PER_READ).read_value() == 0
            nodes = [client.get_node(sim.node_id(z, p)) for z, p in sim.points()]
            assert await client.read_values(nodes) == list(EXPECTED.values())

            # Variables are read-only.
            with pytest.raises(ua.uaerrors.BadUserAccessDenied):
                await nodes[0].write_value(ua.Variant(1.0, ua.VariantType.Double))

        # Not even in the event loop's default executor (asyncio.run would join that one).
        assert set(threading.enumerate()) == threads

    run(body)


# ------------------------------------------------------------------------------- scripting


def test_subscription_sees_scripted_values_with_source_timestamps() -> None:
    async def body() -> None:
        clock = FakeClock()
        changes = Changes()
        sim = OpcUaSimulator(clock=clock, update_interval_secs=FAST_UPDATES_SECS)
        async with sim, connect(sim) as client:
            temperature = sim.node_id("cold-room-1", "temperature")
            door = sim.node_id("freezer-1", "door_open")
            subscription = await client.create_subscription(20, changes)
            await subscription.subscribe_data_change(
                [client.get_node(temperature), client.get_node(door)]
            )
            first = await changes.wait_for(temperature, value_is(5.0))
            assert first.SourceTimestamp == clock.datetime()

            clock.now += 60
            await sim.set_value("cold-room-1", "temperature", 8.5)
            changed = await changes.wait_for(temperature, value_is(8.5))
            assert changed.SourceTimestamp == clock.datetime()
            assert changed.StatusCode is not None
            assert changed.StatusCode.is_good()
            assert sim.value("cold-room-1", "temperature") == 8.5

            await sim.set_value("freezer-1", "door_open", 1)
            opened = await changes.wait_for(door, value_is(True))
            assert opened.SourceTimestamp == clock.datetime()

            # A ramp is written by the update task: halfway through it, halfway there.
            sim.ramp("cold-room-1", "temperature", to=10.5, seconds=100)
            clock.now += 50
            ramped = await changes.wait_for(temperature, value_is(9.5))
            assert ramped.SourceTimestamp == clock.datetime()

            # Without source timestamps, only the server's.
            sim.source_timestamps = False
            await sim.set_value("cold-room-1", "temperature", 4.0)
            bare = await changes.wait_for(temperature, value_is(4.0))
            assert bare.SourceTimestamp is None
            assert bare.ServerTimestamp is not None
            await subscription.delete()

    run(body)


def test_set_bad_sends_the_status_code_and_none_returns_to_good() -> None:
    async def body() -> None:
        clock = FakeClock()
        async with OpcUaSimulator(clock=clock) as sim, connect(sim) as client:
            node = client.get_node(sim.node_id("ambient-1", "humidity"))

            await sim.set_bad("ambient-1", "humidity")
            dv = await node.read_data_value(raise_on_bad_status=False)
            assert dv.StatusCode is not None
            assert dv.StatusCode.value == ua.StatusCodes.BadSensorFailure
            assert dv.Value is not None
            assert dv.Value.Value is None  # Bad: the value is null (Part 4 §7.7.1)
            with pytest.raises(ua.uaerrors.BadSensorFailure):
                await node.read_value()

            await sim.set_bad("ambient-1", "humidity", "BadCommunicationError")
            dv = await node.read_data_value(raise_on_bad_status=False)
            assert dv.StatusCode is not None
            assert dv.StatusCode.value == ua.StatusCodes.BadCommunicationError

            await sim.set_bad("ambient-1", "humidity", "UncertainLastUsableValue")
            dv = await node.read_data_value(raise_on_bad_status=False)
            assert dv.StatusCode is not None
            assert dv.StatusCode.value == ua.StatusCodes.UncertainLastUsableValue
            assert dv.Value is not None
            assert dv.Value.Value == 40.0  # Uncertain keeps the value

            await sim.set_bad("ambient-1", "humidity", None)
            dv = await node.read_data_value()
            assert dv.StatusCode is not None
            assert dv.StatusCode.is_good()
            assert dv.Value is not None
            assert dv.Value.Value == 40.0

            # Other points are untouched.
            other = await client.get_node(sim.node_id("ambient-1", "temperature")).read_data_value()
            assert other.StatusCode is not None
            assert other.StatusCode.is_good()

            with pytest.raises(ValueError, match="unknown OPC UA status code name"):
                await sim.set_bad("ambient-1", "humidity", "BadSensorFailed")

    run(body)


def test_scripting_model_without_a_server() -> None:
    clock = FakeClock()
    sim = OpcUaSimulator([ZoneSpec("room", temperature_c=5.0, drift=False)], clock=clock)
    assert sim.value("room", "temperature") == 5.0
    sim.excursion("room", "temperature", 12.0, seconds=30)
    assert sim.value("room", "temperature") == 12.0
    clock.now += 30
    assert sim.value("room", "temperature") == 5.0  # handed back
    sim.ramp("room", "temperature", to=7.0, seconds=20)
    clock.now += 10
    assert sim.value("room", "temperature") == pytest.approx(6.0)
    sim.freeze("room", "temperature")
    clock.now += 100
    assert sim.value("room", "temperature") == pytest.approx(6.0)
    sim.resume("room", "temperature")
    assert sim.value("room", "temperature") == 5.0

    drifting = OpcUaSimulator(DEFAULT_ZONES, clock=clock, seed=7)
    again = OpcUaSimulator(DEFAULT_ZONES, clock=clock, seed=7)
    clock.now += 3600
    walk = [drifting.value("cold-room-1", "temperature") for _ in range(2)]
    assert walk[0] == again.value("cold-room-1", "temperature")  # same seed, same value
    assert walk[0] != 5.0
    assert abs(walk[0] - 5.0) <= 0.3


# ------------------------------------------------------------------------------- read limit


def test_max_nodes_per_read_is_advertised_and_enforced() -> None:
    async def body() -> None:
        async with (
            OpcUaSimulator(max_nodes_per_read=5, clock=FakeClock()) as sim,
            connect(sim) as client,
        ):
            assert await client.get_node(MAX_NODES_PER_READ).read_value() == 5
            nodes = [client.get_node(sim.node_id(z, p)) for z, p in sim.points()]
            assert len(nodes) == 9
            assert await client.read_values(nodes[:5]) == list(EXPECTED.values())[:5]
            with pytest.raises(ua.uaerrors.BadTooManyOperations):
                await client.read_values(nodes)
            # The session survives the refusal.
            assert await client.read_values(nodes[5:]) == list(EXPECTED.values())[5:]

    run(body)


# ------------------------------------------------------------------------------- restart


def test_stop_and_start_restart_the_server_on_the_same_port_with_the_same_node_ids() -> None:
    async def body() -> None:
        clock = FakeClock()
        changes = Changes()
        sim = OpcUaSimulator(clock=clock, update_interval_secs=FAST_UPDATES_SECS)
        async with sim:
            port, endpoint = sim.port, sim.endpoint
            ids = [sim.node_id(z, p) for z, p in sim.points()]
            paths = [sim.browse_path(z, p) for z, p in sim.points()]
            old = Client(endpoint, timeout=TIMEOUT_SECS)
            await old.connect()
            try:
                subscription = await old.create_subscription(20, changes)
                await subscription.subscribe_data_change(old.get_node(ids[0]))
                await changes.wait_for(ids[0], value_is(5.0))

                await sim.stop()
                assert not sim.running
                assert not server_tasks(), "stop() returned before the server side wound down"
                with pytest.raises(ConnectionRefusedError):
                    await asyncio.open_connection("127.0.0.1", port)
                with pytest.raises((ConnectionError, ua.UaError)):
                    await old.get_node(ids[0]).read_value()

                await sim.set_value("cold-room-1", "temperature", 6.5)  # model only, while down
                await sim.start()
            finally:
                await old.disconnect()  # logs that the connection is gone; does not raise

            assert (sim.port, sim.endpoint) == (port, endpoint)
            assert [sim.node_id(z, p) for z, p in sim.points()] == ids
            assert [sim.browse_path(z, p) for z, p in sim.points()] == paths
            async with connect(sim) as client:
                assert await client.get_namespace_index(NAMESPACE_URI) == sim.namespace_index
                node = client.get_node(ids[0])
                assert await node.read_value() == 6.5
                found = await client.nodes.root.get_child(paths[0].split("/"))
                assert found.nodeid == node.nodeid
                endpoints = await client.get_endpoints()
                assert [e.EndpointUrl for e in endpoints] == [endpoint]  # not one per start

                # The update task runs again: scripted changes reach a new subscription.
                fresh = Changes()
                subscription = await client.create_subscription(20, fresh)
                await subscription.subscribe_data_change(node)
                await fresh.wait_for(ids[0], value_is(6.5))
                sim.excursion("cold-room-1", "temperature", 9.0, seconds=60)
                await fresh.wait_for(ids[0], value_is(9.0))

    run(body)


# ------------------------------------------------------------------------------- security


def test_basic256sha256_sign_and_encrypt_with_a_trusted_client_certificate(
    tmp_path: Path,
) -> None:
    cert, key = make_client_certificate(tmp_path, "gateway")
    server_dir = tmp_path / "server"

    async def body() -> None:
        sim = OpcUaSimulator(
            security="basic256sha256",
            cert_dir=server_dir,
            trusted_client_certs=[cert],
            users={"gateway": "s3cret"},
            clock=FakeClock(),
        )
        path = sim.server_certificate_path
        assert path == server_dir / "server_cert.der"
        server_cert = x509.load_der_x509_certificate(path.read_bytes())
        san = server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert APPLICATION_URI in san.get_values_for_type(x509.UniformResourceIdentifier)
        assert "localhost" in san.get_values_for_type(x509.DNSName)
        assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        assert (server_dir / "server_key.pem").stat().st_mode & 0o077 == 0

        async with sim:
            client = await secure_client(sim, cert, key, "gateway", "s3cret")
            async with connect(sim, client):
                assert client.security_policy.Mode == ua.MessageSecurityMode.SignAndEncrypt
                assert client.security_policy.URI == SECURITY_POLICY_URI
                node = client.get_node(sim.node_id("freezer-1", "temperature"))
                assert await node.read_value() == -18.0
                endpoints = await client.get_endpoints()
                offered = {(e.SecurityPolicyUri, e.SecurityMode) for e in endpoints}
                assert offered == {
                    (SECURITY_POLICY_URI, ua.MessageSecurityMode.SignAndEncrypt),
                    (SECURITY_POLICY_URI, ua.MessageSecurityMode.Sign),
                }
                presented = x509.load_der_x509_certificate(endpoints[0].ServerCertificate)
                assert presented == server_cert

        # The same files are reused by the next simulator.
        assert OpcUaSimulator(
            security="basic256sha256", cert_dir=server_dir
        ).server_certificate_path
        assert x509.load_der_x509_certificate(path.read_bytes()) == server_cert

    run(body)


def test_basic256sha256_refuses_untrusted_certificates_wrong_passwords_and_no_security(
    tmp_path: Path,
) -> None:
    trusted, trusted_key = make_client_certificate(tmp_path, "gateway")
    stranger, stranger_key = make_client_certificate(tmp_path, "stranger")

    async def body() -> None:
        sim = OpcUaSimulator(
            security="basic256sha256",
            cert_dir=tmp_path / "server",
            trusted_client_certs=[trusted],
            users={"gateway": "s3cret"},
            clock=FakeClock(),
        )
        async with sim:
            refusals: list[tuple[Client, type[Exception]]] = [
                (
                    await secure_client(sim, stranger, stranger_key, "gateway", "s3cret"),
                    ua.uaerrors.BadCertificateUntrusted,
                ),
                (
                    await secure_client(sim, trusted, trusted_key, "gateway", "wrong"),
                    ua.uaerrors.BadUserAccessDenied,
                ),
                (
                    await secure_client(sim, trusted, trusted_key, None, None),
                    ua.uaerrors.BadIdentityTokenRejected,  # anonymous is not offered
                ),
                (Client(sim.endpoint, timeout=TIMEOUT_SECS), ua.uaerrors.UaError),
            ]
            for client, expected in refusals:
                with pytest.raises(expected) as refused:
                    await client.connect()
                if expected is ua.uaerrors.UaError:  # asyncua's own words for a policy mismatch
                    assert "No matching endpoints" in str(refused.value)
                with suppress(Exception):
                    await client.disconnect()

    run(body)


# ------------------------------------------------------------------------------- CLI entry


def test_run_forever_prints_where_it_listens_and_serves_until_cancelled() -> None:
    async def body() -> None:
        lines: list[str] = []
        printed = asyncio.Event()
        asyncua_level = logging.getLogger("asyncua").level

        def collect(text: str) -> None:
            lines.append(text)
            if text.startswith("zone"):
                printed.set()

        task = asyncio.create_task(
            run_forever("127.0.0.1", 0, max_nodes_per_read=4, print_fn=collect)
        )
        await asyncio.wait_for(printed.wait(), TIMEOUT_SECS * 2)
        match = re.fullmatch(
            r"OPC UA simulator listening on (opc\.tcp://127\.0\.0\.1:(\d+)/gxpgate/)", lines[0]
        )
        assert match, lines[0]
        endpoint = match.group(1)
        assert lines[1].startswith("security: none")
        assert lines[2] == "MaxNodesPerRead: 4"
        table = lines[3].splitlines()
        assert table[0].split() == ["zone", "point", "node_id", "browse_path"]
        assert len(table) == 1 + len(DEFAULT_ZONES) * len(POINTS)
        zone, point, node_id, path = table[1].split()
        assert (zone, point) == ("cold-room-1", "temperature")
        assert logging.getLogger("asyncua").level == logging.ERROR

        async with Client(endpoint, timeout=TIMEOUT_SECS) as client:
            assert await client.get_node(node_id).read_value() == pytest.approx(5.0, abs=0.3)
            found = await client.nodes.root.get_child(path.split("/"))
            assert found.nodeid.to_string() == node_id

        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", int(match.group(2)))
        assert logging.getLogger("asyncua").level == asyncua_level

    run(body)


def test_bad_configuration_and_scripting_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'/' or ':'"):
        ZoneSpec("cold/room")
    with pytest.raises(ValueError, match="empty"):
        ZoneSpec("")
    with pytest.raises(ValueError, match="duplicate"):
        OpcUaSimulator([ZoneSpec("a"), ZoneSpec("a")])
    with pytest.raises(ValueError, match="needs cert_dir"):
        OpcUaSimulator(security="basic256sha256")
    with pytest.raises(ValueError, match="trusted_client_certs needs"):
        OpcUaSimulator(trusted_client_certs=[tmp_path / "x.der"])
    with pytest.raises(ValueError, match="users is empty"):
        OpcUaSimulator(users={})
    with pytest.raises(ValueError, match="max_nodes_per_read"):
        OpcUaSimulator(max_nodes_per_read=-1)
    sim = OpcUaSimulator()
    with pytest.raises(ValueError, match="unknown point"):
        sim.freeze("cold-room-1", "pressure")
    with pytest.raises(ValueError, match="no zone 'nowhere'"):
        sim.resume("nowhere", "temperature")
    with pytest.raises(ValueError, match="finite"):
        sim.excursion("cold-room-1", "temperature", float("nan"), 10)
    with pytest.raises(RuntimeError, match="once the simulator has started"):
        sim.node_id("cold-room-1", "temperature")
