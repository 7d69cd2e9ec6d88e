"""OPC UA simulator of a cold-room / building-management system, on asyncua's own server.

It stands for the BMS of a warehouse: one OPC UA server, one object per zone. Tests run it
in-process (``async with OpcUaSimulator() as sim``); ``gxpgate simulate opcua`` runs it
standalone through :func:`run_forever`.

Address space (namespace :data:`NAMESPACE_URI`, index :attr:`OpcUaSimulator.namespace_index`,
2 in practice)::

    Objects/                                   (ns=0, standard)
      Warehouse                  folder        ns=2;i=1
        <zone>                   object        ns=2;s=<zone>
          temperature            Double, °C    ns=2;s=<zone>.temperature
          humidity               Double, %RH   ns=2;s=<zone>.humidity
          door_open              Boolean       ns=2;s=<zone>.door_open

The variables are read-only. NodeIds are strings built from the names, so they are the same
after a restart and in every run. A browse path (:meth:`OpcUaSimulator.browse_path`) is the
list of QualifiedName strings ``nsidx:Name`` from the Root folder, joined by ``/``, starting
with the Objects folder: ``0:Objects/2:Warehouse/2:cold-room-1/2:temperature``. Resolve it with
``client.nodes.root.get_child(path.split("/"))``, or drop the first step and start at
``client.nodes.objects``. Zone names therefore may not contain ``/`` or ``:``.

Values. A background task (started and stopped with the listener) recomputes every point each
``update_interval_secs`` and writes the ones whose value or status changed, so subscriptions see
changes and a held value is written once. Every write carries a StatusCode, a ServerTimestamp
(wall clock) and, while :attr:`OpcUaSimulator.source_timestamps` is true, a SourceTimestamp
taken from the simulator's clock at the change. A drifting point is its base value plus a
bounded random walk (±0.3 °C, ±1.5 %RH, one step every 5 s, linear between steps) seeded from
``(seed, zone, point)``. Scripting (``set_value``, ``ramp``, ``excursion``, ``freeze``,
``resume``) replaces a point's behaviour and takes effect at the next update; ``set_value`` and
``set_bad`` also write at once. A Bad status makes the server send a null value (OPC UA Part 4
§7.7.1, which asyncua applies); an Uncertain status keeps the value.

Security. ``security="none"``: one endpoint, SecurityPolicy None, no certificate.
``security="basic256sha256"``: two endpoints, policy
``http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256`` in modes Sign and SignAndEncrypt,
and no endpoint without security. The server's certificate and key live in ``cert_dir`` as
``server_cert.der`` (DER, X.509 v3, self-signed, 2048-bit RSA, SANs: the application URI
:data:`APPLICATION_URI`, DNS ``localhost`` and this host's name, IP ``127.0.0.1`` and the listen
address) and ``server_key.pem`` (PKCS#8 PEM, unencrypted, mode 0600); both are created when
either is missing, and reused as they are otherwise.

``trusted_client_certs`` pins client application certificates (DER or PEM files): a session
whose certificate is not one of them, byte for byte, or is outside its validity period is
refused with BadCertificateUntrusted / BadCertificateTimeInvalid at CreateSession. An empty
list accepts any client certificate, unchecked, which is asyncua's default. ``users=None``
allows anonymous sessions only; a ``users`` table allows user name and password only (over
SecurityPolicy None the password travels in clear text, as that policy implies).

MaxNodesPerRead. With ``max_nodes_per_read=N`` the server advertises N in
``Server/ServerCapabilities/OperationLimits/MaxNodesPerRead`` (i=11705) and answers a Read
service call of more than N nodes from a client session with the service result
BadTooManyOperations. 0 advertises 0, which the specification defines as "no limit" (asyncua
would otherwise advertise 10000 without enforcing it).

How it sits on asyncua 2.1.
- Building the standard address space takes about 2 s, so it happens once, at the first
  :meth:`OpcUaSimulator.start`. :meth:`~OpcUaSimulator.stop` and ``start`` then restart the
  network side around the same ``InternalServer``: stop closes every session (deleting its
  subscriptions) and every connection and the listener; start puts a fresh ``Server`` wrapper
  around the same address space and listens again on the same port, so clients see a server
  restart (their sessions and subscriptions are gone) with the same NodeIds.
- asyncua fills the address space with ``asyncio.to_thread``, whose worker stays in the event
  loop's default executor after the simulator has exited. ``_InternalServer`` runs it in a
  one-thread pool of its own that is shut down as soon as the address space is built.
- Certificates and keys are handed to asyncua as bytes: given a path it reads the file on an
  AnyIO worker thread that outlives the call.
- asyncua's one-second ``CurrentTime`` task is disabled (its ``stop`` waits up to a second for
  it); the update task writes ``ServerStatus/CurrentTime`` instead.
- The read limit is a ``PreRead`` server callback that raises ``ServiceError``; asyncua answers
  it with a ServiceFault carrying that status.
- asyncua keeps a session that has subscriptions alive after its connection drops, for the
  client to reactivate. A real restart forgets it, so stop closes those too; asyncua lists
  them only in ``InternalServer._external_sessions``.
- With port 0 the endpoint descriptions asyncua builds before binding say port 0; asyncua
  rewrites every URL it sends to the one the client asked for, so clients never see it.

Concurrency: everything runs on the event loop that started the simulator. The scripting
methods must be called from that loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from copy import copy
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from asyncua import Server, ua
from asyncua.common.callback import CallbackService, CallbackType, ServerItemCallback
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen, security_policies
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_server import InternalServer
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from gxpgate.simulators.behaviour import POINTS, ScriptedPoints, check_point
from gxpgate.simulators.script import OPCUA, Command, Dialect, drive

__all__ = [
    "APPLICATION_URI",
    "DEFAULT_ZONES",
    "NAMESPACE_URI",
    "POINTS",
    "SECURITY_POLICY_URI",
    "OpcUaSimulator",
    "ZoneSpec",
    "format_point_table",
    "run_forever",
    "script_dialect",
]

NAMESPACE_URI = "urn:gxpgate:simulator:warehouse"
APPLICATION_URI = "urn:gxpgate:simulator:opcua-server"
SECURITY_POLICY_URI: str = security_policies.SecurityPolicyBasic256Sha256.URI

SERVER_CERT_FILE = "server_cert.der"
SERVER_KEY_FILE = "server_key.pem"

_ENDPOINT_PATH = "/gxpgate/"
_FOLDER = "Warehouse"
_FOLDER_ID = 1
_VARIANT = {
    "temperature": ua.VariantType.Double,
    "humidity": ua.VariantType.Double,
    "door_open": ua.VariantType.Boolean,
}
# point -> (bound of the walk around the base, standard deviation of one step)
_CERT_DAYS = 3650

_Key = tuple[str, str]


@dataclass
class ZoneSpec:
    """One zone of the warehouse: an object under ``Objects/Warehouse``."""

    name: str
    """Zone name, e.g. ``cold-room-1``; the object's browse name and the start of its NodeIds."""
    temperature_c: float = 5.0
    """Base temperature in °C."""
    humidity_pct: float = 45.0
    """Base relative humidity in %."""
    drift: bool = True
    """Slow bounded random walk around the base values (deterministic for a given seed)."""

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip():
            raise ValueError(f"zone name {self.name!r} is empty or has surrounding spaces")
        if "/" in self.name or ":" in self.name:
            raise ValueError(f"zone name {self.name!r} contains '/' or ':' (browse path syntax)")


