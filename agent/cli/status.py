"""``gxpgate status``: a technician's view of the running gateway (CONTRACT §5).

It reads the daemon's own metrics endpoint (``[metrics]`` of the config, see
:mod:`gxpgate.agent.health.metrics`), so the table and what Prometheus scrapes can never disagree.
When the daemon cannot be reached it says so, prints what the buffer file holds (as ``gxpgate buffer
status`` does) and exits 1.

Exit status: 0 shown, 1 the daemon cannot be reached or its metrics are disabled, 2 bad config.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import httpx
import typer

from gxpgate.agent.cli.common import ConfigOption, load
from gxpgate.agent.service.runtime import AgentStartError, open_outbox
from gxpgate.buffer import lock_holder
from gxpgate.config import LoadedConfig
from gxpgate.config.model import MetricsConfig

if TYPE_CHECKING:
    from prometheus_client.samples import Sample

__all__ = ["gather", "metrics_url", "status"]

SCRAPE_TIMEOUT_SECS = 3.0
STALE_SNAPSHOT_SECS = 5.0
MIB = 1024 * 1024
DEVICE_COLUMNS = ("device", "type", "zone", "state", "last data", "error")


class Unreachable(Exception):
    """The daemon's metrics cannot be read; the message says why."""


_ALERT = ("down", "failing")
"""Device states shown in capitals."""


NOTHING_LISTENS = "nothing listens there"


def metrics_url(config: MetricsConfig) -> str:
    """Where the daemon of this config serves its metrics, as seen from this host."""
    address = config.address
    if address.is_unspecified:  # listening on every address: ask over loopback
        address = IPv6Address("::1") if address.version == 6 else IPv4Address("127.0.0.1")
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{host}:{config.port}/metrics"


def scrape(url: str) -> dict[str, list[Sample]]:
    """The endpoint's samples by sample name (e.g. ``gxpgate_uplink_errors_total``)."""
    # Here, not at the top: every command (``run`` too) imports this module.
    from prometheus_client.parser import text_string_to_metric_families

    try:
        # trust_env=False: a proxy from the environment must not intercept a local address.
        with httpx.Client(timeout=SCRAPE_TIMEOUT_SECS, trust_env=False) as client:
            answer = client.get(url)
    except httpx.ConnectError as exc:
        raise Unreachable(NOTHING_LISTENS) from exc
    except httpx.HTTPError as exc:
        raise Unreachable(str(exc) or type(exc).__name__) from exc
    if answer.status_code != 200:
        raise Unreachable(f"HTTP {answer.status_code}")
    samples: dict[str, list[Sample]] = {}
    try:
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append(sample)
    except ValueError as exc:
        raise Unreachable(f"not the Prometheus text format: {exc}") from exc
    if "gxpgate_info" not in samples:
        raise Unreachable("something answers there, but it is not a gxpgate agent")
    return samples


