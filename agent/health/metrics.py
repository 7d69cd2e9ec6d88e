"""Health and metrics: the Prometheus text format at ``http://127.0.0.1:19720/metrics``.

Threading
    prometheus-client's HTTP server runs in threads (a listener, and one short-lived thread per
    request). The agent's state (device tasks, the recorder's counters, the uplink's stats, the
    alarm engine) belongs to the event loop and is changed there without locks, so those
    threads never read it. Instead :meth:`Metrics.run` takes a :class:`Snapshot` on the loop
    once a second: plain copies into frozen dataclasses and tuples; 0.4-0.7 ms with 50 devices
    of 20 points, most of it walking the alarm engine's 3,500 rule machines
    (tests/benchmarks/bench_metrics.py). It is published by rebinding one attribute, which is
    atomic; a scrape reads whichever snapshot is current and never runs on, or waits for, the
    event loop. Counts are therefore up to a second old, and ages up to a second high.

    Ages are computed when scraped, from the monotonic timestamps the snapshot holds, so they
    keep growing if the loop stalls, and ``gxpgate_snapshot_age_seconds`` shows the stall
    itself. The buffer's figures are read when scraped, in the request thread, from the
    outbox (thread-safe: its reader connection has a lock): two single-row queries by primary
    key, three PRAGMA reads and three ``stat`` calls, whatever the number of devices or records.

Metrics (``device`` etc. are labels)
    ``gxpgate_info{version,gw,site,chain,key}``, ``gxpgate_start_time_seconds``,
    ``gxpgate_snapshot_age_seconds``;
    ``gxpgate_device_info{device,type,zone}``, ``gxpgate_device_up{device}`` and
    ``gxpgate_device_failing{device}`` (absent until the first attempt),
    ``gxpgate_device_last_good_reading_age_seconds{device}`` (absent until the first live good
    reading), ``gxpgate_scanner_last_scan_age_seconds{device}``,
    ``gxpgate_device_last_error_info{device,error}`` (while down or failing),
    ``gxpgate_device_readings_total{device}`` (readings taken since start, sealed or not);
    ``gxpgate_records_sealed_total`` (since start);
    ``gxpgate_buffer_backlog_records``, ``gxpgate_buffer_oldest_undelivered_age_seconds`` (0
    when nothing is pending), ``gxpgate_buffer_acked_through``, ``gxpgate_buffer_last_seq``,
    ``gxpgate_buffer_used_bytes`` (what the quota counts), ``gxpgate_buffer_disk_bytes`` (the
    files), ``gxpgate_buffer_quota_bytes``;
    with an uplink: ``gxpgate_uplink_errors_total{kind}``, ``gxpgate_uplink_failing``,
    ``gxpgate_uplink_last_error_info{error}`` (while failing),
    ``gxpgate_uplink_last_success_timestamp_seconds``, ``gxpgate_uplink_batches_total``;
    ``gxpgate_alarms_active{severity,acknowledged}``, ``gxpgate_alarms_pending``,
    ``gxpgate_alarms_cleared_unacknowledged``;
    ``gxpgate_clock_synchronized`` (absent when unknown), ``gxpgate_clock_steps_total``,
    ``gxpgate_buffer_thinning``, ``gxpgate_buffer_readings_thinned``; and prometheus-client's
    ``process_*``.

Exceptions::

    MetricsUnavailable (OSError)    the endpoint cannot listen (address in use, not local, ...)
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import orjson
from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from gxpgate.agent.health.snapshot import Snapshot, UplinkHealth
from gxpgate.agent.uplink.base import COMMON_ERROR_KINDS
from gxpgate.buffer import Outbox
from gxpgate.config.model import MetricsConfig

__all__ = ["SNAPSHOT_SECS", "UPLINK_ERROR_KINDS", "Metrics", "MetricsUnavailable"]

log = logging.getLogger(__name__)

SNAPSHOT_SECS = 1.0
REQUEST_TIMEOUT_SECS = 10.0
SCANNER_TYPES = frozenset({"barcode_scanner", "rfid_reader"})
UPLINK_ERROR_KINDS: tuple[str, ...] = COMMON_ERROR_KINDS
"""Error kinds of both uplinks (HTTP, MQTT), exported as 0 until they occur so that ``rate()``
sees the first; the transport's other kinds (``http_5xx``, ``broker``, ...: the rest of
:data:`~gxpgate.agent.uplink.base.ErrorKind`) appear when first counted."""


class MetricsUnavailable(OSError):
    """The endpoint cannot listen; the message names the address and the reason."""


class _Collector(Collector):
    """Runs in the HTTP request thread: reads the published snapshot and the outbox only."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # no collect() at registration, which would run on the loop's thread

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        snap = m.snapshot
        now = time.monotonic()
        yield InfoMetricFamily("gxpgate", "The gateway: software version and identity.", m.info)
        yield _gauge("gxpgate_start_time_seconds", "When the agent started (Unix time).", m.started)
        yield _gauge(
            "gxpgate_snapshot_age_seconds",
            "Age of the health snapshot; above a few seconds the event loop is stalled.",
            now - snap.taken,
        )
        yield from _devices(snap, now)
        yield CounterMetricFamily(
            "gxpgate_records_sealed", "Records sealed since the agent started.", snap.sealed
        )
        yield from _buffer(m)
        if snap.uplink is not None:
            yield from _uplink(snap.uplink)
        yield from _alarms(snap)
        yield from _integrity(snap)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _devices(snap: Snapshot, now: float) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        "gxpgate_device_info", "A configured device (always 1).", labels=["device", "type", "zone"]
    )
    up = GaugeMetricFamily(
        "gxpgate_device_up",
        "1 while the device answers, 0 while it is offline (absent before the first attempt).",
        labels=["device"],
    )
    failing = GaugeMetricFamily(
        "gxpgate_device_failing",
        "1 while the device answers with nothing but bad values (exceptions, malformed "
        "answers), else 0 (absent before the first attempt).",
        labels=["device"],
    )
    good = GaugeMetricFamily(
        "gxpgate_device_last_good_reading_age_seconds",
        "Seconds since the device's last live good-quality reading.",
        labels=["device"],
    )
    scan = GaugeMetricFamily(
        "gxpgate_scanner_last_scan_age_seconds",
        "Seconds since the scanner or reader's last scan.",
        labels=["device"],
    )
    readings = CounterMetricFamily(
        "gxpgate_device_readings",
        "Readings taken from the device since the agent started, live and back-filled, "
        "whether or not the recording policy sealed each one.",
        labels=["device"],
    )
    error = GaugeMetricFamily(
        "gxpgate_device_last_error_info",
        "The error of an offline or failing device (1 while it lasts).",
        labels=["device", "error"],
    )
    for dev in snap.devices:
        info.add_metric([dev.device, dev.type, dev.zone], 1.0)
        if dev.up is not None:
            up.add_metric([dev.device], 1.0 if dev.up else 0.0)
            failing.add_metric([dev.device], 1.0 if dev.failing else 0.0)
        if dev.last_data is not None:
            family = scan if dev.type in SCANNER_TYPES else good
            family.add_metric([dev.device], max(0.0, now - dev.last_data))
        if dev.type not in SCANNER_TYPES:
            readings.add_metric([dev.device], dev.readings)
        if dev.last_error is not None:
            error.add_metric([dev.device, dev.last_error], 1.0)
    return iter((info, up, failing, good, scan, readings, error))


