"""The product master and hold list files a site exports from its ERP, and loading the whole
policy (inline entries and files) into a :class:`~gxpgate.config.products.Policy`.

Every problem of a file is collected, not just the first, as ``FILE:LINE: reason``;
:func:`load_policy` raises one :class:`~gxpgate.config.products.PolicyError` with them all, and with
the SHA-256 of each file it read (so a failed load can say which version of a file was refused).

CSV format
----------
UTF-8, with or without a byte-order mark. The first line that is not blank or a ``#`` comment is
the header: column names in any order, case-insensitive; unknown columns are errors. Fields are
separated by ``,``; a field holding a comma is quoted (``"Vaccine X, 10 x 0.5 ml"``) and does not
span lines. Blank lines, lines starting with ``#`` and rows of empty fields are ignored (so a
first field starting with ``#`` must be quoted). Surrounding spaces of a field are ignored.

- products: ``gtin``, ``profile`` (required); ``tos_allowance_hours`` (empty: none on record),
  ``flags`` (separated by ``;`` or ``|``), ``name``.
- hold list: ``reason`` and ``lot`` and/or ``sscc`` (required); ``gtin``. A row names an SSCC,
  or a lot with or without its GTIN.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pydantic import BaseModel

from gxpgate.config.products import (
    MAX_TOS_HOURS,
    HoldEntry,
    HoldKey,
    HoldList,
    Policy,
    PolicyError,
    PolicySource,
    Problem,
    ProductFlag,
    ProductMaster,
    ProductRule,
    describe_key,
    hold_key,
    parse_gtin,
    parse_lot,
    parse_sscc,
    product_key,
    profile_problem,
)
from gxpgate.config.rules_model import StorageProfile

if TYPE_CHECKING:
    from gxpgate.config.model import GatewayConfig

__all__ = ["HOLD_COLUMNS", "PRODUCT_COLUMNS", "load_policy", "parse_hold_csv", "parse_products_csv"]

PRODUCT_COLUMNS: Final = ("gtin", "profile", "tos_allowance_hours", "flags", "name")
HOLD_COLUMNS: Final = ("gtin", "lot", "sscc", "reason")

_HOURS: Final = re.compile(r"\d+(\.\d+)?")
_FLAG_SEPARATORS: Final = re.compile(r"[;|]")


# -- tables -------------------------------------------------------------------------------------


def _table(
    raw: bytes,
    path: str,
    columns: tuple[str, ...],
    required: Iterable[str],
    problems: list[Problem],
    *,
    one_of: tuple[str, ...] = (),
) -> list[tuple[int, dict[str, str]]]:
    """The data rows of a CSV file as ``(line, {column: stripped field})``; the header must
    have every ``required`` column and at least one of ``one_of``."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        number = raw[: exc.start].count(b"\n") + 1
        why = f"not UTF-8 text: {exc.reason} at byte {exc.start}"
        problems.append(Problem(path, number, why))
        return []
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            fields = next(csv.reader([line], strict=True))
        except csv.Error as exc:
            problems.append(Problem(path, number, f"not a CSV line: {exc}"))
            continue
        if header is None:
            header = [name.strip().lower() for name in fields]
            if not _header_ok(header, path, number, columns, required, problems):
                return []
            if one_of and not set(one_of) & set(header):
                names = " or ".join(repr(name) for name in one_of)
                problems.append(Problem(path, number, f"the header needs a column {names}"))
                return []
            continue
        if not any(field.strip() for field in fields):
            continue
        if len(fields) != len(header):
            why = f"{len(fields)} fields, the header has {len(header)} ({','.join(header)})"
            problems.append(Problem(path, number, why))
            continue
        rows.append((number, dict(zip(header, (f.strip() for f in fields), strict=True))))
    if header is None:
        why = f"no header row (columns: {','.join(columns)})"
        problems.append(Problem(path, None, why))
    return rows


