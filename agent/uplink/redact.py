"""Known secrets out of text that came from elsewhere (a service's error body, an exception).

A quality service or proxy may echo the request back in an error: the bearer token, or a URL
with its password. Such text is redacted once, where it enters the agent, so audit records,
logs, metrics and ``gxpgate status`` never carry the secret.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from gxpgate.config.model import UplinkConfig

__all__ = ["REDACTED", "Redactor"]

REDACTED = "[redacted]"
_MIN_SECRET = 4
"""Shorter strings would redact ordinary words; no credential worth the name is this short."""


class Redactor:
    """Replaces every occurrence of each known secret (and its URL-encoded form)."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        found: set[str] = set()
        for secret in secrets:
            if secret and len(secret) >= _MIN_SECRET:
                found |= {secret, unquote(secret)}
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted(found, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    @classmethod
    def for_uplink(cls, config: UplinkConfig) -> Redactor:
        token = config.token.get_secret_value() if config.token is not None else None
        if config.token_file is not None:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                token = config.token_file.read_text(encoding="utf-8").strip()
        password = urlsplit(config.url).password
        return cls([token, password])