def _buffer(m: Metrics) -> Iterator[Metric]:
    outbox = m.outbox
    try:
        acked = outbox.acked_through
        last_seq = outbox.last_seq  # read after the cursor: the backlog is never negative
        oldest = outbox.pending(acked, 1)
    except sqlite3.Error as exc:  # closed under a scrape at shutdown
        log.debug("metrics.buffer_unreadable error=%s", exc)
        return
    age = 0.0
    # A record sealed after last_seq was read is not in this scrape's backlog either:
    # the two gauges describe the same instant.
    if oldest and oldest[0][0] <= last_seq:
        at = orjson.loads(oldest[0][1])["at"]
        age = max(0.0, time.time() - datetime.fromisoformat(at).timestamp())
    yield _gauge(
        "gxpgate_buffer_backlog_records",
        "Records sealed but not yet acknowledged by the service.",
        max(0, last_seq - acked),
    )
    yield _gauge(
        "gxpgate_buffer_oldest_undelivered_age_seconds",
        "Age of the oldest record not yet acknowledged (0 when none).",
        age,
    )
    yield _gauge("gxpgate_buffer_acked_through", "The service's acknowledged-through seq.", acked)
    yield _gauge("gxpgate_buffer_last_seq", "The newest sealed seq.", last_seq)
    yield _gauge(
        "gxpgate_buffer_used_bytes",
        "Space the buffer's content takes, as the quota counts it (freed pages excluded).",
        outbox.used_bytes(),
    )
    yield _gauge(
        "gxpgate_buffer_disk_bytes",
        "Size of the buffer's files (database, WAL, shared memory).",
        outbox.disk_bytes(),
    )
    yield _gauge("gxpgate_buffer_quota_bytes", "The buffer's configured quota.", outbox.quota_bytes)


