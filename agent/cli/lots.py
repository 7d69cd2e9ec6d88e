"""``gxpgate lots``: where a lot, SSCC or serialised item is, and what is in a zone (CONTRACT §5).

Both commands read the lot register (:mod:`gxpgate.agent.custody.lots`) beside the configured
buffer, also while the agent runs; they never create it. ``where ID`` takes a lot, SSCC or item in
any form
:func:`gxpgate.agent.custody.lots.parse_identifier` accepts — ``(01)10614141000019(10)LOT-A1``, an
18-digit SSCC, ``(00)…``, element strings with ``<GS>``, a GS1 Digital Link URI, an EPC URI, or a
bare lot number — and prints its presences in the order the records made them. ``in ZONE [--at
TIME]`` prints what is in a zone now or at a moment (ISO 8601; without an offset, UTC).
``--json`` prints the presences as a JSON array instead of a table.

``exposure ID`` prints a lot's time out of storage: its product rule, the time used of the
allowance, each stay (zone, times, time counted, readings min/max/MKT) and the alarms naming
the lot (custody exceptions, excursions); ID is a lot, or a serialised item whose lot a barcode
has told.

Exit status: 0 answered (also when nothing is found), 1 no register yet or it cannot be read,
2 bad input (identifier, zone, time, config).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

import typer

from gxpgate.agent.cli.common import ConfigOption, fail, load
from gxpgate.agent.custody.lots import (
    BadIdentifier,
    LotRegister,
    LotRegisterError,
    Presence,
    lots_path_for,
    parse_identifier,
)
from gxpgate.agent.custody.report import LotHistory, lot_history
from gxpgate.agent.evidence import format_time
from gxpgate.config import LoadedConfig
from gxpgate.config.policy_files import load_policy
from gxpgate.config.products import PolicyError

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


@app.command("exposure")
def exposure(
    identifier: Annotated[
        str,
        typer.Argument(
            metavar="ID",
            help="Lot (01)GTIN(10)LOT (or a serialised item (01)GTIN(21)SERIAL of the lot)",
        ),
    ],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """A lot's time out of storage: allowance used, stays (zones, times, readings min/max/MKT)
    and the alarms naming it."""
    loaded = load(config)
    try:
        identity = parse_identifier(identifier)
    except BadIdentifier as exc:
        fail(str(exc), 2)
    if identity.kind not in ("lot", "item"):
        kind = identity.kind.replace("_", " ")
        fail(
            f"{identifier!r} names a {kind}, not a lot; give (01)GTIN(10)LOT "
            "(`gxpgate lots where` finds the lots of a lot number)",
            2,
        )
    try:
        policy = load_policy(loaded.config, loaded.path)
    except PolicyError as exc:
        fail(f"product master / hold list:\n{exc}", 2)
    with _open(loaded) as register:
        if register.version < 2:
            fail(f"{register.path}: kept by an older gxpgate, without time out of storage; "
                 "the agent upgrades it when it next starts")  # fmt: skip
        lot = identity.id
        try:
            if identity.kind == "item":
                found = register.lot_of_item(identity.id)
                if found is None:
                    fail(f"{identity.id}: no barcode has said which lot this item is of", 1)
                lot = found
            product = policy.product(lot[4:18])
            history = lot_history(register, lot, loaded.config, product, time.time())
        except LotRegisterError as exc:
            fail(str(exc))
    if as_json:
        typer.echo(json.dumps(history.as_dict(), indent=2, ensure_ascii=False))
        return
    _print_history(history)


def _hms(secs: float) -> str:
    whole = round(secs)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _print_history(h: LotHistory) -> None:
    name = f"{h.product} (GTIN {h.gtin})" if h.product else f"GTIN {h.gtin}"
    typer.echo(f"{h.lot}: {name}")
    if not h.tracked:
        typer.echo("  not in the product master: time out of storage is not kept for it")
    else:
        flags = f"; {', '.join(h.flags)}" if h.flags else ""
        typer.echo(f"  requires {h.required_profile} ({h.required_band or 'no limits'}){flags}")
        if h.allowance_hours is None:
            typer.echo(f"  time out of storage {_hms(h.used_secs)} (no allowance on record)")
        else:
            typer.echo(
                f"  time out of storage {_hms(h.used_secs)} of {_hms(h.allowance_hours * 3600)}"
                f" ({(h.share or 0) * 100:.1f} % of the allowance)"
            )
    if not h.stays:
        typer.echo("  never seen in a zone")
    else:
        header = ["ZONE", "PROFILE", "FROM", "TO", "STAY", "OUT", "N", "MIN", "MAX", "MKT"]
        table = [header]
        for s in h.stays:
            mark = "" if s.keeps in (True, None) else " (not kept)"
            cells = [
                s.zone, f"{s.zone_profile or '?'}{mark}", s.since, s.until or "now",
                _hms(s.stay_secs), _hms(s.out_secs), str(s.readings),
                *(f"{v:.1f}" if v is not None else "-" for v in (s.min, s.max, s.mkt)),
            ]  # fmt: skip
            table.append(cells)
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for row in table:
            typer.echo("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    if h.exceptions:
        typer.echo("  alarms naming the lot:")
        for e in h.exceptions:
            typer.echo(
                f"    {e['at']}  {e['alarm_id']}  {e['kind']}  {e['severity']}  {e['state']}"
                f"  zone {e['zone'] or '-'}"
            )
