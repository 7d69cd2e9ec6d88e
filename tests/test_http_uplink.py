"""The HTTP uplink (agent/uplink/http.py, :class:`Forwarder`) against a service in process.

The service is a function behind :class:`httpx.MockTransport`: it unpacks each batch, keeps
the request and answers as its script says. The forwarder's wait after a failure is injected,
so a ``Retry-After: 120`` is asserted as the 120 s it asks for, without waiting for it. The
outbox underneath is real; the audit records the forwarder hands over are collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gzip
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gxpgate.agent.recording.sealing import Fact, Sealer
from gxpgate.agent.uplink.http import Forwarder
from gxpgate.buffer import Outbox
from gxpgate.config.model import UplinkConfig

from .running import until
from .sealed import fill, reading

GW = "gw-test"
URL = "https://quality.example"


@dataclass
class Batch:
    seqs: list[int]
    key: str


Answer = Callable[[Batch], httpx.Response]


def acked(through: int, **headers: str) -> httpx.Response:
    return httpx.Response(200, json={"acked_through": through}, headers=headers)


def acks_all(batch: Batch) -> httpx.Response:
    return acked(batch.seqs[-1])


@dataclass
class Service:
    """The quality service: ``answers`` are used for the POSTs in turn, the last one for every
    POST after; the cursor endpoint answers ``cursor`` (what the service holds)."""

    answers: list[Answer] = field(default_factory=lambda: [acks_all])
    cursor: int = 0
    batches: list[Batch] = field(default_factory=list)
    cursor_asks: int = 0
    headers: list[httpx.Headers] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers)
        if request.method == "GET":
            assert request.url.path == "/v1/evidence/cursor"
            assert request.url.params["gw"] == GW
            self.cursor_asks += 1
            return acked(self.cursor)
        assert (request.method, request.url.path) == ("POST", "/v1/evidence")
        assert request.headers["Content-Encoding"] == "gzip"
        body = orjson.loads(gzip.decompress(request.content))
        assert body["gw"] == GW
        batch = Batch([r["seq"] for r in body["records"]], request.headers["Idempotency-Key"])
        self.batches.append(batch)
        answer = self.answers[min(len(self.batches), len(self.answers)) - 1](batch)
        with contextlib.suppress(ValueError, TypeError, KeyError):
            through = orjson.loads(answer.content)["acked_through"] if answer.is_success else 0
            if type(through) is int:  # what the service holds after a valid answer
                self.cursor = max(self.cursor, min(through, batch.seqs[-1]))
        return answer

    @property
    def sent(self) -> list[list[int]]:
        return [b.seqs for b in self.batches]


class Waits:
    """The forwarder's sleep after a failed attempt: recorded, not waited."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, secs: float) -> None:
        self.delays.append(secs)
        await asyncio.sleep(0)


@dataclass
class Site:
    outbox: Outbox
    key: Ed25519PrivateKey
    audits: list[dict[str, Any]] = field(default_factory=list)
    waits: Waits = field(default_factory=Waits)

    async def record(self, fact: Fact) -> None:
        assert fact.kind == "audit"
        self.audits.append(fact.data)

    def forwarder(self, service: Service, batch: int = 1000, **options: Any) -> Forwarder:
        config = UplinkConfig(
            url=URL, token="s3cret", batch_max_records=batch, backoff_initial_secs=1.0,
            backoff_max_secs=60.0, **options,
        )  # fmt: skip
        transport = httpx.MockTransport(service)
        return Forwarder(self.outbox, config, self.record, transport=transport, sleep=self.waits)

    def seal(self, count: int) -> None:
        sealer = Sealer(self.key, GW, self.outbox.chain)
        facts = [reading(i) for i in range(count)]
        self.outbox.append(sealer.seal(facts, self.outbox.last_seq, self.outbox.last_hash))

    def events(self) -> list[str]:
        return [a["event"] for a in self.audits]


@pytest.fixture
def site(tmp_path: Path, signing_key: tuple[Path, Ed25519PrivateKey]) -> Iterator[Site]:
    outbox = fill(tmp_path / "buffer.db", signing_key[1], 10)
    try:
        yield Site(outbox, signing_key[1])
    finally:
        outbox.close()


async def run_until(forwarder: Forwarder, done: Callable[[], bool], what: str) -> None:
    """Run the (entered) forwarder until ``done``, then stop it."""
    task = asyncio.create_task(forwarder.run())
    try:
        await until(lambda: done() or task.done(), 10, what)
        if task.done():
            task.result()  # it never ends on its own: raise what ended it
            raise AssertionError("the forwarder returned")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def deliver(forwarder: Forwarder, done: Callable[[], bool], what: str = "delivered") -> None:
    async def main() -> None:
        async with forwarder:
            await run_until(forwarder, done, what)

    asyncio.run(main())


