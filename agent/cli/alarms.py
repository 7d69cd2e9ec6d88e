"""``gxpgate alarms``: list alarms, acknowledge one (CONTRACT §5).

Both talk to the running daemon over its control socket (:mod:`gxpgate.agent.service.control`),
which only root, the service user and the configured ``alarms.admin_group`` may use. ``list`` falls
back to the sealed ``alarm`` records in the buffer when the daemon is not running (alarms still
pending their on-delay are known only to the daemon). ``ack`` needs the daemon: the
acknowledgement is sealed by it as an ``alarm`` transition and an ``audit`` record, and the
command returns once both are committed.

Exit status: 0 done, 1 the daemon refused or cannot be reached, 2 bad input or config.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import orjson
import typer

from gxpgate.agent.alarms.service import control_socket_path
from gxpgate.agent.cli.common import ConfigOption, fail, load
from gxpgate.agent.service.control import ControlError, request_sync
from gxpgate.agent.service.runtime import AgentStartError, open_outbox
from gxpgate.config import LoadedConfig

__all__ = ["app"]

app = typer.Typer(
    help="Local alarms: list them, acknowledge one.", no_args_is_help=True, add_completion=False
)

RECENT_RECORDS = 2000
COLUMNS = ("alarm_id", "state", "severity", "zone", "rule", "started_at", "value", "limit")


@app.command("list")
def list_alarms(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
) -> None:
    """Alarms not over yet: pending, active, acknowledged, and cleared awaiting an ack."""
    loaded = load(config)
    path = control_socket_path(loaded.config)
    source = "the running gateway"
    try:
        answer = request_sync(path, {"op": "list"})
        alarms: list[dict[str, Any]] = answer["alarms"]
    except ControlError as exc:
        if "not running" not in str(exc):
            fail(str(exc))
        alarms = _from_records(loaded)
        source = "the sealed records (the gateway is not running; pending alarms not shown)"
    if as_json:
        typer.echo(json.dumps(alarms, indent=2, ensure_ascii=False))
        return
    typer.echo(f"{len(alarms)} alarm(s), from {source}")
    if alarms:
        widths = {c: max(len(c), *(len(_cell(a.get(c))) for a in alarms)) for c in COLUMNS}
        typer.echo("  ".join(c.upper().ljust(widths[c]) for c in COLUMNS).rstrip())
        for alarm in alarms:
            typer.echo("  ".join(_cell(alarm.get(c)).ljust(widths[c]) for c in COLUMNS).rstrip())


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _from_records(loaded: LoadedConfig) -> list[dict[str, Any]]:
    try:
        outbox = open_outbox(loaded, must_exist=True)
    except AgentStartError as exc:
        fail(str(exc))
    try:
        rows = outbox.newest("alarm", RECENT_RECORDS)
    finally:
        outbox.close()
    latest: dict[str, dict[str, Any]] = {}
    acked: set[str] = set()
    for _seq, body in rows:  # newest first
        record = orjson.loads(body)
        data = record["data"]
        if data["state"] == "acknowledged":
            acked.add(data["alarm_id"])
        latest.setdefault(data["alarm_id"], {**data, "zone": record["zone"]})
    open_alarms = []
    for alarm_id, data in reversed(latest.items()):
        if data["state"] == "cleared" and alarm_id in acked:
            continue
        if data["state"] == "acknowledged" and data.get("condition") == "normal":
            continue
        open_alarms.append({c: data.get(c) for c in COLUMNS})
    return open_alarms


@app.command("ack")
def acknowledge(
    alarm_id: Annotated[str, typer.Argument(help="The alarm's id, e.g. A12 (see `alarms list`)")],
    by: Annotated[str, typer.Option("--by", help="Who acknowledges (name or user id)")],
    comment: Annotated[str, typer.Option("--comment", help="Why / what was done (required)")],
    config: ConfigOption = None,
) -> None:
    """Acknowledge an alarm: sealed as an alarm transition and an audit record."""
    if not by.strip():
        fail("--by must name who acknowledges", 2)
    if not comment.strip():
        fail("--comment is required: say what was seen or done", 2)
    loaded = load(config)
    try:
        answer = request_sync(
            control_socket_path(loaded.config),
            {"op": "ack", "alarm_id": alarm_id, "by": by, "comment": comment},
        )
    except ControlError as exc:
        fail(str(exc))
    if not answer.get("ok"):
        fail(str(answer.get("error", "refused")))
    typer.echo(f"alarm {alarm_id} acknowledged by {by}: sealed as record {answer['seq']}")
