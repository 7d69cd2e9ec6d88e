"""OPC UA source (asyncua): subscriptions or batched polling, rebuilt after every connection loss.

The source connects lazily. Any failure disconnects it completely, so the next ``read()`` or
``stream()`` starts over: a new session, browse paths resolved again, subscriptions created
again. That is what keeps the gateway working after a server restart, where other gateways keep
failing with ``BadNodeIdUnknown`` or a dead subscription until someone restarts them. asyncua's
own reconnect supervisor is off: the agent owns backoff and the offline/online audit records.

Status codes: Good → ``good``; Uncertain → ``uncertain`` (value kept, status in ``data``); Bad →
``bad`` with ``value`` null and the status name in ``data.error``. While disconnected nothing is
produced: no fabricated values. asyncua errors are translated here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from asyncua import Client, Node, ua
from asyncua.crypto import security_policies
from asyncua.crypto.uacrypto import load_certificate
from cryptography.hazmat.primitives import hashes, serialization

from gxpgate.drivers.base import DeviceUnreachable, DriverError, Sample, utc_now
from gxpgate.drivers.opcua_model import OpcUaDevice, OpcUaPoint

__all__ = ["OpcUaSource", "ensure_application_certificate"]

log = logging.getLogger(__name__)

MAX_NODES_PER_READ = f"i={ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead}"
DEFAULT_READ_CHUNK = 500
_HANDLE_BASE = 1000


class _Lost:
    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Handler:
    """asyncua calls this from its own task; it only queues, never blocks."""

    def __init__(self, source: OpcUaSource, queue: asyncio.Queue[Sample | _Lost]) -> None:
        self.source = source
        self.queue = queue

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        item = data.monitored_item
        name = self.source._by_handle.get(item.ClientHandle)
        if name is not None:
            self.queue.put_nowait(self.source._sample(name, item.Value))

    def status_change_notification(self, status: Any) -> None:
        code = getattr(status, "Status", status)
        self.queue.put_nowait(_Lost(f"subscription status {_status_name(code)}"))


class OpcUaSource:
    """One OPC UA server. ``read()`` for polling mode, ``stream()`` for subscription mode; the
    agent calls one of them at a time, never concurrently."""

    def __init__(self, device_id: str, config: OpcUaDevice) -> None:
        self.device_id = device_id
        self.config = config
        self.pushed = config.mode == "subscription"
        self.poll_interval_secs = config.poll_interval_secs
        self._client: Client | None = None
        self._nodes: dict[str, Node] = {}
        self._by_handle: dict[int, str] = {}
        self._unresolved: dict[str, str] = {}
        self._read_chunk = DEFAULT_READ_CHUNK
        self._lost: asyncio.Queue[Sample | _Lost] | None = None

    async def __aenter__(self) -> OpcUaSource:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._disconnect()

    def describe(self) -> list[str]:
        cfg = self.config
        lines = [
            f"opcua {cfg.endpoint} ({cfg.mode}, security {cfg.security.policy}/{cfg.security.mode})"
        ]
        for name, point in cfg.points.items():
            lines.append(f"  {name}: {point.node_id or point.browse_path}")
        return lines

    # -- connection --------------------------------------------------------------------------

    async def _connect(self) -> Client:
        if self._client is not None:
            return self._client
        cfg = self.config
        timeout = cfg.timeout_ms / 1000
        client = Client(cfg.endpoint, timeout=timeout, watchdog_intervall=max(timeout, 1.0))
        try:
            await self._configure(client)
            await client.connect()
        except DriverError:
            raise
        except (OSError, TimeoutError, ua.UaError, ConnectionError) as exc:
            with contextlib.suppress(Exception):
                await client.disconnect()
            raise DeviceUnreachable(self.device_id, f"connect failed: {_describe(exc)}") from exc
        self._client = client
        try:
            await self._resolve(client)
            if not self.pushed:
                self._read_chunk = await _max_nodes_per_read(client)
        except (OSError, TimeoutError, ua.UaError, ConnectionError) as exc:
            await self._disconnect()
            raise DeviceUnreachable(self.device_id, f"after connect: {_describe(exc)}") from exc
        log.info("opcua.connected device=%s endpoint=%s", self.device_id, cfg.endpoint)
        return client

    async def _configure(self, client: Client) -> None:
        cfg = self.config
        sec = cfg.security
        if sec.policy != "None":
            # the model guarantees all three files for a secure policy
            certificate, key, trusted = (
                sec.certificate_file, sec.private_key_file, sec.server_certificate_file
            )  # fmt: skip
            if certificate is None or key is None or trusted is None:
                raise DriverError(self.device_id, "security files missing")
            await self._check_server_certificate(trusted)
            client.application_uri = sec.application_uri
            mode = getattr(ua.MessageSecurityMode, sec.mode)
            try:
                await client.set_security(
                    security_policies.SecurityPolicyBasic256Sha256,
                    certificate=str(certificate),
                    private_key=str(key),
                    server_certificate=str(trusted),
                    mode=mode,
                )
            except (OSError, ValueError) as exc:
                raise DriverError(self.device_id, f"security setup: {exc}") from exc
        username, password = self._credentials()
        if username is not None:
            client.set_user(username)
            client.set_password(password or "")

    async def _check_server_certificate(self, trusted_path: Path) -> None:
        """Refuse a server whose certificate is not the one trusted in the config.

        asyncua would encrypt to the configured certificate and fail obscurely; asking the
        server's endpoints first gives the operator a clear reason and both thumbprints.
        """
        try:
            trusted = await load_certificate(str(trusted_path))
        except (OSError, ValueError) as exc:
            raise DriverError(self.device_id, f"server_certificate_file: {exc}") from exc
        probe = Client(self.config.endpoint, timeout=self.config.timeout_ms / 1000)
        try:
            endpoints = await probe.connect_and_get_server_endpoints()
        except (OSError, TimeoutError, ua.UaError, ConnectionError) as exc:
            raise DeviceUnreachable(self.device_id, f"connect failed: {_describe(exc)}") from exc
        offered = {bytes(e.ServerCertificate) for e in endpoints if e.ServerCertificate}
        wanted = trusted.public_bytes(serialization.Encoding.DER)
        if offered and wanted not in offered:
            shown = ", ".join(_thumbprint(c) for c in offered)
            raise DriverError(
                self.device_id,
                f"untrusted server certificate (server presents {shown}; trusted is "
                f"{_thumbprint(wanted)} from {trusted_path}); refusing to connect",
            )

    def _credentials(self) -> tuple[str | None, str | None]:
        cfg = self.config
        if cfg.credentials_file is not None:
            try:
                lines = cfg.credentials_file.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise DriverError(self.device_id, f"credentials_file: {exc.strerror}") from exc
            if len(lines) < 2:
                raise DriverError(
                    self.device_id, "credentials_file: needs username and password lines"
                )
            return lines[0].strip(), lines[1].rstrip("\n")
        password = cfg.password.get_secret_value() if cfg.password is not None else None
        return cfg.username, password

    async def _resolve(self, client: Client) -> None:
        self._nodes.clear()
        self._unresolved.clear()
        for name, point in self.config.points.items():
            try:
                if point.node_id is not None:
                    node = client.get_node(point.node_id)
                else:
                    assert point.browse_path is not None
                    steps = [s for s in point.browse_path.split("/") if s]
                    if steps and steps[0] in ("0:Objects", "Objects"):
                        steps = steps[1:]
                    node = await client.nodes.objects.get_child(steps)
            except ua.UaStatusCodeError as exc:
                self._unresolved[name] = f"cannot resolve {point.browse_path}: {_describe(exc)}"
                continue
            self._nodes[name] = node

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await client.disconnect()

    # -- polling -----------------------------------------------------------------------------

    async def read(self) -> list[Sample]:
        client = await self._connect()
        names = list(self._nodes)
        samples = [self._unresolved_sample(name) for name in self._unresolved]
        try:
            for start in range(0, len(names), self._read_chunk):
                chunk = names[start : start + self._read_chunk]
                values = await client.read_attributes([self._nodes[n] for n in chunk])
                samples.extend(self._sample(n, v) for n, v in zip(chunk, values, strict=True))
        except (OSError, TimeoutError, ua.UaError, ConnectionError) as exc:
            await self._disconnect()
            raise DeviceUnreachable(self.device_id, _describe(exc)) from exc
        return samples

    # -- subscription ------------------------------------------------------------------------

    async def stream(self) -> AsyncIterator[list[Sample]]:
        """Changes as they arrive. Yields ``[]`` once subscribed (the device is online), then
        batches of samples; raises :class:`DeviceUnreachable` when the connection is lost."""
        client = await self._connect()
        queue: asyncio.Queue[Sample | _Lost] = asyncio.Queue()

        async def lost(exc: Exception) -> None:
            queue.put_nowait(_Lost(_describe(exc)))

        client.connection_lost_callback = lost
        try:
            await self._subscribe(client, _Handler(self, queue))
        except (OSError, TimeoutError, ua.UaError, ConnectionError) as exc:
            await self._disconnect()
            raise DeviceUnreachable(self.device_id, f"subscribe failed: {_describe(exc)}") from exc
        yield [self._unresolved_sample(name) for name in self._unresolved]
        while True:
            items = [await queue.get()]
            while not queue.empty():
                items.append(queue.get_nowait())
            samples = [i for i in items if isinstance(i, Sample)]
            lost_item = next((i for i in items if isinstance(i, _Lost)), None)
            if samples:
                yield samples
            if lost_item is not None:
                await self._disconnect()
                raise DeviceUnreachable(self.device_id, lost_item.reason)

    async def _subscribe(self, client: Client, handler: _Handler) -> None:
        cfg = self.config
        subscription = await client.create_subscription(cfg.publishing_interval_ms, handler)
        requests = []
        names = list(self._nodes)
        self._by_handle = {_HANDLE_BASE + index: name for index, name in enumerate(names)}
        for handle, name in self._by_handle.items():
            requests.append(self._item_request(handle, self._nodes[name], cfg.points[name]))
        if not requests:
            return
        results = await subscription.create_monitored_items(requests)
        for name, result in zip(names, results, strict=True):
            if isinstance(result, ua.StatusCode):  # this item failed; the others go on
                self._unresolved[name] = f"monitored item refused: {_status_name(result)}"

    def _item_request(
        self, handle: int, node: Node, point: OpcUaPoint
    ) -> ua.MonitoredItemCreateRequest:
        cfg = self.config
        item = ua.ReadValueId()
        item.NodeId = node.nodeid
        item.AttributeId = ua.AttributeIds.Value
        params = ua.MonitoringParameters()
        params.ClientHandle = handle
        params.SamplingInterval = float(cfg.sampling_interval_ms)
        params.QueueSize = cfg.queue_size
        params.DiscardOldest = True
        deadband = point.deadband_abs if point.deadband_abs is not None else cfg.deadband_abs
        if deadband:
            change_filter = ua.DataChangeFilter()
            change_filter.Trigger = ua.DataChangeTrigger.StatusValue
            change_filter.DeadbandType = ua.DeadbandType.Absolute
            change_filter.DeadbandValue = deadband
            params.Filter = change_filter
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = item
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = params
        return request

    # -- values ------------------------------------------------------------------------------

    def _sample(self, name: str, value: ua.DataValue) -> Sample:
        point = self.config.points[name]
        at = utc_now()
        src_at = _utc(value.SourceTimestamp)
        status = value.StatusCode or ua.StatusCode()
        if status.is_bad():
            error = _status_name(status)
            return Sample(name, None, point.unit, "bad", at, src_at, {"error": error})
        raw = value.Value.Value if value.Value is not None else None
        number = _number(raw)
        if number is None:
            error = f"not a number: {type(raw).__name__}"
            return Sample(name, None, point.unit, "bad", at, src_at, {"error": error})
        engineering = number * point.scale + point.offset + point.calibration_offset
        if status.is_uncertain():
            data = {"status": _status_name(status)}
            return Sample(name, engineering, point.unit, "uncertain", at, src_at, data)
        return Sample(name, engineering, point.unit, "good", at, src_at)

    def _unresolved_sample(self, name: str) -> Sample:
        point = self.config.points[name]
        return Sample(
            name, None, point.unit, "bad", utc_now(), data={"error": self._unresolved[name]}
        )


async def _max_nodes_per_read(client: Client) -> int:
    """The server's MaxNodesPerRead (0 or absent means no limit: read in chunks anyway)."""
    try:
        limit = await client.get_node(MAX_NODES_PER_READ).read_value()
    except ua.UaStatusCodeError:
        return DEFAULT_READ_CHUNK
    return int(limit) if limit else DEFAULT_READ_CHUNK


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, int | float) and math.isfinite(raw):
        return float(raw)
    return None


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _status_name(code: Any) -> str:
    if isinstance(code, ua.StatusCode):
        return code.name
    return str(code)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ua.UaStatusCodeError):
        return ua.StatusCode(ua.UInt32(exc.code)).name
    if isinstance(exc, TimeoutError):
        return "timeout"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _thumbprint(der: bytes) -> str:
    digest = hashes.Hash(hashes.SHA1())  # OPC UA identifies certificates by SHA-1 thumbprint
    digest.update(der)
    return digest.finalize().hex()  # all 40 digits, as servers and their PKI tools show it


def ensure_application_certificate(
    certificate_file: Path, private_key_file: Path, application_uri: str, host_name: str
) -> tuple[bool, str]:
    """Create the gateway's OPC UA application certificate and key if absent (asyncua's helper:
    self-signed RSA, one year, client and server use); return (created, SHA-1 thumbprint).
    For the command line: it runs its own event loop."""
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    existed = certificate_file.is_file() and private_key_file.is_file()
    for path in (certificate_file, private_key_file):
        path.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(
        setup_self_signed_certificate(
            private_key_file,
            certificate_file,
            application_uri,
            host_name,
            [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
            {"commonName": f"gxpgate {host_name}", "organizationName": "gxpgate"},
        )
    )
    private_key_file.chmod(0o600)
    certificate = asyncio.run(load_certificate(str(certificate_file)))
    return not existed, _thumbprint(certificate.public_bytes(serialization.Encoding.DER))
