"""The product master and the hold list: the storage profile each product requires, and the lots
and SSCCs the site has put on hold. The config's inline parts (strict models), how entries are
keyed, and the frozen :class:`Policy` the agent queries per scan; the CSV files and loading are
in :mod:`gxpgate.config.policy_files`. Pure: imports nothing of the agent.

Keys
----
A product rule names a GTIN (8, 12, 13 or 14 digits, check digit verified; shorter GTINs count
right-justified with leading zeros, as AI 01 carries them) or a prefix of the 14-digit GTIN
written with a trailing ``*`` (``00614141*``: indicator digit 0, company prefix 0614141). An
exact GTIN beats any prefix; among prefixes the longest wins. The same GTIN or prefix twice is an
error, also once inline and once in the file.

A hold names an SSCC (18 digits, check digit), a lot of one GTIN, or a bare lot (of any
product); :meth:`HoldList.lookup` tries them in that order. Lots compare exactly (GS1 AI 10 is
case-sensitive).

Exceptions::

    PolicyError     files or entries that are not a valid product master or hold list;
                    .problems lists each as a Problem(path, line, message), .files the
                    SHA-256 of each file read
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gxpgate.config.profiles import BUILTIN_PROFILES, resolve_profile
from gxpgate.config.rules_model import StorageProfile
from gxpgate.drivers.gs1 import CSET82, gs1_check_digit

__all__ = [
    "MAX_TOS_HOURS",
    "HoldEntry",
    "HoldItem",
    "HoldList",
    "HoldListConfig",
    "Policy",
    "PolicyError",
    "PolicySource",
    "PolicyVersion",
    "Problem",
    "ProductFlag",
    "ProductItem",
    "ProductMaster",
    "ProductRule",
    "ProductsConfig",
    "describe_key",
    "hold_key",
    "parse_gtin",
    "parse_lot",
    "parse_product_key",
    "parse_sscc",
    "product_key",
    "profile_problem",
]

MAX_TOS_HOURS: Final = 87_600.0
"""Ten years: a larger allowance is a unit mistake, not stability data."""

_GTIN_LENGTHS: Final = (8, 12, 13, 14)


# -- keys ---------------------------------------------------------------------------------------


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def parse_gtin(text: str) -> str:
    """The 14-digit GTIN ``text`` names; ``ValueError`` saying what is wrong."""
    if not _digits(text) or len(text) not in _GTIN_LENGTHS:
        raise ValueError(f"gtin {text!r} is not a GTIN of 8, 12, 13 or 14 digits")
    gtin = text.zfill(14)
    if gs1_check_digit(gtin[:13]) != int(gtin[13]):
        raise ValueError(f"gtin {text!r} fails its check digit")
    return gtin


def parse_product_key(text: str) -> tuple[str, bool]:
    """``(digits, is_prefix)`` for a product rule's ``gtin``; ``ValueError`` saying why not."""
    if text.endswith("*"):
        digits = text[:-1]
        if not _digits(digits) or not 1 <= len(digits) <= 13:
            raise ValueError(f"gtin prefix {text!r} must be 1 to 13 digits followed by '*'")
        return digits, True
    if not _digits(text) or len(text) not in _GTIN_LENGTHS:
        raise ValueError(
            f"gtin {text!r} is neither a GTIN (8, 12, 13 or 14 digits) nor a prefix "
            "(digits followed by '*')"
        )
    return parse_gtin(text), False


def parse_sscc(text: str) -> str:
    if not _digits(text) or len(text) != 18:
        raise ValueError(f"sscc {text!r} is not 18 digits")
    if gs1_check_digit(text[:17]) != int(text[17]):
        raise ValueError(f"sscc {text!r} fails its check digit")
    return text


def parse_lot(text: str) -> str:
    if not 1 <= len(text) <= 20 or not set(text) <= CSET82:
        raise ValueError(
            f"lot {text!r} is not a GS1 lot (AI 10: 1 to 20 letters, digits or punctuation "
            "of GS1 character set 82, no spaces)"
        )
    return text


