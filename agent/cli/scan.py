"""``gxpgate scan``: what a barcode or an RFID tag says (CONTRACT §5).

``gxpgate scan decode TEXT`` parses scanner text with :func:`gxpgate.drivers.gs1.parse_scan`;
``gxpgate scan decode --epc HEX`` decodes an EPC bank with :func:`gxpgate.drivers.epc.decode_epc`.
The result is printed as JSON on stdout. A result that is not ``ok`` (invalid GS1, ambiguous GS1,
undecodable EPC, empty input) also prints its reason to stderr and exits 2, like every other
invalid input of the CLI; no input at all, or both, is bad usage (exit 2).

A shell cannot easily pass ASCII 29, so TEXT may spell the GS1 separator ``<GS>`` or ``\\x1d``
(the four characters); a real ASCII 29 works too.
"""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Annotated, Any, Final

import typer

from gxpgate.agent.cli.common import fail
from gxpgate.drivers.epc import decode_epc
from gxpgate.drivers.gs1 import GS, parse_scan

__all__ = ["app", "scan_text"]

app = typer.Typer(
    help="Decode barcode scans and RFID tags.", no_args_is_help=True, add_completion=False
)

_GS_SPELLINGS: Final = re.compile(r"<GS>|\\x1d", re.IGNORECASE)


@app.callback()
def scan() -> None:
    """Decode barcode scans and RFID tags."""
    # A callback keeps ``decode`` a named subcommand even while it is the only one.


def scan_text(text: str) -> str:
    """Command-line spelling → scanner text: ``<GS>`` and ``\\x1d`` become ASCII 29."""
    return _GS_SPELLINGS.sub(GS, text)


def _print(result: dict[str, Any]) -> None:
    typer.echo(json.dumps(result, indent=2, sort_keys=True, ensure_ascii=False))


@app.command("decode")
def decode(
    text: Annotated[
        str | None,
        typer.Argument(
            help="Scanned text; write the GS1 separator as <GS> or \\x1d", show_default=False
        ),
    ] = None,
    epc: Annotated[
        str | None,
        typer.Option("--epc", metavar="HEX", help="EPC bank of an RFID tag, in hex"),
    ] = None,
    pc: Annotated[
        bool, typer.Option("--pc", help="HEX starts with the 16-bit PC word (EPC length from it)")
    ] = False,
    on: Annotated[
        str | None,
        typer.Option(
            "--date",
            metavar="YYYY-MM-DD",
            help="Reference date for two-digit years (GS1 century rule) [default: today]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print what a barcode (TEXT) or an RFID tag (--epc HEX) says, as JSON; exit 2 if invalid."""
    if (text is None) == (epc is None):
        fail("give either TEXT or --epc HEX", 2)
    if epc is not None:
        if on is not None:
            fail("--date applies to barcode text, not to --epc", 2)
        tag = decode_epc(epc, strip_pc=pc)
        _print(tag.as_dict())
        if tag.error is not None:
            fail(f"EPC {epc.strip() or '(empty)'}: {tag.error}", 2)
        return
    if pc:
        fail("--pc applies to --epc only", 2)
    assert text is not None  # checked above; narrows the type
    try:
        reference = date.fromisoformat(on) if on is not None else date.today()
    except ValueError:
        fail(f"--date: not a date (YYYY-MM-DD): {on!r}", 2)
    result = parse_scan(scan_text(text), reference_date=reference)
    _print(result.as_dict())
    if result.problem is not None:
        fail(result.problem, 2)
