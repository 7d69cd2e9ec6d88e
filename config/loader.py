"""Loading the TOML config and reporting what is wrong in terms a site engineer can act on.

Every problem becomes a :class:`ConfigError` carrying the file and a list of (field path,
reason) pairs, e.g. ``devices.cold-1.points.temp.type: must be one of int16, …``. The CLI prints
them and exits with status 2; nothing here prints or exits.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gxpgate.config.model import DEVICE_TYPES, PATTERN_WORDS, UPLINK_TRANSPORTS, GatewayConfig

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ConfigError",
    "LoadedConfig",
    "default_config_path",
    "load_config",
]

DEFAULT_CONFIG_PATH = Path("/etc/gxpgate/gxpgate.toml")


def default_config_path() -> Path:
    return Path(os.environ.get("GXPGATE_CONFIG") or DEFAULT_CONFIG_PATH)


class ConfigError(Exception):
    """The config file is missing, unreadable, not TOML, or fails validation."""

    def __init__(self, path: Path, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.path}: {where}: {why}" if where else f"{self.path}: {why}"
                for where, why in self.problems]  # fmt: skip


@dataclass(frozen=True)
class LoadedConfig:
    config: GatewayConfig
    path: Path
    sha256: str
    """SHA-256 of the file's bytes, recorded in the agent's start audit record."""


def load_config(path: Path) -> LoadedConfig:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, [("", "file not found")]) from None
    except OSError as exc:
        raise ConfigError(path, [("", f"cannot read: {exc.strerror or exc}")]) from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            path, [("", f"not UTF-8 text: {exc.reason} at byte {exc.start}")]
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [("", f"invalid TOML: {exc}")]) from None
    try:
        config = GatewayConfig.model_validate(document)
    except ValidationError as exc:
        problems = [_describe(err) for err in exc.errors()]
        problems.extend(_cross_reference_beside(document, exc))
        raise ConfigError(path, problems) from None
    problems = [(_dotted(loc), why) for loc, why in config.cross_reference_errors()]
    if problems:
        raise ConfigError(path, problems)
    config = config.resolve_relative(path.resolve().parent)
    return LoadedConfig(config, path, hashlib.sha256(raw).hexdigest())


_CROSS_SECTIONS = frozenset({"zones", "devices", "profiles", "buses", "alarms", "products"})
"""The sections the checks across sections read: with one of them invalid they cannot run."""
_STAND_INS: dict[str, object] = {
    "gateway": {"id": "x", "site": "x"},
    "signing": {"key_file": "x"},
    "buffer": {"path": "x"},
}
"""Valid stand-ins for required sections the checks across sections do not read."""


def _cross_reference_beside(document: Any, exc: ValidationError) -> list[tuple[str, str]]:
    """The checks across sections, when only sections they do not read are invalid: so that
    one run of ``config validate`` names a bad gateway id and an unmonitored point together."""
    if not isinstance(document, dict) or not all(err["loc"] for err in exc.errors()):
        return []
    failing = {err["loc"][0] for err in exc.errors()}
    if failing & _CROSS_SECTIONS:
        return []
    patched = {k: v for k, v in document.items() if k not in failing}
    patched.update({k: v for k, v in _STAND_INS.items() if k in failing})
    try:
        config = GatewayConfig.model_validate(patched)
    except ValidationError:
        return []  # a stand-in did not fit: the first pass's errors stand alone
    return [(_dotted(loc), why) for loc, why in config.cross_reference_errors()]


def _describe(error: Any) -> tuple[str, str]:
    loc = list(error["loc"])
    # A tagged union puts the tag into the path (devices.x.modbus_tcp.port): a user never wrote it.
    if len(loc) > 2 and loc[0] == "devices" and loc[2] in DEVICE_TYPES:
        del loc[2]
    if len(loc) > 1 and loc[0] == "uplink" and loc[1] in UPLINK_TRANSPORTS:
        del loc[1]
    message = error["msg"].removeprefix("Value error, ")
    kind = error["type"]
    if kind == "extra_forbidden":
        message = "unknown key (check the spelling; see `gxpgate config example`)"
    elif kind == "missing":
        message = "required key is missing"
    elif kind in ("union_tag_invalid", "union_tag_not_found") and loc == ["uplink"]:
        transport = error["input"].get("transport")
        known = ", ".join(UPLINK_TRANSPORTS)
        return "uplink.transport", f"unknown transport {transport!r}; known: {known}"
    elif kind == "union_tag_invalid":
        message = (
            f"unknown device type {error['input'].get('type')!r}; known: {', '.join(DEVICE_TYPES)}"
        )
    elif kind == "union_tag_not_found":
        message = f"missing 'type'; one of: {', '.join(DEVICE_TYPES)}"
    elif kind == "string_pattern_mismatch":
        message = PATTERN_WORDS.get(error["ctx"]["pattern"], message)
        if loc and loc[-1] == "[key]":  # a table key (a zone, device, point name)
            del loc[-1]
    if kind == "string_pattern_mismatch" and _echoable(error, loc):
        message = f"{error['input']!r} {message}"
    elif kind != "string_pattern_mismatch" and _echoable(error, loc):
        message = f"{message} (got {error['input']!r})"
    return _dotted(tuple(loc)), message


def _echoable(error: Any, loc: list[Any]) -> bool:
    """Whether the error may show its input: not a secret, and not a whole table (a model
    validator's input), which may hold a token or password."""
    if "input" not in error or error["type"] in ("model_type", "dict_type"):
        return False
    return not isinstance(error["input"], dict) and not _secret(loc)


def _secret(loc: list[Any]) -> bool:
    return any(isinstance(part, str) and ("token" in part or "password" in part) for part in loc)


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)