HoldKey = tuple[str, ...]


def hold_key(gtin: str | None, lot: str | None, sscc: str | None) -> HoldKey:
    """What a hold is looked up by; ``ValueError`` for a combination that holds nothing."""
    if sscc:
        if gtin or lot:
            raise ValueError("an sscc hold leaves gtin and lot empty (one hold per row)")
        return ("sscc", sscc)
    if lot:
        return ("lot", gtin or "", lot)
    if gtin:
        raise ValueError("a gtin alone is not a hold: name its lot")
    raise ValueError("a hold names a lot (with or without its gtin) or an sscc")


def describe_key(key: tuple[str, ...]) -> str:
    """A product or hold key as a reader would write it, for error messages."""
    if key[0] == "sscc":
        return f"sscc {key[1]}"
    if key[0] == "lot":
        return f"gtin {key[1]} lot {key[2]!r}" if key[1] else f"lot {key[2]!r}"
    return f"gtin prefix {key[1]}*" if key[0] == "prefix" else f"gtin {key[1]}"


# -- the config's inline parts ------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProductFlag(StrEnum):
    """Storage statements of a product's label beyond its profile that zone readings can
    check (the wording of EMA CPMP/QWP/609/96 rev 2)."""

    DO_NOT_FREEZE = "do_not_freeze"
    """"Do not freeze": at or below 0 °C counts against the lot wherever it is, even where its
    profile would allow it."""
    DO_NOT_REFRIGERATE = "do_not_refrigerate"
    """"Do not refrigerate or freeze": the lot does not belong in a refrigerated or colder
    zone."""


class ProductItem(_Strict):
    gtin: str
    """A GTIN (8, 12, 13 or 14 digits, check digit verified), or a prefix of the 14-digit GTIN
    ending in ``*`` (``"00614141*"``: indicator digit 0, company prefix 0614141). An exact GTIN
    beats any prefix; among prefixes the longest wins."""
    profile: str
    """Storage profile the product requires: a built-in profile or one under ``[profiles]``."""
    tos_allowance_hours: float | None = Field(default=None, ge=0, le=MAX_TOS_HOURS)
    """Time out of storage the product may spend in all, outside its required condition (from
    its stability data). Unset: none on record."""
    flags: tuple[ProductFlag, ...] = ()
    """Label statements: ``do_not_freeze``, ``do_not_refrigerate``."""
    name: str | None = None
    """Display name."""

    @field_validator("gtin")
    @classmethod
    def _valid_key(cls, value: str) -> str:
        parse_product_key(value)
        return value


