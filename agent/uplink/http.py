"""The HTTP uplink (CONTRACT §3): batches of consecutive records, from the cursor onwards.

The forwarder only reads the buffer and moves its cursor; sealing never waits for it. The
service's ``acked_through`` is the truth: the cursor follows it, also backwards, so retries,
restarts and a service restored from backup converge. It asks the cursor endpoint at start-up
and after every error.

Responses: ``200`` moves the cursor; ``413`` halves the batch; ``400/401/403/409/422`` keep the
records, are sealed once per episode as an ``audit`` record, and are retried with backoff;
``429``, ``5xx``, timeouts and connection errors are retried with backoff, at least as long as
``Retry-After`` asks. Library errors (httpx) are translated in :meth:`Forwarder._request` only,
their kind named by :func:`gxpgate.agent.uplink.base.classify_error`.

The batch body (:func:`~gxpgate.agent.uplink.base.read_batch`) and the statistics
(:class:`~gxpgate.agent.uplink.base.UplinkStats`) are shared with the MQTT uplink
(:mod:`gxpgate.agent.uplink.mqtt`).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from gxpgate.agent._retry import Backoff
from gxpgate.agent.recording.audit import (
    UPLINK_ACK_BEYOND_SENT,
    UPLINK_RECORDS_PRUNED,
    UPLINK_REJECTED,
)
from gxpgate.agent.recording.sealing import Fact
from gxpgate.agent.uplink.base import (
    CONNECTION_KINDS,
    Batch,
    ErrorKind,
    UplinkStats,
    classify_error,
    read_batch,
)
from gxpgate.agent.uplink.redact import Redactor
from gxpgate.buffer import BufferWriteError, Outbox
from gxpgate.config.model import UplinkConfig
from gxpgate.drivers.base import utc_now

__all__ = ["CursorAnswer", "Forwarder", "Reply", "retry_delay"]

log = logging.getLogger(__name__)

_REJECTED = frozenset({400, 401, 403, 409, 413, 422})

MAX_ANSWER_BYTES = 64 * 1024
"""The service answers a few dozen bytes; anything much larger is not an answer to read whole."""

CONNECT_RETRY_MAX_SECS = 10.0
"""Cap on the wait after a connection failure (refused, timeout, TLS), whatever
``backoff_max_secs`` says: the next attempt is a cheap cursor probe, and a service that returns
should be refilled within seconds, not minutes. Rejections and 5xx keep the configured cap."""


class CursorAnswer(BaseModel):
    """What a ``200`` from either endpoint must hold (CONTRACT §3); other fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    # Strict: JSON true, 1.5 or "12" are not a sequence number (bool is an int in Python).
    acked_through: StrictInt = Field(ge=0, le=2**63 - 1)