def _header_ok(
    header: list[str],
    path: str,
    number: int,
    columns: tuple[str, ...],
    required: Iterable[str],
    problems: list[Problem],
) -> bool:
    if len(header) == 1 and (";" in header[0] or "\t" in header[0]):
        why = f"fields are separated by ',' (the header reads {header[0]!r})"
        problems.append(Problem(path, number, why))
        return False
    before = len(problems)
    known = ", ".join(columns)
    for name in sorted(set(header)):
        if header.count(name) > 1:
            problems.append(Problem(path, number, f"column {name!r} appears twice"))
        elif name not in columns:
            problems.append(Problem(path, number, f"unknown column {name!r}; known: {known}"))
    for name in required:
        if name not in header:
            problems.append(Problem(path, number, f"required column {name!r} is missing"))
    return len(problems) == before


def parse_products_csv(
    raw: bytes,
    path: Path,
    site_profiles: Mapping[str, StorageProfile],
    problems: list[Problem],
    taken: dict[tuple[str, ...], str] | None = None,
) -> list[ProductRule]:
    """The rules in a products CSV. Problems are appended to ``problems``; ``taken`` maps the
    keys already listed (the inline ones) to where, and gains this file's."""
    where = str(path)
    taken = {} if taken is None else taken
    checked: dict[str, str | None] = {}
    rules: list[ProductRule] = []
    for line, row in _table(raw, where, PRODUCT_COLUMNS, ("gtin", "profile"), problems):
        errors: list[str] = []
        key: tuple[str, str] | None = None
        try:
            key = product_key(row["gtin"])
        except ValueError as exc:
            errors.append(str(exc) if row["gtin"] else "gtin is empty")
        profile = row["profile"]
        if not profile:
            errors.append("profile is empty")
        else:
            if profile not in checked:
                checked[profile] = profile_problem(profile, site_profiles)
            if checked[profile] is not None:
                errors.append(f"profile: {checked[profile]}")
        hours: float | None = None
        text = row.get("tos_allowance_hours", "")
        if text:
            if _HOURS.fullmatch(text) and float(text) <= MAX_TOS_HOURS:
                hours = float(text)
            else:
                errors.append(
                    f"tos_allowance_hours {text!r} is not a number of hours from 0 to "
                    f"{MAX_TOS_HOURS:.0f} ('.' as the decimal point)"
                )
        flags: set[ProductFlag] = set()
        for name in _FLAG_SEPARATORS.split(row.get("flags", "")):
            name = name.strip()
            if not name:
                continue
            try:
                flags.add(ProductFlag(name))
            except ValueError:
                known = ", ".join(flag.value for flag in ProductFlag)
                errors.append(f"flag {name!r} is unknown; flags: {known}")
        source = f"{path.name}:{line}"
        if key is not None:
            earlier = taken.setdefault(key, source)
            if earlier != source:
                errors.append(f"{describe_key(key)} is already listed at {earlier}")
        problems.extend(Problem(where, line, why) for why in errors)
        if errors or key is None:
            continue
        exact = key[0] == "gtin"
        rules.append(
            ProductRule(
                gtin=key[1] if exact else None,
                prefix=None if exact else key[1],
                profile=profile,
                tos_allowance_hours=hours,
                flags=frozenset(flags),
                name=row.get("name") or None,
                source=source,
            )
        )
    return rules


