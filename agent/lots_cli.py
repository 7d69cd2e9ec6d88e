"""``gxpgate lots``: where a lot, SSCC or serialised item is, and what is in a zone (CONTRACT §5).

Both commands read the lot register (:mod:`agent.lots`) beside the configured buffer, also
while the agent runs; they never create it. ``where ID`` takes a lot, SSCC or item in any form
:func:`agent.lots.parse_identifier` accepts — ``(01)10614141000019(10)LOT-A1``, an 18-digit
SSCC, ``(00)…``, element strings with ``<GS>``, a GS1 Digital Link URI, an EPC URI, or a bare
lot number — and prints its presences in the order the records made them. ``in ZONE [--at
TIME]`` prints what is in a zone now or at a moment (ISO 8601; without an offset, UTC).
``--json`` prints the presences as a JSON array instead of a table.

Exit status: 0 answered (also when nothing is found), 1 no register yet or it cannot be read,
2 bad input (identifier, zone, time, config).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

import typer

from config import LoadedConfig

from .cli_common import ConfigOption, fail, load
from .lots import (
    BadIdentifier,
    LotRegister,
    LotRegisterError,
    Presence,
    lots_path_for,
    parse_identifier,
)
from .sealing import format_time

__all__ = ["app"]

app = typer.Typer(
    help="Where lots, SSCCs and serialised items are (the custody register).",
    no_args_is_help=True,
    add_completion=False,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]


def _open(loaded: LoadedConfig) -> LotRegister:
    try:
        return LotRegister.open_existing(lots_path_for(loaded.config.buffer.path))
    except LotRegisterError as exc:
        fail(str(exc))


def _print(presences: Sequence[Presence], as_json: bool, columns: Sequence[str]) -> None:
    rows = [p.as_dict() for p in presences]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    titles = {
        "identifier": "IDENTIFIER",
        "kind": "KIND",
        "zone": "ZONE",
        "since": "SINCE",
        "until": "UNTIL",
        "seq": "SEQ",
    }
    table = [[titles[c] for c in columns]]
    for row in rows:
        cells = {
            **{k: str(v) for k, v in row.items()},
            "until": row["until"] or "-",
            "seq": f"{row['seq']}-{row['until_seq']}" if row["until_seq"] else f"{row['seq']}-",
        }
        table.append([cells[c] for c in columns])
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))


@app.command("where")
def where(
    identifier: Annotated[
        str,
        typer.Argument(
            metavar="ID",
            help="Lot (01)GTIN(10)LOT, SSCC (18 digits or (00)…), item (01)GTIN(21)SERIAL, "
            "an EPC or GS1 Digital Link URI, or a bare lot number",
        ),
    ],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Where a lot, SSCC or serialised item is and was: zone, since, until, record seqs."""
    loaded = load(config)
    try:
        identity = parse_identifier(identifier)
    except BadIdentifier as exc:
        fail(str(exc), 2)
    with _open(loaded) as register:
        try:
            presences = register.where(identifier)
        except LotRegisterError as exc:
            fail(str(exc))
    if as_json:
        _print(presences, True, ())
        return
    if not presences:
        typer.echo(f"{identity.id}: never seen in a zone")
        return
    columns = ["zone", "since", "until", "seq"]
    if identity.kind == "lot_number":
        columns.insert(0, "identifier")
    else:
        current = [p.zone for p in presences if p.until is None]
        where_now = ", ".join(current) if current else "in no zone now"
        typer.echo(f"{identity.id} ({identity.kind}): {where_now}")
    _print(presences, False, columns)


@app.command("in")
def in_zone(
    zone: Annotated[str, typer.Argument(metavar="ZONE", help="Zone id from the config")],
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            metavar="TIME",
            help="ISO 8601 time (UTC unless it has an offset) [default: now]",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """What is in a zone now (or at --at TIME): lots, SSCCs and serialised items, since when."""
    loaded = load(config)
    zones = loaded.config.zones
    if zone not in zones:
        fail(f"no zone {zone!r} in {loaded.path}; configured: {', '.join(zones)}", 2)
    moment: datetime | None = None
    if at is not None:
        try:
            moment = datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError:
            fail(f"--at: not an ISO 8601 time: {at!r}", 2)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    with _open(loaded) as register:
        try:
            presences = register.in_zone(zone, moment)
        except LotRegisterError as exc:
            fail(str(exc))
    if as_json:
        _print(presences, True, ())
        return
    when = format_time(moment.astimezone(UTC)) if moment else "now"
    if not presences:
        typer.echo(f"{zone} ({when}): nothing registered")
        return
    typer.echo(f"{zone} ({when}): {len(presences)} present")
    _print(presences, False, ["identifier", "kind", "since", "seq"])