DEFAULT_ZONES: list[ZoneSpec] = [
    ZoneSpec("cold-room-1", temperature_c=5.0),
    ZoneSpec("freezer-1", temperature_c=-18.0, humidity_pct=30.0),
    ZoneSpec("ambient-1", temperature_c=21.0, humidity_pct=40.0),
]


# --------------------------------------------------------------------------- point behaviours


class _Zone(ScriptedPoints):
    """One zone's points: their base behaviours and current ones."""

    def __init__(self, spec: ZoneSpec, seed: int, t0: float) -> None:
        super().__init__(
            f"{seed}:{spec.name}", spec.temperature_c, spec.humidity_pct, spec.drift, t0
        )
        self.spec = spec


# --------------------------------------------------------------------------- asyncua pieces


class _InternalServer(InternalServer):
    """asyncua's InternalServer, building the standard address space on a thread it joins."""

    async def load_standard_address_space(self, shelf_file: Path | None = None) -> None:
        # Same work as asyncua's, minus the shelf cache (unused here): fill_address_space is
        # CPU-bound for ~2 s. asyncua's asyncio.to_thread leaves a worker in the loop's default
        # executor; this pool's only thread ends before the simulator starts listening.
        from asyncua.server.standard_address_space import standard_address_space

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opcua-sim-aspace")
        try:
            await asyncio.get_running_loop().run_in_executor(
                pool, standard_address_space.fill_address_space, self.node_mgt_service
            )
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # the thread ends when fill returns
            raise
        pool.shutdown(wait=True)  # the work is done: joins an idle thread at once