def test_a_batch_acknowledged_moves_the_cursor_to_its_end(site: Site) -> None:
    service = Service()

    async def main() -> int:
        async with site.forwarder(service) as forwarder:
            sent = await forwarder.forward_once()
            assert await forwarder.forward_once() == 0, "nothing left"
            return sent

    assert asyncio.run(main()) == 10
    assert service.sent == [list(range(1, 11))]
    assert service.batches[0].key == f"{GW}:{site.outbox.chain}:1-10"
    assert site.outbox.acked_through == 10
    headers = service.headers[0]
    assert headers["Authorization"] == "Bearer s3cret"
    assert site.audits == []


def test_batches_follow_the_cursor_in_order_and_a_partial_ack_resends_the_rest(
    site: Site,
) -> None:
    service = Service(answers=[acks_all, lambda b: acked(b.seqs[1]), acks_all])

    async def main() -> None:
        async with site.forwarder(service, batch=4) as forwarder:
            while await forwarder.forward_once():
                assert site.outbox.acked_through == service.cursor

    asyncio.run(main())
    # 1-4 acked; 5-8 acked through 6 only; then 7 onwards again.
    assert service.sent[:3] == [[1, 2, 3, 4], [5, 6, 7, 8], [7, 8, 9, 10]]
    assert site.outbox.acked_through == 10
    assert [b.key.rsplit(":", 1)[1] for b in service.batches] == ["1-4", "5-8", "7-10"]


def test_new_records_go_once_the_forwarder_is_woken(site: Site) -> None:
    service = Service()

    async def main() -> None:
        async with site.forwarder(service) as forwarder:

            async def more() -> None:
                await until(lambda: site.outbox.acked_through == 10, 10, "the first ten")
                site.seal(3)
                forwarder.wake()
                await until(lambda: site.outbox.acked_through == 13, 2, "woken, not after 5 s")

            task = asyncio.create_task(more())
            await run_until(forwarder, task.done, "both batches")
            await task

    asyncio.run(main())
    assert service.sent == [list(range(1, 11)), [11, 12, 13]]
    assert service.cursor_asks == 1, "the cursor is asked at start-up, not per batch"


@pytest.mark.parametrize(("status", "kind"), [(503, "http_5xx"), (429, "throttled")])
def test_a_busy_service_is_retried_after_the_retry_after_it_asks(
    site: Site, status: int, kind: str
) -> None:
    busy = httpx.Response(status, headers={"Retry-After": "120"}, json={"error": "busy"})
    service = Service(answers=[lambda _b: busy, lambda _b: busy, acks_all])
    forwarder = site.forwarder(service)
    deliver(forwarder, lambda: site.outbox.acked_through == 10)
    assert site.waits.delays == [120.0, 120.0]
    assert service.sent == [list(range(1, 11))] * 3, "the same batch again"
    assert len({b.key for b in service.batches}) == 1, "under the same idempotency key"
    assert service.cursor_asks == 3, "the cursor is asked again after each error"
    assert forwarder.stats.errors_by_kind == {kind: 2}
    assert forwarder.stats.last_error is None, "the delivery ended the episode"
    assert site.audits == [], "a busy service is not a rejection"


def test_a_retry_after_date_is_waited_for(site: Site) -> None:
    def busy(_batch: Batch) -> httpx.Response:
        when = email.utils.formatdate(time.time() + 90, usegmt=True)
        return httpx.Response(503, headers={"Retry-After": when})

    service = Service(answers=[busy, acks_all])
    forwarder = site.forwarder(service)
    deliver(forwarder, lambda: site.outbox.acked_through == 10)
    [delay] = site.waits.delays
    assert 87 <= delay <= 90


def test_without_retry_after_the_backoff_doubles_and_a_delivery_resets_it(site: Site) -> None:
    def down(_batch: Batch) -> httpx.Response:
        return httpx.Response(502, text="bad gateway")

    service = Service(answers=[down, down, down, down, acks_all, down, acks_all])
    forwarder = site.forwarder(service, batch=5)
    deliver(forwarder, lambda: site.outbox.acked_through == 10)
    delays = site.waits.delays
    assert len(delays) == 5
    for delay, cap in zip(delays, [1, 2, 4, 8, 1], strict=True):
        assert cap / 2 <= delay <= cap
    assert forwarder.stats.errors_by_kind == {"http_5xx": 5}


@pytest.mark.parametrize("status", [400, 401, 403, 409, 422])
def test_a_rejected_batch_is_kept_and_sealed_once_per_episode(site: Site, status: int) -> None:
    def rejects(_batch: Batch) -> httpx.Response:
        return httpx.Response(status, json={"error": "signature invalid", "seq": 4})

    service = Service(answers=[rejects, rejects, rejects, acks_all])
    forwarder = site.forwarder(service)
    deliver(forwarder, lambda: site.outbox.acked_through == 10)
    assert service.sent == [list(range(1, 11))] * 4, "kept and offered again"
    assert site.audits == [
        {"event": "uplink_rejected", "status": status, "error": "signature invalid", "seq": 4}
    ]
    assert forwarder.stats.errors_by_kind == {"rejected": 3}