@dataclass(frozen=True, slots=True)
class Reply:
    """A service's answer, read whole but never more than :data:`MAX_ANSWER_BYTES`."""

    status: int
    headers: httpx.Headers
    body: bytes
    reason: str

    def json(self) -> object:
        return orjson.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class _Retry(Exception):
    def __init__(
        self,
        reason: str,
        status: int | None = None,
        retry_after: float = 0.0,
        *,
        kind: ErrorKind | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.kind = kind or _kind_of(status)


def _kind_of(status: int | None) -> ErrorKind:
    if status is None:
        return "malformed"
    if status in _REJECTED:
        return "rejected"
    if status == 429:
        return "throttled"
    return "http_5xx" if status >= 500 else "http_other"


class Forwarder:
    """Moves the cursor only on a valid answer, never past the last record a batch carried.

    Every request (connect, send, answer) has one total deadline, ``timeout_secs``: a service
    that drips its answer a byte at a time is a timeout, not a stall. Service text (error
    bodies, exception messages) passes :class:`~gxpgate.agent.uplink.redact.Redactor` before it is
    logged, sealed or shown, so a token or URL password echoed back goes nowhere.
    """

    def __init__(
        self,
        outbox: Outbox,
        config: UplinkConfig,
        record: Callable[[Fact], Awaitable[None]],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        """``transport`` and ``sleep`` (the wait after a failed attempt) are for tests."""
        self.outbox = outbox
        self.config = config
        self.record = record
        self.stats = UplinkStats(log, "uplink.recovered acked_through=%d")
        self._transport = transport
        self._sleep = sleep
        self._client: httpx.AsyncClient | None = None
        self._wake = asyncio.Event()
        self._limit = config.batch_max_records
        self._backoff = Backoff(config.backoff_initial_secs, config.backoff_max_secs)
        self._rejection: str | None = None
        self._claiming = False
        self._redact = Redactor.for_uplink(config)
        self._cursor_known = False
        self._prepared: Batch | None = None
        self._gap_reported: tuple[int, int] | None = None

    async def __aenter__(self) -> Forwarder:
        headers = {"User-Agent": "gxpgate"}
        token = _read_token(self.config)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.AsyncClient(
            base_url=self.config.url.rstrip("/"),
            headers=headers,
            timeout=self.config.timeout_secs,
            verify=_tls_context(self.config),
            transport=self._transport,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def wake(self) -> None:
        """New records are committed (called by the recorder)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                if not self._cursor_known:
                    await self._resync()
                sent = await self.forward_once()
            except _Retry as exc:
                await self._failed(exc)
                continue
            if not sent:
                self._wake.clear()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that races with the event being set.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5.0):
                        await self._wake.wait()

    async def flush(self, deadline_secs: float) -> bool:
        """Forward until nothing is pending or the deadline passes; True when all delivered."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_secs
        try:
            async with asyncio.timeout_at(end):
                if not self._cursor_known:
                    await self._resync()
                while await self.forward_once():
                    pass
        except (TimeoutError, _Retry) as exc:
            log.warning("uplink.flush_incomplete reason=%s", getattr(exc, "reason", "deadline"))
            return False
        return True

    async def forward_once(self) -> int:
        """Send one batch from the cursor; return how many records it carried (0: none pending).

        While the batch is in flight the next one is read and gzipped in a thread, so the
        gateway's share of the work overlaps the service's instead of adding to it. The prepared
        batch is used only if the service's answer makes it the next one.
        """
        cursor = self.outbox.acked_through
        batch = self._prepared
        self._prepared = None
        if batch is None or batch.first != cursor + 1 or batch.count > self._limit:
            batch = await asyncio.to_thread(read_batch, self.outbox, cursor, self._limit)
        if batch is None:
            return 0
        if batch.first != cursor + 1:
            await self._missing(cursor + 1, batch.first - 1)
            raise _Retry(
                f"records {cursor + 1}..{batch.first - 1} are no longer in the buffer",
                kind="records_pruned",
            )
        key = f"{self.outbox.gw}:{self.outbox.chain}:{batch.first}-{batch.last}"
        upcoming = asyncio.create_task(
            asyncio.to_thread(read_batch, self.outbox, batch.last, self._limit)
        )
        try:
            answer = await self._post(batch.payload, key)
        finally:
            prepared = await upcoming  # a bounded read and gzip; never left running
        if answer.status == 413 and batch.count > 1:
            self._limit = max(1, batch.count // 2)
            log.warning("uplink.split batch=%d next=%d", batch.count, self._limit)
            await self._rejected(answer.status, self._error_text(answer), _seq_of(answer))
            return batch.count
        if answer.status != 200:
            await self._classify(answer)
        acked = await self._acked_through(answer)
        if acked > batch.last:
            # The service claims records it was never sent: counting them delivered would let
            # retention prune what it never received. Only what this answer covers counts.
            await self._claim_beyond(acked, batch.last, "evidence")
            acked = batch.last
        else:
            self._claiming = False
        await self._set_cursor(acked)
        self._succeeded(acked, batch.count)
        self._prepared = prepared
        return batch.count

    async def _resync(self) -> None:
        params = {"gw": self.outbox.gw, "chain": self.outbox.chain}
        answer = await self._request("GET", "/v1/evidence/cursor", params=params)
        if answer.status != 200:
            await self._classify(answer)
        acked = await self._acked_through(answer)
        local = self.outbox.acked_through
        if acked > self.outbox.last_seq:
            # More than was ever sealed here: not this chain's truth. Keep what the last valid
            # answer established; the next batch's answer moves the cursor on.
            await self._claim_beyond(acked, self.outbox.last_seq, "cursor")
            acked = local
        else:
            self._claiming = False
        if acked != local:
            log.warning("uplink.cursor local=%d service=%d", local, acked)
        await self._set_cursor(acked)
        self._cursor_known = True

    async def _set_cursor(self, acked: int) -> None:
        try:
            await asyncio.to_thread(self.outbox.set_acked_through, acked)
        except BufferWriteError as exc:
            # A full disk must not take the uplink down: the records stay pending, the service
            # ignores what it holds when they are offered again.
            raise _Retry(str(exc), kind="buffer") from exc

    async def _post(self, payload: bytes, idempotency_key: str) -> Reply:
        headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "Idempotency-Key": idempotency_key,
        }
        return await self._request("POST", "/v1/evidence", content=payload, headers=headers)

    async def _request(self, method: str, url: str, **options: Any) -> Reply:
        """One request under one total deadline; library errors become :class:`_Retry` here."""
        client = self._require_client()
        deadline = self.config.timeout_secs
        try:
            async with asyncio.timeout(deadline):
                response = await client.send(
                    client.build_request(method, url, **options), stream=True
                )
                try:
                    body = await _read_capped(response)
                finally:
                    await response.aclose()
        except TimeoutError as exc:
            raise _Retry(f"no complete answer within {deadline:g} s", kind="timeout") from exc
        except (httpx.HTTPError, OSError) as exc:
            # OSError: httpcore lets some TLS alerts through untranslated (ssl.SSLError), e.g.
            # TLS 1.3's "certificate required", which arrives after the handshake.
            raise _Retry(self._redact(_describe(exc)), kind=classify_error(exc)) from exc
        return Reply(response.status_code, response.headers, body, response.reason_phrase)

    async def _classify(self, answer: Reply) -> None:
        status = answer.status
        error = self._error_text(answer)
        if status in _REJECTED:
            await self._rejected(status, error, _seq_of(answer))
            raise _Retry(f"rejected with {status}: {error}", status)
        retry_after = _retry_after(answer.headers.get("Retry-After"))
        raise _Retry(f"HTTP {status}: {error}", status, retry_after)

    async def _acked_through(self, answer: Reply) -> int:
        """The answer's ``acked_through``; anything else is a rejected answer, sealed once."""
        try:
            return CursorAnswer.model_validate_json(answer.body).acked_through
        except ValidationError as exc:
            problem = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in problem["loc"]) or "body"
            error = self._redact(
                f"malformed answer ({where}: {problem['msg']}): {answer.text[:200]!r}"
            )
        await self._rejected(answer.status, error, None, kind="malformed")
        raise _Retry(error, kind="malformed")

    async def _rejected(
        self, status: int, error: str, seq: object, *, kind: ErrorKind = "rejected"
    ) -> None:
        """Seal one audit record per rejection episode (a status or kind different from the
        last; a delivered batch ends the episode)."""
        episode = f"{status}:{kind}"
        if self._rejection == episode:
            return
        self._rejection = episode
        log.error("uplink.rejected status=%d error=%s", status, error)
        data: dict[str, object] = {"event": UPLINK_REJECTED, "status": status, "error": error}
        if kind != "rejected":
            data["reason"] = kind
        if isinstance(seq, int) and not isinstance(seq, bool):
            data["seq"] = seq
        await self.record(Fact("audit", utc_now(), data))

    async def _claim_beyond(self, claimed: int, limit: int, endpoint: str) -> None:
        """Seal once per episode a claim that the service holds more than this gateway sent or
        sealed; an answer within bounds ends the episode."""
        if self._claiming:
            return
        self._claiming = True
        log.error("uplink.ack_beyond_sent claimed=%d sent_through=%d", claimed, limit)
        data = {
            "event": UPLINK_ACK_BEYOND_SENT, "endpoint": endpoint,
            "claimed_through": claimed, "sent_through": limit,
        }  # fmt: skip
        await self.record(Fact("audit", utc_now(), data))

    def _error_text(self, answer: Reply) -> str:
        with contextlib.suppress(ValueError, TypeError, KeyError):
            parsed = answer.json()
            if isinstance(parsed, dict) and "error" in parsed:
                return self._redact(str(parsed["error"])[:500])
        return self._redact(answer.text[:200] or answer.reason)

    async def _missing(self, first: int, last: int) -> None:
        """The service asks for records retention has already pruned (e.g. it was restored from
        an old backup). The gateway cannot repair that; it says so once, sealed, for an operator."""
        if self._gap_reported == (first, last):
            return
        self._gap_reported = (first, last)
        log.error("uplink.records_pruned first=%d last=%d", first, last)
        data = {"event": UPLINK_RECORDS_PRUNED, "first_seq": first, "last_seq": last}
        await self.record(Fact("audit", utc_now(), data))

    async def _failed(self, exc: _Retry) -> None:
        self.stats.failed(exc.kind, exc.reason)
        self._cursor_known = False
        await self._sleep(retry_delay(self._backoff, exc.kind, exc.retry_after))

    def _succeeded(self, acked: int, count: int) -> None:
        self.stats.delivered(acked)
        self._rejection = None
        self._backoff.reset()
        self._limit = min(self.config.batch_max_records, self._limit * 2)

    def _require_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("Forwarder used outside its context")
        return self._client


async def _read_capped(response: httpx.Response) -> bytes:
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > MAX_ANSWER_BYTES:
        raise _Retry(f"answer of {int(length)} bytes refused (at most {MAX_ANSWER_BYTES})")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise _Retry(f"answer longer than {MAX_ANSWER_BYTES} bytes refused")
        chunks.append(chunk)
    return b"".join(chunks)


def _seq_of(answer: Reply) -> object:
    with contextlib.suppress(ValueError, TypeError):
        parsed = answer.json()
        if isinstance(parsed, dict):
            return parsed.get("seq")
    return None


def retry_delay(backoff: Backoff, kind: ErrorKind, retry_after: float = 0.0) -> float:
    """How long to wait after a failed attempt of ``kind``: the backoff's next delay, at most
    :data:`CONNECT_RETRY_MAX_SECS` after a connection failure, at least ``Retry-After``."""
    delay = backoff.next_delay()
    if kind in CONNECTION_KINDS:
        delay = min(delay, CONNECT_RETRY_MAX_SECS)
    return max(delay, retry_after)


def _retry_after(header: str | None) -> float:
    if not header:
        return 0.0
    with contextlib.suppress(ValueError):
        return max(0.0, float(header))
    with contextlib.suppress(TypeError, ValueError):
        moment = email.utils.parsedate_to_datetime(header)
        return max(0.0, moment.timestamp() - time.time())
    return 0.0


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _read_token(config: UplinkConfig) -> str | None:
    if config.token is not None:
        return config.token.get_secret_value()
    if config.token_file is not None:
        return config.token_file.read_text(encoding="utf-8").strip() or None
    return None


def _tls_context(config: UplinkConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=config.ca_file)
    if config.client_cert_file is not None:
        context.load_cert_chain(config.client_cert_file, config.client_key_file)
    if not config.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