def parse_hold_csv(
    raw: bytes,
    path: Path,
    problems: list[Problem],
    taken: dict[tuple[str, ...], str] | None = None,
) -> list[HoldEntry]:
    """The holds in a hold-list CSV; problems and ``taken`` as for :func:`parse_products_csv`."""
    where = str(path)
    taken = {} if taken is None else taken
    entries: list[HoldEntry] = []
    table = _table(raw, where, HOLD_COLUMNS, ["reason"], problems, one_of=("lot", "sscc"))
    for line, row in table:
        errors: list[str] = []
        values: dict[str, str | None] = {}
        for name, check in (("gtin", parse_gtin), ("lot", parse_lot), ("sscc", parse_sscc)):
            text = row.get(name) or None
            values[name] = text
            if text is not None:
                try:
                    values[name] = check(text)
                except ValueError as exc:
                    errors.append(str(exc))
        key: HoldKey | None = None
        if not errors:
            try:
                key = hold_key(values["gtin"], values["lot"], values["sscc"])
            except ValueError as exc:
                errors.append(str(exc))
        if not row["reason"]:
            errors.append("reason is empty: say why it is on hold")
        source = f"{path.name}:{line}"
        if key is not None:
            earlier = taken.setdefault(key, source)
            if earlier != source:
                errors.append(f"{describe_key(key)} is already on hold at {earlier}")
        problems.extend(Problem(where, line, why) for why in errors)
        if not errors:
            entries.append(HoldEntry(row["reason"], source, **values))
    return entries


# -- loading ------------------------------------------------------------------------------------


def _inline_sha256(items: Sequence[BaseModel]) -> str | None:
    if not items:
        return None
    dumped = [item.model_dump(mode="json") for item in items]
    text = json.dumps(dumped, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read(
    path: Path | None, field: str, problems: list[Problem], files: dict[str, str | None]
) -> bytes | None:
    if path is None:
        return None
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        problems.append(Problem(str(path), None, f"file not found ({field})"))
    except OSError as exc:
        problems.append(Problem(str(path), None, f"cannot read ({field}): {exc.strerror or exc}"))
    else:
        files[str(path)] = hashlib.sha256(raw).hexdigest()
        return raw
    files[str(path)] = None
    return None


def load_policy(config: GatewayConfig, config_path: Path) -> Policy:
    """The product master and hold list of ``config`` (loaded and checked by ``load_config``,
    file paths resolved), reading their files now; :class:`PolicyError` lists every problem."""
    problems: list[Problem] = []
    files: dict[str, str | None] = {}
    label = config_path.name

    products = config.products
    product_keys: dict[tuple[str, ...], str] = {}
    rules: list[ProductRule] = []
    for index, item in enumerate(products.items):
        kind, digits = key = product_key(item.gtin)
        source = f"{label}:products.items.{index}"
        product_keys[key] = source
        rules.append(
            ProductRule(
                gtin=digits if kind == "gtin" else None,
                prefix=digits if kind == "prefix" else None,
                profile=item.profile,
                tos_allowance_hours=item.tos_allowance_hours,
                flags=frozenset(item.flags),
                name=item.name,
                source=source,
            )
        )
    raw = _read(products.file, "products.file", problems, files)
    from_file: list[ProductRule] = []
    if raw is not None and products.file is not None:
        from_file = parse_products_csv(raw, products.file, config.profiles, problems, product_keys)

    holds = config.hold_list
    hold_keys: dict[tuple[str, ...], str] = {}
    entries: list[HoldEntry] = []
    for index, hold in enumerate(holds.items):
        source = f"{label}:hold_list.items.{index}"
        hold_keys[hold.key()] = source
        gtin = None if hold.gtin is None else parse_gtin(hold.gtin)
        entries.append(HoldEntry(hold.reason, source, gtin, hold.lot, hold.sscc))
    raw = _read(holds.file, "hold_list.file", problems, files)
    held: list[HoldEntry] = []
    if raw is not None and holds.file is not None:
        held = parse_hold_csv(raw, holds.file, problems, hold_keys)

    if problems:
        raise PolicyError(problems, files)
    return Policy(
        products=ProductMaster([*rules, *from_file]),
        holds=HoldList([*entries, *held]),
        products_source=PolicySource(
            products.file,
            None if products.file is None else files[str(products.file)],
            len(from_file),
            _inline_sha256(products.items),
            len(products.items),
        ),
        holds_source=PolicySource(
            holds.file,
            None if holds.file is None else files[str(holds.file)],
            len(held),
            _inline_sha256(holds.items),
            len(holds.items),
        ),
    )