class _PasswordUsers(UserManager):
    """User name and password from a fixed table; anything else is refused."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = {name: password.encode() for name, password in users.items()}

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        expected = self._users.get(username or "")
        if expected is None or password is None:
            return None
        if not hmac.compare_digest(expected, password.encode()):
            return None
        return User(role=UserRole.User, name=username)


class _PinnedCertificates:
    """asyncua certificate validator: the client certificate must be one of these, unexpired."""

    def __init__(self, certificates: Sequence[x509.Certificate]) -> None:
        self._der = {c.public_bytes(serialization.Encoding.DER) for c in certificates}

    async def __call__(self, cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
        if cert.public_bytes(serialization.Encoding.DER) not in self._der:
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)
        now = datetime.now(UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise ServiceError(ua.StatusCodes.BadCertificateTimeInvalid)


# --------------------------------------------------------------------------- public API


class OpcUaSimulator:
    """OPC UA server simulating a warehouse BMS; an async context manager that listens while
    entered, and can be stopped and started again in between (a server restart).

    ``port=0`` picks a free port at the first start; :attr:`port` holds it from then on and
    later starts reuse it. ``clock`` (seconds since the epoch) drives drift, scripting and
    SourceTimestamps; tests may pass a fake one. The update task runs on the real clock.
    """

    source_timestamps: bool
    """Whether writes carry a SourceTimestamp (True); False imitates servers that send none."""

    def __init__(
        self,
        zones: Sequence[ZoneSpec] = DEFAULT_ZONES,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        security: Literal["none", "basic256sha256"] = "none",
        cert_dir: Path | None = None,
        trusted_client_certs: Sequence[Path] = (),
        users: Mapping[str, str] | None = None,
        max_nodes_per_read: int = 0,
        update_interval_secs: float = 0.5,
        seed: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        names = [z.name for z in zones]
        if not names:
            raise ValueError("the simulator needs at least one zone")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate zone names in {names}")
        if security not in ("none", "basic256sha256"):
            raise ValueError(f"security must be 'none' or 'basic256sha256', got {security!r}")
        if security == "basic256sha256" and cert_dir is None:
            raise ValueError("security 'basic256sha256' needs cert_dir for the server certificate")
        if trusted_client_certs and security == "none":
            raise ValueError("trusted_client_certs needs security 'basic256sha256'")
        if users is not None and not users:
            raise ValueError("users is empty: nobody could connect (None allows anonymous)")
        if max_nodes_per_read < 0:
            raise ValueError(f"max_nodes_per_read must be >= 0, got {max_nodes_per_read}")
        if not update_interval_secs > 0:
            raise ValueError(f"update_interval_secs must be > 0, got {update_interval_secs}")
        self.host = host
        self.port = port
        self.security = security
        self.max_nodes_per_read = max_nodes_per_read
        self.update_interval_secs = update_interval_secs
        self.source_timestamps = True
        self.namespace_index = 0
        self._clock = clock
        t0 = clock()
        self._zones = {z.name: _Zone(dataclasses.replace(z), seed, t0) for z in zones}
        self._status: dict[_Key, int] = {}
        self._written: dict[_Key, tuple[float, int]] = {}
        self._node_ids: dict[_Key, ua.NodeId] = {}
        self._users = dict(users) if users is not None else None
        self._trusted = [_load_certificate(path) for path in trusted_client_certs]
        self.server_certificate_path: Path | None = None
        self._server_credentials = (b"", b"")  # certificate (DER), private key (PEM)
        if security == "basic256sha256":
            assert cert_dir is not None
            cert_path, key_path = _ensure_server_certificate(cert_dir, host)
            self.server_certificate_path = cert_path
            self._server_credentials = (cert_path.read_bytes(), key_path.read_bytes())
        self._iserver: _InternalServer | None = None
        self._server: Server | None = None
        self._updater: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._timers: set[asyncio.Task[None]] = set()

    # ----------------------------------------------------------------------- lifecycle

    @property
    def endpoint(self) -> str:
        """``opc.tcp://HOST:PORT/gxpgate/`` (PORT is 0 until the first start with ``port=0``)."""
        return f"opc.tcp://{_netloc(self.host, self.port)}{_ENDPOINT_PATH}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def __aenter__(self) -> OpcUaSimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for timer in list(self._timers):  # a staged restart must not outlive the simulator
            timer.cancel()
        await self.stop()

    async def start(self) -> None:
        """Listen (again); returns once the listener is bound and every point is written."""
        if self._server is not None:
            raise RuntimeError("the OPC UA simulator is already running")
        iserver = self._iserver
        if iserver is None:
            users = _PasswordUsers(self._users) if self._users is not None else None
            iserver = _InternalServer(user_manager=users)
        server = Server(iserver=iserver)
        server.name = "gxpgate OPC UA warehouse simulator"
        server.product_uri = "urn:gxpgate:simulator"
        server.manufacturer_name = "gxpgate"
        server.disable_clock()  # see the module docstring; the update task writes CurrentTime
        server.set_endpoint(self.endpoint)
        if self._iserver is None:
            await server.init()  # builds the standard address space (~2 s)
            await server.set_application_uri(APPLICATION_URI)
            await self._build_address_space(server)
            self._iserver = iserver
        else:
            await server.set_application_uri(APPLICATION_URI)
            iserver.endpoints.clear()  # the previous wrapper's; start() adds them again
        await self._configure_security(server)
        try:
            await server.start()
        except OSError as exc:
            raise OSError(
                exc.errno, f"OPC UA simulator cannot listen on {self.endpoint}: {exc}"
            ) from exc
        assert server.bserver is not None
        if server.bserver.port == 0:  # asyncua reads the port back only from a single socket
            await server.stop()
            raise ValueError(f"port 0 needs a host with one address, not {self.host!r}")
        self.port = server.bserver.port
        self._server = server
        self._written.clear()
        await self._write_changes()
        self._updater = asyncio.create_task(self._update_loop(), name="opcua-sim-update")

    async def stop(self) -> None:
        """Close every session and connection and the listener (a server going down).

        The address space, the model and the port are kept for :meth:`start`.
        """
        server, self._server = self._server, None
        if server is None:
            return
        updater, self._updater = self._updater, None
        try:
            if updater is not None:
                updater.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await updater  # raises here if the update task had failed
        finally:
            # Sessions first, while their connections are up: close_session deletes the
            # subscriptions, so no session is left waiting for its client to come back.
            for session in list(server.iserver._external_sessions.values()):
                await session.close_session(True)
            # Closes every connection, then the listener, and awaits asyncua's per-connection
            # cleanup (the tests check that no server task is left when this returns).
            await server.stop()

    # ----------------------------------------------------------------------- naming

    def node_id(self, zone: str, point: str) -> str:
        """NodeId string of a point, e.g. ``ns=2;s=cold-room-1.temperature``."""
        self._zone(zone)
        return f"ns={self._ns()};s={zone}.{check_point(point)}"

    def browse_path(self, zone: str, point: str) -> str:
        """Browse path of a point from the Root folder, e.g.
        ``0:Objects/2:Warehouse/2:cold-room-1/2:temperature`` (see the module docstring)."""
        self._zone(zone)
        ns = self._ns()
        return f"0:Objects/{ns}:{_FOLDER}/{ns}:{zone}/{ns}:{check_point(point)}"

    def points(self) -> list[tuple[str, str]]:
        """Every ``(zone, point)``, in address-space order."""
        return [(zone, point) for zone in self._zones for point in POINTS]

    # ----------------------------------------------------------------------- scripting

    def value(self, zone: str, point: str) -> float:
        """The point's model value now (door_open: 1.0 open, 0.0 closed)."""
        return self._zone(zone).value(point, self._clock())

    async def set_value(self, zone: str, point: str, value: float) -> None:
        """Hold ``value`` (no drift) until :meth:`resume`; written at once if running."""
        self._zone(zone).hold(point, value)
        await self._write_point((zone, point))

    def ramp(self, zone: str, point: str, to: float, seconds: float) -> None:
        """Go linearly from the current value to ``to`` over ``seconds``, then hold ``to``."""
        self._zone(zone).ramp(point, to, seconds, self._clock())

    def excursion(self, zone: str, point: str, value: float, seconds: float) -> None:
        """Jump to ``value`` for ``seconds``, then hand back to the behaviour it interrupted."""
        self._zone(zone).excursion(point, value, seconds, self._clock())

    def freeze(self, zone: str, point: str) -> None:
        """Stuck sensor: keep the current value."""
        self._zone(zone).freeze(point, self._clock())

    def resume(self, zone: str, point: str) -> None:
        """Back to the base value, drifting if the zone drifts."""
        self._zone(zone).resume(point)

    async def set_bad(self, zone: str, point: str, status: str | None = "BadSensorFailure") -> None:
        """Give the point's DataValue the StatusCode named ``status`` (e.g. BadSensorFailure,
        UncertainLastUsableValue, BadCommunicationError) until changed; ``None`` is Good.
        Written at once if running."""
        self._zone(zone)
        key = (zone, check_point(point))
        if status is None:
            self._status.pop(key, None)
        else:
            code = getattr(ua.StatusCodes, status, None)
            if not isinstance(code, int) or status.startswith("_"):
                raise ValueError(f"unknown OPC UA status code name {status!r}")
            self._status[key] = code
        await self._write_point(key)

    # ----------------------------------------------------------------------- command language

    def zone_names(self) -> dict[str, str]:
        """Every name a script may use for a zone -> its name."""
        return {zone: zone for zone in self._zones}

    async def apply(self, command: Command) -> None:
        """Carry out one command of :data:`gxpgate.simulators.script.OPCUA`; ValueError when it
        cannot."""
        if command.verb == "drop":
            await self.stop()
            if command.seconds is not None:
                self._restart_later(command.seconds)
            return
        if command.verb == "ok":
            if not self.running:
                await self.start()
            return
        points = [command.point] if command.point else list(POINTS)
        for zone in command.sensors:
            for point in points:
                if command.verb == "set":
                    await self.set_value(zone, point, command.values[0])
                elif command.verb == "ramp":
                    if len(command.values) == 2:
                        await self.set_value(zone, point, command.values[0])
                    self.ramp(zone, point, command.values[-1], command.seconds or 0.0)
                elif command.verb == "excursion":
                    self.excursion(zone, point, command.values[0], command.seconds or 0.0)
                elif command.verb == "freeze":
                    self.freeze(zone, point)
                elif command.verb == "resume":
                    self.resume(zone, point)
                elif command.verb == "bad":
                    await self.set_bad(zone, point, command.status)
                    if command.seconds is not None:
                        self._good_later(zone, point, command.status, command.seconds)
                elif command.verb == "good":
                    await self.set_bad(zone, point, None)

    def _restart_later(self, seconds: float) -> None:
        async def restart() -> None:
            await asyncio.sleep(seconds)
            if not self.running:  # an "ok" may have brought it back already
                await self.start()

        self._keep(restart())

    def _good_later(self, zone: str, point: str, status: str | None, seconds: float) -> None:
        code = getattr(ua.StatusCodes, status or "", None)

        async def clear() -> None:
            await asyncio.sleep(seconds)
            if self._status.get((zone, point)) == code:  # not changed by a later command
                await self.set_bad(zone, point, None)

        self._keep(clear())

    def _keep(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._timers.add(task)  # referenced until done
        task.add_done_callback(self._timers.discard)

    # ----------------------------------------------------------------------- internals

    def _zone(self, zone: str) -> _Zone:
        try:
            return self._zones[zone]
        except KeyError:
            raise ValueError(f"no zone {zone!r}; have {sorted(self._zones)}") from None

    def _ns(self) -> int:
        if not self.namespace_index:
            raise RuntimeError("NodeIds are known once the simulator has started")
        return self.namespace_index

    async def _build_address_space(self, server: Server) -> None:
        ns = await server.register_namespace(NAMESPACE_URI)
        self.namespace_index = ns
        folder = await server.nodes.objects.add_folder(f"ns={ns};i={_FOLDER_ID}", f"{ns}:{_FOLDER}")
        for zone in self._zones:
            obj = await folder.add_object(f"ns={ns};s={zone}", f"{ns}:{zone}")
            for point in POINTS:
                kind = _VARIANT[point]
                initial = False if kind is ua.VariantType.Boolean else 0.0
                node = await obj.add_variable(
                    self.node_id(zone, point), f"{ns}:{point}", initial, varianttype=kind
                )
                self._node_ids[zone, point] = node.nodeid
        limit = server.get_node(
            ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead
        )
        await limit.write_value(ua.Variant(self.max_nodes_per_read, ua.VariantType.UInt32))
        server.subscribe_server_callback(CallbackType.PreRead, self._check_read_limit)

    async def _configure_security(self, server: Server) -> None:
        if self._users is not None:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        else:
            server.set_identity_tokens([ua.AnonymousIdentityToken])
        if self.security == "none":
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
            return
        server.set_security_policy(
            [
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                ua.SecurityPolicyType.Basic256Sha256_Sign,
            ]
        )
        # Bytes, not paths: asyncua would read the files on an AnyIO worker thread.
        await server.load_certificate(self._server_credentials[0], format="der")
        await server.load_private_key(self._server_credentials[1], format="pem")
        if self._trusted:
            server.set_certificate_validator(_PinnedCertificates(self._trusted))

    def _check_read_limit(self, event: ServerItemCallback, _: CallbackService) -> None:
        if not self.max_nodes_per_read or not event.is_external:
            return
        if len(event.request_params.NodesToRead) > self.max_nodes_per_read:
            raise ServiceError(ua.StatusCodes.BadTooManyOperations)

    async def _update_loop(self) -> None:
        while True:
            await asyncio.sleep(self.update_interval_secs)
            await self._write_changes()

    async def _write_changes(self) -> None:
        for key in self.points():
            await self._write_point(key)
        server = self._server
        if server is not None:
            now = datetime.now(UTC)
            status_node = server.get_node(ua.ObjectIds.Server_ServerStatus)
            status = copy(await status_node.read_value())
            status.CurrentTime = now
            await status_node.write_value(status)
            await server.get_node(ua.ObjectIds.Server_ServerStatus_CurrentTime).write_value(now)

    async def _write_point(self, key: _Key) -> None:
        """Write the point's current value and status if they changed since the last write."""
        async with self._write_lock:
            server = self._server
            if server is None:
                return
            zone, point = key
            now = self._clock()
            value = self._zones[zone].behaviour[point].value_at(now)
            status = self._status.get(key, ua.StatusCodes.Good)
            if self._written.get(key) == (value, status):
                return
            kind = _VARIANT[point]
            variant = ua.Variant(value >= 0.5 if kind is ua.VariantType.Boolean else value, kind)
            source = ua.DateTime.fromtimestamp(now, UTC) if self.source_timestamps else None
            datavalue = ua.DataValue(
                Value=variant,
                StatusCode=ua.StatusCode(ua.UInt32(status)),
                SourceTimestamp=source,
                ServerTimestamp=ua.DateTime.now(UTC),
            )
            await server.write_attribute_value(self._node_ids[key], datavalue)
            self._written[key] = (value, status)


# --------------------------------------------------------------------------- helpers


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _load_certificate(path: Path) -> x509.Certificate:
    data = Path(path).read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _ensure_server_certificate(cert_dir: Path, host: str) -> tuple[Path, Path]:
    """``cert_dir``'s server certificate (DER) and key (PEM), created if either is missing."""
    cert_path, key_path = cert_dir / SERVER_CERT_FILE, cert_dir / SERVER_KEY_FILE
    if cert_path.is_file() and key_path.is_file():
        cert = x509.load_der_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
            raise ValueError(f"{cert_path} does not belong to {key_path}")
        return cert_path, key_path
    cert_dir.mkdir(parents=True, exist_ok=True)
    key = cert_gen.generate_private_key()
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(APPLICATION_URI),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    hostname = socket.gethostname()
    if hostname and hostname != "localhost":
        names.append(x509.DNSName(hostname))
    with contextlib.suppress(ValueError):
        address = x509.IPAddress(ipaddress.ip_address(host))
        if address not in names and not address.value.is_unspecified:
            names.append(address)
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        "gxpgate OPC UA simulator",
        {"organizationName": "gxpgate"},
        names,
        extended=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        days=_CERT_DAYS,
    )
    key_path.touch(mode=0o600)
    key_path.chmod(0o600)  # touch keeps the mode of a file that exists
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    return cert_path, key_path


