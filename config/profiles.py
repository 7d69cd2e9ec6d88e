"""The built-in storage profiles, loaded from ``profiles.toml`` (data, each with its citation).

A zone names the profile it keeps; a typo fails at load instead of leaving a zone unguarded.
Site profiles (``[profiles.NAME]`` in the config) may extend a built-in one.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from importlib.resources import files
from types import MappingProxyType

from gxpgate.config.rules_model import StorageProfile

__all__ = ["BUILTIN_PROFILES", "resolve_profile"]


def _load() -> Mapping[str, StorageProfile]:
    text = files(__package__).joinpath("profiles.toml").read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    return MappingProxyType({name: StorageProfile.model_validate(v) for name, v in raw.items()})


BUILTIN_PROFILES: Mapping[str, StorageProfile] = _load()


def resolve_profile(
    name: str, site: Mapping[str, StorageProfile], _seen: tuple[str, ...] = ()
) -> StorageProfile:
    """The profile ``name`` with what it ``extends`` folded in; ``KeyError`` or ``ValueError``
    (a cycle) when it cannot be resolved."""
    if name in _seen:
        raise ValueError(f"profiles extend each other in a cycle: {' → '.join((*_seen, name))}")
    profile = site.get(name) or BUILTIN_PROFILES[name]
    if profile.extends is None:
        return profile
    base = resolve_profile(profile.extends, site, (*_seen, name))
    update: dict[str, object] = {"extends": None}
    for quantity in ("temperature", "humidity"):
        mine = getattr(profile, quantity)
        theirs = getattr(base, quantity)
        update[quantity] = theirs.merged(mine) if theirs is not None and mine else mine or theirs
    return profile.model_copy(update=update)
