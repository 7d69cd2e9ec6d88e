"""Log output: one line per event, ``key=value`` fields, to stdout for journald; no secrets.

Call sites log state changes as events with printf-style arguments::

    log.warning("device.offline device=%s error=%s", device, message)

:class:`EventFormatter` renders every argument that fills a ``key=`` position as a logfmt value:
quoted, with JSON string escapes, when it is empty or holds a space, a quote, ``=`` or a control
character. Line breaks anywhere else in the message are escaped too, so an event is always one
line a program can split into fields, even when a device's error text spans lines::

    2026-11-21T10:00:00.123Z WARNING gxpgate.agent.uplink.base uplink.failing kind=tls error="no CA"

Under systemd, when stdout is the journal stream (``$JOURNAL_STREAM`` names stdout's device and
inode, systemd.exec(5)), each line starts with the sd-daemon(3) priority prefix (``<4>`` for a
warning) so journald records the level, and carries no timestamp (journald stamps each line).
A traceback (only the top-level crash handler logs one) keeps its lines, each with the prefix.

Secrets: :func:`redact` is applied to every line this formatter writes. It blanks the value of
any ``key=value`` or ``key: value`` whose key names a token, password, secret, credential or
authorization, ``Bearer``/``Basic`` credentials and the password in a URL's user info. No call
site logs such a value today (the bearer token, broker password and key material never reach a
log call); this is the net under future mistakes and under libraries' error texts. It lives in
the formatter rather than in a :class:`logging.Filter` because the formatter is the one place
every line passes, whichever logger it came from, and it leaves the record itself untouched
for other handlers.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TextIO

__all__ = [
    "EventFormatter",
    "journal_stream",
    "quiet_libraries",
    "redact",
    "render_message",
    "setup_logging",
]

REDACTED = "[redacted]"

_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
"""sd-daemon(3) priorities by level (``<5>`` notice has no logging level); below INFO: 7."""

_CONVERSION = re.compile(
    r"%(?P<name>\([^)]*\))?[#0 +-]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d+))?[hlL]?"
    r"(?P<type>[diouxXeEfFgGcrsa%])"
)
_KEY_BEFORE = re.compile(r"[A-Za-z_][\w.-]*=\Z")
_NEEDS_QUOTES = re.compile(r'[\s"=\x00-\x1f\x7f]')
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 127)} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}

_SECRET_KEY = (
    r"[\w.-]*(?:token|passw(?:or)?d|secret|credential|authorization|api[_-]?key|private[_-]?key)"
    r"[\w.-]*"
)
_SECRET_VALUE = r"""(?:"(?:[^"\\]|\\.)*"|'[^']*'|(?:bearer|basic)\s+[^\s"',;&]+|[^\s"',;&]+)"""
_SECRET_PAIR = re.compile(
    rf"""(?P<key>\b{_SECRET_KEY})(?P<sep>["']?\s*[=:]\s*)(?P<value>{_SECRET_VALUE})""",
    re.IGNORECASE,
)
_SCHEME_CREDENTIALS = re.compile(r"\b(?P<scheme>bearer|basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"\b(?P<head>[a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s@]+@", re.IGNORECASE)
_NOT_SECRET_SUFFIXES = ("_file", "_path", "_dir", "_id")
"""Keys such as ``token_file`` name where a secret is, which an operator needs to see."""


def render_message(record: logging.LogRecord) -> str:
    """The record's message with ``key=`` arguments as logfmt values, on one line."""
    args = record.args
    if not args or not isinstance(args, tuple):
        return _one_line(record.getMessage())  # no arguments, or a mapping: nothing to place
    msg = str(record.msg)
    parts: list[str] = []
    pos = used = 0
    for match in _CONVERSION.finditer(msg):
        parts.append(msg[pos : match.start()])
        pos = match.end()
        if match["type"] == "%":
            parts.append("%")
            continue
        if match["name"] or match["width"] == "*" or match["precision"] == "*" or used >= len(args):
            return _one_line(record.getMessage())  # unusual forms: let logging handle them
        value = match.group(0) % (args[used],)
        used += 1
        if _KEY_BEFORE.search(msg, 0, match.start()):
            value = _logfmt_value(value)
        parts.append(value)
    if used != len(args):
        return _one_line(record.getMessage())  # raises as logging would: a call-site bug
    parts.append(msg[pos:])
    return _one_line("".join(parts))


def redact(text: str) -> str:
    """``text`` with secret values replaced by ``[redacted]``."""
    text = _URL_PASSWORD.sub(rf"\g<head>:{REDACTED}@", text)
    text = _SECRET_PAIR.sub(_redact_pair, text)
    return _SCHEME_CREDENTIALS.sub(rf"\g<scheme> {REDACTED}", text)


class EventFormatter(logging.Formatter):
    """One line per record: ``<N>logger event…`` for journald, else ``time LEVEL logger event…``."""

    def __init__(self, *, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.name} {redact(render_message(record))}"
        if self.journal:
            prefix = f"<{_priority(record.levelno)}>"
            line = prefix + line
        else:
            stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
            line = f"{stamp[:-3]}Z {record.levelname} {line}"
        details = []
        if record.exc_info:
            details.append(self.formatException(record.exc_info))
        if record.stack_info:
            details.append(self.formatStack(record.stack_info))
        if not details:
            return line
        extra = redact("\n".join(details)).splitlines()
        if self.journal:
            extra = [prefix + text for text in extra]  # journald reads the prefix line by line
        return "\n".join([line, *extra])


class _StdoutHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stdout`` is when a record arrives (as :data:`logging.lastResort`
    does for stderr), so a test runner that swaps stdout never leaves it writing to a closed
    stream."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def setup_logging(verbose: bool = False, environ: Mapping[str, str] | None = None) -> None:
    """Send the process's log records to stdout through :class:`EventFormatter` (replacing a
    handler an earlier call installed)."""
    handler = _StdoutHandler()
    handler.setFormatter(EventFormatter(journal=journal_stream(environ)))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdoutHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    quiet_libraries(verbose)


def journal_stream(environ: Mapping[str, str] | None = None, stream: TextIO | None = None) -> bool:
    """True when ``stream`` (stdout) is the journal stream systemd named in ``$JOURNAL_STREAM``
    (not merely inherited by a process whose stdout now goes elsewhere)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    if not value:
        return False
    try:
        device, inode = (int(part) for part in value.split(":"))
        st = os.fstat((sys.stdout if stream is None else stream).fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def quiet_libraries(verbose: bool = False) -> None:
    """Library chatter off: the agent reports every device and uplink failure itself, once
    per state change, whereas pymodbus logs each timeout with hex dumps of recent frames and
    asyncua logs tracebacks for every lost connection."""
    for name in ("pymodbus", "asyncua"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)


def _logfmt_value(value: str) -> str:
    if value and not _NEEDS_QUOTES.search(value):
        return value
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _one_line(text: str) -> str:
    return text.translate(_CONTROL)


def _priority(levelno: int) -> int:
    for level, priority in _PRIORITY:
        if levelno >= level:
            return priority
    return 7


def _redact_pair(match: re.Match[str]) -> str:
    if match["key"].lower().endswith(_NOT_SECRET_SUFFIXES):
        return match.group(0)
    return f"{match['key']}{match['sep']}{REDACTED}"