@contextlib.contextmanager
def _quiet_asyncua_logging() -> Iterator[None]:
    """asyncua logs every connection and request at INFO, routine conditions (plain-text
    passwords, certificates without this host's name) at WARNING, and every ServiceFault it
    sends (a refused read, a dead session) at ERROR. Keep real errors only."""
    root = logging.getLogger("asyncua")
    processor = logging.getLogger("asyncua.server.uaprocessor")

    def drop_service_faults(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("sending service fault response")

    level = root.level
    root.setLevel(logging.ERROR)
    processor.addFilter(drop_service_faults)
    try:
        yield
    finally:
        processor.removeFilter(drop_service_faults)
        root.setLevel(level)


def format_point_table(sim: OpcUaSimulator) -> str:
    """Every point as a plain-text table: zone, point, NodeId, browse path."""
    columns = ("zone", "point", "node_id", "browse_path")
    rows = [
        [zone, point, sim.node_id(zone, point), sim.browse_path(zone, point)]
        for zone, point in sim.points()
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [list(columns), *rows]
    )


async def run_forever(
    host: str,
    port: int,
    *,
    security: str = "none",
    cert_dir: Path | None = None,
    max_nodes_per_read: int = 0,
    print_fn: Callable[[str], None] = print,
    script: Sequence[Command] = (),
    interactive: bool = False,
) -> None:
    """Serve the simulator until cancelled, after printing its endpoint, security and points;
    run ``script`` (and, when ``interactive``, the commands typed on stdin) meanwhile."""
    if security not in ("none", "basic256sha256"):
        raise ValueError(f"security must be 'none' or 'basic256sha256', got {security!r}")
    with _quiet_asyncua_logging():
        sim = OpcUaSimulator(
            host=host,
            port=port,
            security=security,  # type: ignore[arg-type]
            cert_dir=cert_dir,
            max_nodes_per_read=max_nodes_per_read,
        )
        async with sim:
            print_fn(f"OPC UA simulator listening on {sim.endpoint}")
            if sim.server_certificate_path is None:
                print_fn("security: none (SecurityPolicy None, anonymous)")
            else:
                print_fn(
                    f"security: Basic256Sha256 Sign and SignAndEncrypt ({SECURITY_POLICY_URI}), "
                    "any client certificate accepted, anonymous"
                )
                print_fn(f"server certificate (DER): {sim.server_certificate_path}")
            limit = sim.max_nodes_per_read or "no limit"
            print_fn(f"MaxNodesPerRead: {limit}")
            print_fn(format_point_table(sim))
            zones, dialect = sim.zone_names(), script_dialect()
            await drive(sim.apply, zones, script, interactive, print_fn, dialect)


def script_dialect() -> Dialect:
    """The OPC UA command language, ``bad`` taking the StatusCode names asyncua knows."""
    names = (name for name in vars(ua.StatusCodes) if name.startswith(("Bad", "Uncertain")))
    return OPCUA.with_statuses(names)