def _integrity(snap: Snapshot) -> Iterator[Metric]:
    if snap.clock_synchronized is not None:
        yield _gauge(
            "gxpgate_clock_synchronized",
            "1 when the system clock is NTP-synchronised, 0 when not (absent: unknown).",
            float(snap.clock_synchronized),
        )
    yield CounterMetricFamily(
        "gxpgate_clock_steps", "Wall-clock steps detected since start.", snap.clock_steps
    )
    yield _gauge(
        "gxpgate_buffer_thinning",
        "1 while the buffer is at its quota and in-spec readings are thinned.",
        float(snap.buffer_thinning),
    )
    yield _gauge(
        "gxpgate_buffer_readings_thinned",
        "Readings left out in the current thinning episode.",
        snap.readings_thinned,
    )


def _uplink(uplink: UplinkHealth) -> Iterator[Metric]:
    errors = CounterMetricFamily(
        "gxpgate_uplink_errors", "Failed delivery attempts by kind.", labels=["kind"]
    )
    counts = dict.fromkeys(UPLINK_ERROR_KINDS, 0)
    counts.update(uplink.errors_by_kind)
    for kind, count in counts.items():
        errors.add_metric([kind], count)
    yield errors
    yield _gauge(
        "gxpgate_uplink_failing",
        "1 while the last delivery attempt failed.",
        0.0 if uplink.last_error is None else 1.0,
    )
    info = GaugeMetricFamily(
        "gxpgate_uplink_last_error_info",
        "The last delivery error (1 while failing).",
        labels=["error"],
    )
    if uplink.last_error is not None:
        info.add_metric([uplink.last_error], 1.0)
    yield info
    if uplink.last_success is not None:
        yield _gauge(
            "gxpgate_uplink_last_success_timestamp_seconds",
            "When a batch was last delivered (Unix time).",
            uplink.last_success,
        )
    yield CounterMetricFamily(
        "gxpgate_uplink_batches", "Batches delivered since the agent started.", uplink.batches
    )


def _alarms(snap: Snapshot) -> Iterator[Metric]:
    active = GaugeMetricFamily(
        "gxpgate_alarms_active",
        "Active alarms by severity and whether acknowledged.",
        labels=["severity", "acknowledged"],
    )
    for severity, acked, count in snap.alarms_active:
        active.add_metric([severity, "true" if acked else "false"], count)
    yield active
    yield _gauge(
        "gxpgate_alarms_pending", "Conditions waiting out their on-delay.", snap.alarms_pending
    )
    yield _gauge(
        "gxpgate_alarms_cleared_unacknowledged",
        "Alarms over but not yet acknowledged.",
        snap.alarms_cleared_unacked,
    )


class _QuietHandler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT_SECS  # a client that connects and says nothing frees its thread

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Metrics:
    """The endpoint for one agent. ``async with`` listens (raises :class:`MetricsUnavailable`)
    and stops listening; :meth:`run` refreshes the snapshot until cancelled."""

    def __init__(
        self,
        config: MetricsConfig,
        snapshot: Callable[[], Snapshot],
        outbox: Outbox,
        info: Mapping[str, str],
    ) -> None:
        """``snapshot`` takes one on the loop; ``info`` is ``gxpgate_info``'s labels (version,
        gw, site, chain, key)."""
        self.config = config
        self.take_snapshot = snapshot
        self.outbox = outbox
        self.started = time.time()
        self.info = dict(info)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)
        self.snapshot = snapshot()
        self.port: int | None = None
        self._server: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = str(self.config.address)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port or self.config.port}/metrics"

    def refresh(self) -> None:
        """Take and publish a snapshot (on the event loop)."""
        self.snapshot = self.take_snapshot()

    async def run(self) -> None:
        while True:
            self.refresh()
            await asyncio.sleep(SNAPSHOT_SECS)

    async def __aenter__(self) -> Metrics:
        address = str(self.config.address)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET

        class Server(ThreadingWSGIServer):
            address_family = family

        try:
            server = make_server(
                address, self.config.port, make_wsgi_app(self.registry), Server, _QuietHandler
            )
        except OSError as exc:
            raise MetricsUnavailable(
                f"cannot listen on {address} port {self.config.port}: {exc.strerror or exc}"
            ) from exc
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="metrics-http"
        )
        self._thread.daemon = True
        self._thread.start()
        log.info("metrics.listening url=%s", self.url)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        # shutdown() waits for serve_forever's next poll: off the loop.
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        await asyncio.to_thread(thread.join)