def test_a_new_rejection_after_a_delivery_is_a_new_episode(site: Site) -> None:
    def rejects(_batch: Batch) -> httpx.Response:
        return httpx.Response(422, json={"error": "bad record"})

    def conflict(_batch: Batch) -> httpx.Response:
        return httpx.Response(409, json={"error": "chain conflict"})

    answers: list[Answer] = [rejects, rejects, acks_all, rejects, conflict, conflict, acks_all]
    service = Service(answers=answers)
    forwarder = site.forwarder(service, batch=5)
    deliver(forwarder, lambda: site.outbox.acked_through == 10)
    assert [(a["status"], a["error"]) for a in site.audits] == [
        (422, "bad record"), (422, "bad record"), (409, "chain conflict"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "body",
    [
        b'{"acked_through": true}',
        b'{"acked_through": "10"}',
        b'{"acked_through": -1}',
        b'{"acked_through": 9.5}',
        b"{}",
        b"[10]",
        b'{"acked_through": ',
        b"<html>ok</html>",
    ],
)
def test_a_malformed_answer_is_rejected_and_never_moves_the_cursor(site: Site, body: bytes) -> None:
    def malformed(_batch: Batch) -> httpx.Response:
        return httpx.Response(200, content=body)

    service = Service(answers=[malformed, malformed, acks_all])
    forwarder = site.forwarder(service)

    cursors: list[int] = []

    def delivered() -> bool:
        cursors.append(site.outbox.acked_through)
        return site.outbox.acked_through == 10

    deliver(forwarder, delivered, "delivered after the malformed answers")
    assert set(cursors) <= {0, 10}, "nothing in between was ever taken from them"
    assert len(service.batches) == 3
    assert len(site.audits) == 1, "one audit for the episode"
    assert site.audits[0]["event"] == "uplink_rejected"
    assert site.audits[0]["reason"] == "malformed"
    assert site.audits[0]["status"] == 200
    assert forwarder.stats.errors_by_kind == {"malformed": 2}


def test_an_ack_beyond_the_batch_moves_the_cursor_only_to_what_was_sent(site: Site) -> None:
    service = Service(answers=[lambda _b: acked(1_000_000), acks_all])

    async def main() -> None:
        async with site.forwarder(service, batch=4) as forwarder:
            await forwarder.forward_once()
            assert site.outbox.acked_through == 4
            await forwarder.forward_once()
            await forwarder.forward_once()

    asyncio.run(main())
    assert site.outbox.acked_through == 10
    assert site.audits == [
        {
            "event": "uplink_ack_beyond_sent", "endpoint": "evidence",
            "claimed_through": 1_000_000, "sent_through": 4,
        }
    ]  # fmt: skip


def test_the_cursor_follows_the_service_backwards(site: Site) -> None:
    service = Service()
    deliver(site.forwarder(service), lambda: site.outbox.acked_through == 10)
    service.cursor = 6  # restored from a backup: it holds less than it acknowledged
    deliver(site.forwarder(service), lambda: len(service.batches) == 2, "resent")
    assert service.sent == [list(range(1, 11)), [7, 8, 9, 10]]
    assert site.outbox.acked_through == 10
    assert site.audits == []


def test_a_cursor_claim_beyond_the_chain_is_not_believed(site: Site) -> None:
    """At start-up the service says it holds seq 10^9 of a chain of ten, none of them sent
    yet: the cursor stays where it was, and all ten go."""
    service = Service(cursor=10**9, answers=[lambda b: acked(b.seqs[-1])])
    deliver(site.forwarder(service), lambda: len(service.batches) == 1, "the batch sent")
    assert service.sent == [list(range(1, 11))]
    assert site.outbox.acked_through == 10
    assert site.audits == [
        {
            "event": "uplink_ack_beyond_sent", "endpoint": "cursor",
            "claimed_through": 10**9, "sent_through": 10,
        }
    ]  # fmt: skip


def test_whatever_the_service_answers_the_cursor_never_passes_what_was_sent(
    site: Site,
) -> None:
    """Random answers, seeded; the cursor is checked before every request and at the end."""
    rng = random.Random(16)
    highest_sent = 0
    site.seal(20)
    last_seq = site.outbox.last_seq

    def anything(batch: Batch) -> httpx.Response:
        nonlocal highest_sent
        highest_sent = max(highest_sent, batch.seqs[-1])
        roll = rng.random()
        if roll < 0.2:
            return httpx.Response(503)
        if roll < 0.3:
            return httpx.Response(200, content=b'{"acked_through": "x"}')
        return acked(rng.randrange(0, 40))

    class Watched(Service):
        def __call__(self, request: httpx.Request) -> httpx.Response:
            assert site.outbox.acked_through <= highest_sent
            return super().__call__(request)

    service = Watched(answers=[anything])
    forwarder = site.forwarder(service, batch=7)
    done = lambda: len(service.batches) >= 40 or site.outbox.acked_through == last_seq  # noqa: E731
    deliver(forwarder, done, "forty batches")
    assert site.outbox.acked_through <= highest_sent
    assert highest_sent > 7, "the batches moved on"
    assert forwarder.stats.errors_by_kind.get("malformed", 0) > 0