def gather(samples: dict[str, list[Sample]], now: float) -> dict[str, Any]:
    """What ``status`` shows, from the scraped samples (``now``: Unix time, for the uptime)."""

    def one(name: str) -> float | None:
        found = samples.get(name)
        return found[0].value if found else None

    def by(name: str, label: str) -> dict[str, Sample]:
        return {s.labels[label]: s for s in samples.get(name, [])}

    info = samples["gxpgate_info"][0].labels
    started = one("gxpgate_start_time_seconds")
    up = by("gxpgate_device_up", "device")
    good = by("gxpgate_device_last_good_reading_age_seconds", "device")
    scans = by("gxpgate_scanner_last_scan_age_seconds", "device")
    errors = by("gxpgate_device_last_error_info", "device")
    failing = by("gxpgate_device_failing", "device")
    devices = []
    for name, dev in by("gxpgate_device_info", "device").items():
        age = good.get(name) or scans.get(name)
        state = "starting" if name not in up else ("up" if up[name].value else "down")
        if state == "up" and name in failing and failing[name].value:
            state = "failing"
        devices.append(
            {
                "device": name,
                "type": dev.labels["type"],
                "zone": dev.labels["zone"],
                "state": state,
                "last_data_age_secs": age.value if age else None,
                "last_error": errors[name].labels["error"] if name in errors else None,
            }
        )
    uplink = None
    if "gxpgate_uplink_failing" in samples:
        last_success = one("gxpgate_uplink_last_success_timestamp_seconds")
        uplink = {
            "state": "failing" if one("gxpgate_uplink_failing") else "ok",
            "last_error": next(
                (s.labels["error"] for s in samples.get("gxpgate_uplink_last_error_info", [])),
                None,
            ),
            "last_success_age_secs": None if last_success is None else now - last_success,
            "batches": int(one("gxpgate_uplink_batches_total") or 0),
            "errors_by_kind": {
                kind: int(s.value)
                for kind, s in by("gxpgate_uplink_errors_total", "kind").items()
                if s.value
            },
        }
    active = samples.get("gxpgate_alarms_active", [])
    by_severity: dict[str, int] = {}
    for s in active:
        by_severity[s.labels["severity"]] = by_severity.get(s.labels["severity"], 0) + int(s.value)
    return {
        "url": None,
        "gateway": {
            "id": info.get("gw"),
            "site": info.get("site"),
            "version": info.get("version"),
            "chain": info.get("chain"),
            "key": info.get("key"),
            "uptime_secs": None if started is None else now - started,
            "snapshot_age_secs": one("gxpgate_snapshot_age_seconds"),
        },
        "devices": devices,
        "buffer": {
            "backlog": _int(one("gxpgate_buffer_backlog_records")),
            "oldest_undelivered_age_secs": one("gxpgate_buffer_oldest_undelivered_age_seconds"),
            "acked_through": _int(one("gxpgate_buffer_acked_through")),
            "last_seq": _int(one("gxpgate_buffer_last_seq")),
            "used_bytes": _int(one("gxpgate_buffer_used_bytes")),
            "disk_bytes": _int(one("gxpgate_buffer_disk_bytes")),
            "quota_bytes": _int(one("gxpgate_buffer_quota_bytes")),
        },
        "uplink": uplink,
        "alarms": {
            "active": sum(by_severity.values()),
            "unacknowledged": int(
                sum(s.value for s in active if s.labels["acknowledged"] == "false")
            ),
            "by_severity": by_severity,
            "pending": _int(one("gxpgate_alarms_pending")),
            "cleared_unacknowledged": _int(one("gxpgate_alarms_cleared_unacknowledged")),
        },
    }


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
) -> None:
    """A technician's view of the running gateway: devices, backlog, uplink, alarms."""
    loaded = load(config)
    url = metrics_url(loaded.config.metrics)
    try:
        if not loaded.config.metrics.enabled:
            raise Unreachable(f"[metrics] is disabled in {loaded.path}; status reads the metrics")
        samples = scrape(url)
    except Unreachable as exc:
        _unreachable(loaded, config, url, str(exc), as_json)
    view = gather(samples, time.time())
    view["url"] = url
    if as_json:
        typer.echo(json.dumps(view, indent=2, ensure_ascii=False))
        return
    for line in _table(view):
        typer.echo(line.rstrip())


def _unreachable(
    loaded: LoadedConfig, config: Path | None, url: str, reason: str, as_json: bool
) -> NoReturn:
    pid = lock_holder(loaded.config.buffer.path)
    if pid is None:
        message = f"gxpgate is not running on {loaded.config.buffer.path}"
        if reason.startswith("[metrics]"):
            message += f" ({reason})"
        elif reason != NOTHING_LISTENS:
            message += f"; something else answers at {url}: {reason}"
    else:
        message = (
            f"gxpgate is running (pid {pid}), but its metrics at {url} do not answer: {reason}"
        )
    if as_json:
        buffer = None
        try:
            outbox = open_outbox(loaded, must_exist=True)
        except AgentStartError as exc:
            message += f"; {exc}"
        else:
            try:
                buffer = dataclasses.asdict(outbox.status())
            finally:
                outbox.close()
        view = {"reachable": False, "url": url, "error": message, "buffer": buffer}
        typer.echo(json.dumps(view, indent=2, ensure_ascii=False))
        raise typer.Exit(1)
    typer.echo(f"gxpgate: {message}", err=True)
    typer.echo("From the buffer file (the daemon's own view is not available):", err=True)
    from gxpgate.agent.cli.buffer import buffer_status

    buffer_status(config)
    raise typer.Exit(1)