class ProductsConfig(_Strict):
    file: Path | None = None
    """CSV file exported from the ERP (header ``gtin,profile,tos_allowance_hours,flags,name``;
    README "Product master and hold list"). Re-read on SIGHUP."""
    items: tuple[ProductItem, ...] = ()
    """Products listed in the config itself, beside the file's; a GTIN or prefix in both is an
    error. They change with the config (a restart), not with SIGHUP."""

    @model_validator(mode="after")
    def _unique(self) -> Self:
        _check_unique("items", [product_key(item.gtin) for item in self.items])
        return self

    def profile_errors(
        self, site: Mapping[str, StorageProfile]
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """Every item's profile must resolve, as a zone's must."""
        errors: list[tuple[tuple[str | int, ...], str]] = []
        for index, item in enumerate(self.items):
            why = profile_problem(item.profile, site)
            if why is not None:
                errors.append((("products", "items", index, "profile"), why))
        return errors


class HoldItem(_Strict):
    gtin: str | None = None
    """GTIN of the held lot; without it the lot is held for any product."""
    lot: str | None = None
    """Lot (batch) number as AI 10 carries it."""
    sscc: str | None = None
    """Or an SSCC (18 digits): a held logistic unit; then no gtin or lot."""
    reason: str = Field(pattern=r"\S")
    """Why it is on hold (deviation, complaint, recall number): carried into exceptions."""

    @field_validator("gtin")
    @classmethod
    def _valid_gtin(cls, value: str | None) -> str | None:
        return None if value is None else _returning(value, parse_gtin)

    @field_validator("lot")
    @classmethod
    def _valid_lot(cls, value: str | None) -> str | None:
        return None if value is None else _returning(value, parse_lot)

    @field_validator("sscc")
    @classmethod
    def _valid_sscc(cls, value: str | None) -> str | None:
        return None if value is None else _returning(value, parse_sscc)

    @model_validator(mode="after")
    def _names_something(self) -> Self:
        hold_key(self.gtin, self.lot, self.sscc)
        return self

    def key(self) -> HoldKey:
        return hold_key(self.gtin and parse_gtin(self.gtin), self.lot, self.sscc)


class HoldListConfig(_Strict):
    file: Path | None = None
    """CSV file of holds (header ``gtin,lot,sscc,reason``; README "Product master and hold
    list"). Re-read on SIGHUP."""
    items: tuple[HoldItem, ...] = ()
    """Holds listed in the config itself, beside the file's; the same hold in both is an
    error. They change with the config (a restart), not with SIGHUP."""

    @model_validator(mode="after")
    def _unique(self) -> Self:
        _check_unique("items", [item.key() for item in self.items])
        return self


def _returning(value: str, check: Callable[[str], object]) -> str:
    """Validate ``value`` with ``check`` but keep it as written (no quiet rewriting)."""
    check(value)
    return value


def product_key(text: str) -> tuple[str, str]:
    """``("gtin", 14 digits)`` or ``("prefix", digits)``: what a product rule is listed by."""
    digits, prefix = parse_product_key(text)
    return ("prefix" if prefix else "gtin", digits)


def _check_unique(name: str, keys: Sequence[tuple[str, ...]]) -> None:
    first: dict[tuple[str, ...], int] = {}
    for index, key in enumerate(keys):
        earlier = first.setdefault(key, index)
        if earlier != index:
            raise ValueError(f"{name} {earlier} and {index} both list {describe_key(key)}")


def profile_problem(name: str, site: Mapping[str, StorageProfile]) -> str | None:
    """Why ``name`` is not a storage profile of the config, or None when it is."""
    try:
        resolve_profile(name, site)
    except KeyError:
        known = ", ".join([*BUILTIN_PROFILES, *site])
        return f"unknown storage profile {name!r}; known: {known}"
    except ValueError as exc:
        return str(exc)
    return None


# -- what the agent queries ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProductRule:
    gtin: str | None
    """The GTIN (14 digits) this rule names; None for a prefix rule."""
    prefix: str | None
    """The GTIN prefix (digits, without ``*``) this rule names; None for an exact GTIN."""
    profile: str
    tos_allowance_hours: float | None
    flags: frozenset[ProductFlag]
    name: str | None
    source: str
    """Where it is written: ``products.csv:14`` or ``gxpgate.toml:products.items.0``."""


@dataclass(frozen=True, slots=True)
class HoldEntry:
    reason: str
    source: str
    """Where it is written: ``holds.csv:7`` or ``gxpgate.toml:hold_list.items.0``."""
    gtin: str | None = None
    """14 digits, None for a bare lot or an SSCC."""
    lot: str | None = None
    sscc: str | None = None


class ProductMaster:
    """Product rules by exact GTIN and by prefix; :meth:`lookup` is a few dict lookups."""

    def __init__(self, rules: Iterable[ProductRule]) -> None:
        self._exact: dict[str, ProductRule] = {}
        self._prefixes: dict[str, ProductRule] = {}
        for rule in rules:
            if rule.gtin is not None:
                self._exact[rule.gtin] = rule
            elif rule.prefix is not None:
                self._prefixes[rule.prefix] = rule
        # Only the lengths some prefix has are tried, longest first.
        self._lengths = sorted({len(p) for p in self._prefixes}, reverse=True)

    def __len__(self) -> int:
        return len(self._exact) + len(self._prefixes)

    def lookup(self, gtin: str) -> ProductRule | None:
        """The rule for ``gtin`` (14 digits as AI 01 carries it; 8, 12 or 13 are padded)."""
        if len(gtin) != 14 and len(gtin) in _GTIN_LENGTHS:
            gtin = gtin.zfill(14)
        rule = self._exact.get(gtin)
        if rule is not None or len(gtin) != 14:
            return rule
        for length in self._lengths:
            rule = self._prefixes.get(gtin[:length])
            if rule is not None:
                return rule
        return None


class HoldList:
    """Holds by SSCC, by GTIN and lot, and by bare lot."""

    def __init__(self, entries: Iterable[HoldEntry]) -> None:
        self._ssccs: dict[str, HoldEntry] = {}
        self._lots: dict[tuple[str, str], HoldEntry] = {}
        self._bare_lots: dict[str, HoldEntry] = {}
        for entry in entries:
            if entry.sscc is not None:
                self._ssccs[entry.sscc] = entry
            elif entry.lot is not None and entry.gtin is not None:
                self._lots[(entry.gtin, entry.lot)] = entry
            elif entry.lot is not None:
                self._bare_lots[entry.lot] = entry

    def __len__(self) -> int:
        return len(self._ssccs) + len(self._lots) + len(self._bare_lots)

    def lookup(self, gtin: str | None, lot: str | None, sscc: str | None) -> HoldEntry | None:
        """The hold on what a scan names: its SSCC, else its GTIN and lot, else its lot."""
        if sscc is not None and (entry := self._ssccs.get(sscc)) is not None:
            return entry
        if lot is None:
            return None
        if gtin is not None:
            if len(gtin) != 14 and len(gtin) in _GTIN_LENGTHS:
                gtin = gtin.zfill(14)
            if (entry := self._lots.get((gtin, lot))) is not None:
                return entry
        return self._bare_lots.get(lot)


@dataclass(frozen=True)
class PolicySource:
    """What one part (products or hold list) was loaded from, for the audit record."""

    path: Path | None
    sha256: str | None
    """SHA-256 of the file's bytes as read; None without a file."""
    entries: int
    """Entries from the file."""
    inline_sha256: str | None
    """SHA-256 of the inline entries (canonical JSON); None without any."""
    inline_entries: int

    def record(self) -> dict[str, Any]:
        return {
            "path": None if self.path is None else str(self.path),
            "sha256": self.sha256,
            "entries": self.entries,
            "inline_sha256": self.inline_sha256,
            "inline_entries": self.inline_entries,
        }


@dataclass(frozen=True)
class PolicyVersion:
    """The policy in force, by the hashes of what it was loaded from (None: no such part)."""

    products_sha256: str | None
    products_inline_sha256: str | None
    hold_list_sha256: str | None
    hold_list_inline_sha256: str | None


@dataclass(frozen=True)
class Policy:
    products: ProductMaster
    holds: HoldList
    products_source: PolicySource
    holds_source: PolicySource

    def product(self, gtin: str) -> ProductRule | None:
        return self.products.lookup(gtin)

    def on_hold(self, gtin: str | None, lot: str | None, sscc: str | None) -> HoldEntry | None:
        return self.holds.lookup(gtin, lot, sscc)

    @property
    def version(self) -> PolicyVersion:
        p, h = self.products_source, self.holds_source
        return PolicyVersion(p.sha256, p.inline_sha256, h.sha256, h.inline_sha256)

    def record(self) -> dict[str, Any]:
        """The ``products`` and ``hold_list`` parts of a ``policy_loaded`` audit record."""
        return {"products": self.products_source.record(), "hold_list": self.holds_source.record()}


# -- errors -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


class PolicyError(Exception):
    """A product master or hold list with errors; nothing of it may be put in force."""

    def __init__(self, problems: list[Problem], files: Mapping[str, str | None]) -> None:
        self.problems = problems
        self.files = dict(files)
        """Each file read: path → SHA-256 of its bytes (None when unreadable)."""
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [str(problem) for problem in self.problems]
