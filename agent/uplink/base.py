"""What both uplinks share: the batch they send, the statistics they keep, the error kinds.

The HTTP uplink (:mod:`gxpgate.agent.uplink.http`, CONTRACT §3) and the MQTT uplink
(:mod:`gxpgate.agent.uplink.mqtt`, CONTRACT §4) send the same :class:`Batch` (:func:`read_batch`),
count their failed attempts in :class:`UplinkStats` by :data:`ErrorKind`, and classify a failed
connection with the one :func:`classify_error`. The seam the agent uses is
:class:`gxpgate.agent.uplink.seam.Uplink`.
"""

from __future__ import annotations

import logging
import ssl
import time
import zlib
from dataclasses import InitVar, dataclass, field
from typing import Final, Literal, get_args

import httpx
import orjson

from gxpgate.agent._retry import Episode
from gxpgate.buffer import Outbox

__all__ = [
    "COMMON_ERROR_KINDS",
    "CONNECTION_KINDS",
    "Batch",
    "ConnectionKind",
    "ErrorKind",
    "MqttUplinkError",
    "UplinkStats",
    "classify_error",
    "read_batch",
]

ConnectionKind = Literal["connect", "timeout", "tls"]
"""A connection (or request) that failed: refused or unreachable, too slow, TLS."""

ErrorKind = Literal[
    ConnectionKind,
    "rejected",  # the service or broker refused the batch (sealed once per episode)
    "throttled",  # HTTP 429
    "http_5xx",  # HTTP 500-599
    "http_other",  # HTTP: any status CONTRACT §3 does not name (the error says which)
    "malformed",  # HTTP: an answer that is not one (not JSON, no acked_through, too long)
    "records_pruned",  # HTTP: the service asks for records retention has pruned
    "buffer",  # HTTP: the cursor cannot be written (disk full)
    "broker",  # MQTT: a refused CONNACK or a DISCONNECT from the broker
]
"""Why a delivery attempt failed: a small, fixed vocabulary (a metrics label)."""

CONNECTION_KINDS: Final = frozenset(get_args(ConnectionKind))
COMMON_ERROR_KINDS: Final[tuple[ErrorKind, ...]] = (*get_args(ConnectionKind), "rejected")
"""The kinds either transport can report."""


class MqttUplinkError(Exception):
    """The MQTT uplink cannot be set up; the message says what to fix. (Here rather than in
    :mod:`gxpgate.agent.uplink.mqtt`, so that catching it does not load paho.)"""


_TLS_WORDS = ("SSL", "certificate")
_TIMEOUT_WORDS = ("timeout", "timed out")


def classify_error(error: BaseException | str) -> ConnectionKind:
    """The kind of a failed connection, from the exception or, where a library keeps none
    (paho's "connection lost"), from its error message.

    An exception's type decides a timeout (``TimeoutError``, httpx's ``TimeoutException``) and
    TLS (``ssl.SSLError``, certificate errors included); its text still names TLS when a library
    wrapped the ``SSLError`` (httpx's ``ConnectError``). A message names TLS, then a timeout.
    Anything else is ``connect``.
    """
    if isinstance(error, str):
        if any(word in error for word in _TLS_WORDS):
            return "tls"
        if any(word in error for word in _TIMEOUT_WORDS):
            return "timeout"
        return "connect"
    if isinstance(error, TimeoutError | httpx.TimeoutException):
        return "timeout"
    if isinstance(error, ssl.SSLError) or any(word in str(error) for word in _TLS_WORDS):
        return "tls"
    return "connect"


@dataclass
class UplinkStats:
    """What an uplink (HTTP or MQTT) reports to health, metrics and ``gxpgate status``.

    Built with the uplink's logger and its ``uplink.recovered …`` line: a failing episode is
    logged once when it starts (``uplink.failing kind=… error=…``) and once when a batch is
    delivered again.
    """

    log: InitVar[logging.Logger]
    recovered: InitVar[str]
    """The recovered line, formatted with the ``seq`` delivered through."""
    batches: int = 0
    delivered_through: int = 0
    errors: int = 0
    errors_by_kind: dict[ErrorKind, int] = field(default_factory=dict)
    """Failed attempts by kind."""
    last_success: float | None = None
    _episode: Episode = field(init=False, repr=False)

    def __post_init__(self, log: logging.Logger, recovered: str) -> None:
        self._episode = Episode(log, "uplink.failing kind=%s error=%s", recovered)

    @property
    def last_error(self) -> str | None:
        """The error of the last attempt while failing; None once a batch is delivered."""
        return self._episode.error

    def failed(self, kind: ErrorKind, reason: str) -> None:
        """Count a failed attempt; the first of an episode is logged."""
        self.errors += 1
        self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1
        self._episode.fail(reason, kind)

    def delivered(self, through: int) -> None:
        """Count a delivered batch; one that ends an episode of failures is logged."""
        self._episode.recover(through)
        self.batches += 1
        self.delivered_through = through
        self.last_success = time.time()


@dataclass(frozen=True, slots=True)
class Batch:
    """Consecutive records ``first..last`` as one gzipped body (CONTRACT §3 and §4 share it)."""

    first: int
    last: int
    count: int
    payload: bytes


_PIECE: Final = 256
"""Records joined per call into the compressor."""


def _gzipped(head: bytes, records: list[bytes]) -> bytes:
    """gzip (level 1) of ``{<head>,"records":[<records, comma-separated>]}``, compressed a few
    hundred records at a time: the whole body of a 5,000-record batch (2.7 MB) and its joined
    records (as much again) are never in memory, which kept the agent's peak RSS above 80 MB
    while it drained a backlog."""
    gz = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 16 + 15: a gzip stream
    out = [gz.compress(head + b',"records":[')]
    for start in range(0, len(records), _PIECE):
        piece = b",".join(records[start : start + _PIECE])
        out.append(gz.compress(piece if start == 0 else b"," + piece))
    out.append(gz.compress(b"]}"))
    out.append(gz.flush())
    return b"".join(out)


def read_batch(
    outbox: Outbox, after_seq: int, limit: int, max_bytes: int | None = None
) -> Batch | None:
    """Read up to ``limit`` records after ``after_seq`` and build the gzipped body; ``None``
    when nothing is pending.

    With ``max_bytes`` the batch is cut to fewer records until its payload fits (a broker caps
    its packet size); a single record that does not fit comes back as it is, and the caller
    must notice. Blocking: run it in a thread. Joining and gzipping thousands of records takes
    tens of ms (zlib releases the GIL). Records go in byte for byte as sealed: the buffer
    rebuilds each from its packed row exactly (checked when it was stored), and nothing here
    parses or re-serialises them.
    """
    rows = outbox.pending(after_seq, limit)
    if not rows:
        return None
    head = b"".join((b'{"gw":', orjson.dumps(outbox.gw), b',"chain":', orjson.dumps(outbox.chain)))
    count = len(rows)
    while True:
        payload = _gzipped(head, [body for _seq, body in rows[:count]])
        if max_bytes is None or len(payload) <= max_bytes or count == 1:
            return Batch(rows[0][0], rows[count - 1][0], count, payload)
        # Compressed size is close to proportional to the record count; aim 10 % under.
        count = max(1, min(count - 1, int(count * max_bytes * 0.9 / len(payload))))