def _table(view: dict[str, Any]) -> Iterator[str]:
    gw, buffer, alarms = view["gateway"], view["buffer"], view["alarms"]
    yield f"{'gateway':<14} {gw['id']} ({gw['site']})"
    yield f"{'version':<14} {gw['version']}, up {_duration(gw['uptime_secs'])}"
    yield f"{'chain':<14} {gw['chain']}, key {gw['key']}"
    yield f"{'metrics':<14} {view['url']}"
    stale = gw["snapshot_age_secs"]
    if stale is not None and stale > STALE_SNAPSHOT_SECS:
        yield f"{'WARNING':<14} health is {_duration(stale)} old: the agent's loop looks stuck"
    yield ""
    rows = [
        (
            d["device"], d["type"], d["zone"], d["state"].upper() if d["state"] in _ALERT
            else d["state"], _ago(d["last_data_age_secs"]), d["last_error"] or "-",
        )
        for d in view["devices"]
    ]  # fmt: skip
    if rows:
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(DEVICE_COLUMNS)]
        yield "  ".join(c.upper().ljust(w) for c, w in zip(DEVICE_COLUMNS, widths, strict=True))
        for row in rows:
            yield "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
    else:
        yield "no devices configured"
    yield ""
    oldest = buffer["oldest_undelivered_age_secs"]
    oldest_text = f", oldest undelivered {_ago(oldest)}" if buffer["backlog"] else ""
    yield f"{'backlog':<14} {buffer['backlog']} record(s){oldest_text}"
    yield f"{'acked through':<14} {buffer['acked_through']} (last seq {buffer['last_seq']})"
    used, quota, files = buffer["used_bytes"], buffer["quota_bytes"], buffer["disk_bytes"]
    share = 100 * used / quota
    # MiB, as the config's quota_mb: 2^20 bytes
    yield (
        f"{'buffer use':<14} {used / MIB:.1f} MiB of {quota / MIB:.0f} MiB ({share:.1f} %), "
        f"files {files / MIB:.1f} MiB"
    )
    yield f"{'uplink':<14} {_uplink(view['uplink'])}"
    if view["uplink"] and view["uplink"]["errors_by_kind"]:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(view["uplink"]["errors_by_kind"].items()))
        yield f"{'':<14} errors since start: {kinds}"
    yield (
        f"{'alarms':<14} {alarms['active']} active ({alarms['unacknowledged']} unacknowledged), "
        f"{alarms['pending']} pending, {alarms['cleared_unacknowledged']} cleared awaiting "
        "acknowledgement"
    )


def _uplink(uplink: dict[str, Any] | None) -> str:
    if uplink is None:
        return "none configured (sealing and buffering only)"
    last = uplink["last_success_age_secs"]
    delivered = "no delivery yet" if last is None else f"last delivery {_ago(last)}"
    if uplink["state"] == "failing":
        return f"FAILING: {uplink['last_error']} ({delivered})"
    return f"ok, {delivered}, {uplink['batches']} batch(es) since start"


def _ago(secs: float | None) -> str:
    return "never" if secs is None else f"{_duration(secs)} ago"


def _duration(secs: float | None) -> str:
    if secs is None:
        return "?"
    if secs < 60:
        return f"{secs:.1f} s"
    whole = int(secs)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s"
