"""The recorder (agent/recording/recorder.py): group commit, backpressure, resume state in the same
transaction, and the disk-full path, against a real outbox.

A full disk is made in process: the outbox's own SQLite connection is told it may not grow
the file (``PRAGMA max_page_count``), so SQLite itself fails the commit with SQLITE_FULL,
"database or disk is full", exactly as on a full filesystem, and the outbox rolls back and
reports it as it would there. Switching it off is a disk with room again. (tests/test_disk_full.py
runs the whole agent on a real full tmpfs; it needs root.)
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gxpgate.agent.evidence import verify_lines
from gxpgate.agent.recording.recorder import CommitListener, FactFilter, Intake, Recorder
from gxpgate.agent.recording.sealing import Committed, Fact, Sealer
from gxpgate.buffer import Outbox, Row

from .running import until
from .sealed import T0, reading

GW = "gw-test"


class CountingSealer(Sealer):
    """The real sealer, counting its calls: one per commit attempt."""

    attempts = 0

    def seal(self, facts: Sequence[Fact], last_seq: int, last_hash: str | None) -> list[Row]:
        self.attempts += 1
        return super().seal(facts, last_seq, last_hash)


class FullDisk:
    """Makes ``outbox``'s writer connection refuse to grow the file while switched on."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    def _limit(self, pages: int) -> None:
        with self._outbox._write_lock:  # not between the statements of a commit in flight
            self._outbox._db.execute(f"PRAGMA max_page_count = {pages}")

    def on(self) -> None:
        self._limit(1)  # SQLite keeps it at the current size: no new page can be had

    def off(self) -> None:
        self._limit(1_073_741_823)


class Commits:
    """A commit listener: the records of each commit."""

    def __init__(self) -> None:
        self.groups: list[list[Committed]] = []

    def __call__(self, committed: Sequence[Committed]) -> None:
        self.groups.append(list(committed))


class Site:
    def __init__(
        self,
        path: Path,
        key: Ed25519PrivateKey,
        *,
        listeners: Sequence[CommitListener] = (),
        filters: Sequence[FactFilter] = (),
        queue_size: int = 50_000,
        **options: Any,
    ) -> None:
        self.key = key
        self.outbox = Outbox(path, GW)
        self.sealer = CountingSealer(key, GW, self.outbox.chain)
        self.commits = Commits()
        intake = Intake(filters=filters, queue_size=queue_size)
        self.recorder = Recorder(
            self.outbox, self.sealer, intake, listeners=[self.commits, *listeners], **options
        )
        self.disk = FullDisk(self.outbox)

    def records(self) -> list[dict[str, Any]]:
        return [orjson.loads(body) for body in self.outbox.export()]

    def chain_verifies(self) -> bool:
        verdict = verify_lines(self.outbox.export(), [self.key.public_key()])
        return verdict.ok and verdict.records == self.outbox.last_seq


@pytest.fixture
def site(tmp_path: Path, signing_key: tuple[Path, Ed25519PrivateKey]) -> Iterator[Site]:
    site = Site(tmp_path / "buffer.db", signing_key[1], commit_interval_secs=0.05)
    try:
        yield site
    finally:
        site.outbox.close()


def big(i: int) -> Fact:
    """A reading too big for the free room of any page: its commit must grow the file (random
    text, so that the buffer's deflate of ``data`` cannot make it small)."""
    fact = reading(i)
    fact.data = {"note": base64.b64encode(random.Random(i).randbytes(6000)).decode()}
    return fact


def test_a_burst_is_committed_as_one_group_in_arrival_order(site: Site) -> None:
    async def main() -> None:
        task = asyncio.create_task(site.recorder.run())
        for i in range(25):
            await site.recorder.put(reading(i))  # no wait between: one burst
        site.recorder.close()
        await task

    asyncio.run(main())
    assert [len(group) for group in site.commits.groups] == [25]
    assert site.sealer.attempts == 1, "one transaction"
    records = site.records()
    assert [r["seq"] for r in records] == list(range(1, 26))
    assert [r["value"] for r in records] == [reading(i).value for i in range(25)]
    assert site.recorder.sealed == 25
    assert site.chain_verifies()


def test_a_group_is_cut_at_max_batch(
    tmp_path: Path, signing_key: tuple[Path, Ed25519PrivateKey]
) -> None:
    seen: list[float] = []
    site = Site(
        tmp_path / "buffer.db", signing_key[1], commit_interval_secs=0.05, max_batch=4,
        listeners=[lambda _c: seen.append(site.recorder.evidence_until())],
    )  # fmt: skip

    async def main() -> float:
        before = time.time()  # the recorder last caught up before this (when it was made)
        for i in range(10):
            await site.recorder.put(reading(i))
        site.recorder.close()
        await site.recorder.run()
        return before

    try:
        before = asyncio.run(main())
        assert [len(group) for group in site.commits.groups] == [4, 4, 2]
        assert [r.seq for group in site.commits.groups for r in group] == list(range(1, 11))
        # A part of what waits is not all of it: evidence holds until the queue is drained.
        assert all(moment <= before for moment in seen)
        assert site.recorder.evidence_until() > before
    finally:
        site.outbox.close()


def test_a_lone_fact_is_committed_once_the_producers_go_quiet_not_after_the_interval(
    tmp_path: Path, signing_key: tuple[Path, Ed25519PrivateKey]
) -> None:
    site = Site(tmp_path / "buffer.db", signing_key[1], commit_interval_secs=30.0)

    async def main() -> None:
        task = asyncio.create_task(site.recorder.run())
        await site.recorder.put(reading(0))
        await until(lambda: site.recorder.sealed == 1, 5, "committed long before 30 s")
        await site.recorder.put(reading(1))
        await until(lambda: site.recorder.sealed == 2, 5, "and the next one too")
        site.recorder.close()
        await task

    try:
        asyncio.run(main())
        assert [len(group) for group in site.commits.groups] == [1, 1]
    finally:
        site.outbox.close()


def test_a_full_queue_makes_producers_wait_and_loses_nothing(
    tmp_path: Path, signing_key: tuple[Path, Ed25519PrivateKey]
) -> None:
    site = Site(tmp_path / "buffer.db", signing_key[1], commit_interval_secs=0.01, queue_size=3)

    async def main() -> None:
        for i in range(3):
            await site.recorder.put(reading(i))
        producer = asyncio.create_task(site.recorder.put(reading(3)))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not producer.done(), "a full queue holds the producer back"
        assert site.recorder.queued == 3
        task = asyncio.create_task(site.recorder.run())
        await asyncio.wait_for(producer, 10)
        site.recorder.close()
        await task

    try:
        asyncio.run(main())
        assert [r["value"] for r in site.records()] == [reading(i).value for i in range(4)]
    finally:
        site.outbox.close()


def test_put_nowait_on_a_full_queue_says_the_fact_is_lost_and_never_blocks(
    tmp_path: Path, signing_key: tuple[Path, Ed25519PrivateKey], caplog: pytest.LogCaptureFixture
) -> None:
    site = Site(tmp_path / "buffer.db", signing_key[1], queue_size=2)

    async def main() -> None:
        site.recorder.put_nowait(reading(0))
        site.recorder.put_nowait(reading(1))
        site.recorder.put_nowait(Fact("audit", T0, {"event": "agent_stopped"}))
        assert site.recorder.queued == 2

    try:
        asyncio.run(main())
        lost = [r for r in caplog.records if r.levelno == logging.CRITICAL]
        assert len(lost) == 1
        assert "buffer.unsaved records=1" in lost[0].getMessage()
        assert "agent_stopped" in lost[0].getMessage()
    finally:
        site.outbox.close()


def test_resume_state_is_committed_with_its_fact_and_checkpoints_are_not_sealed(
    site: Site,
) -> None:
    async def main() -> None:
        first = reading(0)
        first.state = {"source:logger-1:index": "41"}
        second = reading(1)
        second.state = {"source:logger-1:index": "42"}
        await site.recorder.put(first)
        await site.recorder.put(second)
        await site.recorder.put_state({"rules:through": "2"})
        site.recorder.close()
        await site.recorder.run()

    asyncio.run(main())
    assert site.outbox.last_seq == 2, "a checkpoint is committed, not sealed"
    assert site.outbox.state("source:logger-1:index") == "42", "the latest value wins"
    assert site.outbox.state("rules:through") == "2"
    assert [len(group) for group in site.commits.groups] == [2], "listeners see no checkpoint"


def test_a_filter_can_amend_or_leave_out_a_fact(
    tmp_path: Path, signing_key: tuple[Path, Ed25519PrivateKey]
) -> None:
    def only_good(fact: Fact) -> Fact | None:
        if fact.value is not None and fact.value > 6:
            return None
        fact.data = {**fact.data, "flag": "seen"}
        return fact

    site = Site(
        tmp_path / "buffer.db", signing_key[1], commit_interval_secs=0.05, filters=[only_good]
    )

    async def main() -> None:
        for value in (5.0, 7.0, 5.5):
            await site.recorder.put(reading(0, value))
        site.recorder.close()
        await site.recorder.run()

    asyncio.run(main())
    records = site.records()
    site.outbox.close()
    assert [r["value"] for r in records] == [5.0, 5.5]
    assert {r["data"]["flag"] for r in records} == {"seen"}


def test_a_full_disk_keeps_the_facts_says_so_once_and_commits_them_all_later(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = site.recorder

    async def main() -> None:
        task = asyncio.create_task(recorder.run())
        for i in range(3):
            await recorder.put(reading(i))
        await until(lambda: recorder.sealed == 3, 10, "the first commit")
        full_at = time.time()
        site.disk.on()
        kept = big(3)
        kept.state = {"source:logger-1:index": "3"}
        await recorder.put(kept)
        await until(lambda: recorder.write_failing, 10, "a failed commit")
        attempts = site.sealer.attempts
        for i in range(4, 10):
            await recorder.put(big(i))  # still accepted, held in memory
        await until(lambda: site.sealer.attempts >= attempts + 2, 10, "two more failed tries")
        assert recorder.sealed == 3, "nothing committed while the disk is full"
        assert site.outbox.last_seq == 3
        assert site.outbox.state("source:logger-1:index") is None, "no resume point ahead"
        assert recorder.queued == 6, "the facts put meanwhile wait in memory"
        assert recorder.evidence_until() <= full_at, "evidence stops where commits stopped"
        site.disk.off()
        await until(lambda: not recorder.write_failing, 10, "the disk takes writes again")
        await until(lambda: recorder.queued == 0 and recorder.sealed == 11, 10, "all committed")
        recorder.close()
        await task

    caplog.set_level(logging.WARNING, logger="gxpgate.agent.recording.recorder")
    asyncio.run(main())
    records = site.records()
    assert [r["seq"] for r in records] == list(range(1, 12))
    readings = [r["value"] for r in records if r["kind"] == "reading"]
    assert readings == [reading(i).value for i in range(10)], "every fact, in order"
    audits = [r for r in records if r["kind"] == "audit"]
    assert [a["data"]["event"] for a in audits] == ["buffer_write_failed"], "once per episode"
    assert "database or disk is full" in audits[0]["data"]["error"]
    assert audits[0]["seq"] == 5, "sealed right after the group the disk refused"
    assert site.outbox.state("source:logger-1:index") == "3"
    assert site.chain_verifies(), "one unbroken, verifiable chain"
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("buffer.write_failed") for m in messages) == 1
    assert sum(m.startswith("buffer.write_recovered") for m in messages) == 1


def test_each_full_disk_episode_is_on_record_once(site: Site) -> None:
    recorder = site.recorder

    async def episode(first: int) -> None:
        site.disk.on()
        await recorder.put(big(first))
        await until(lambda: recorder.write_failing, 10, "a failed commit")
        attempts = site.sealer.attempts
        await until(lambda: site.sealer.attempts > attempts, 10, "a failed retry")
        site.disk.off()
        await until(lambda: not recorder.write_failing, 10, "recovered")

    async def main() -> None:
        task = asyncio.create_task(recorder.run())
        await episode(0)
        await recorder.put(reading(1))
        await episode(2)
        await until(lambda: recorder.queued == 0, 10, "all committed")
        recorder.close()
        await task

    asyncio.run(main())
    records = site.records()
    events = [r["data"]["event"] for r in records if r["kind"] == "audit"]
    assert events == ["buffer_write_failed", "buffer_write_failed"]
    assert [r["seq"] for r in records] == list(range(1, 6))
    assert site.chain_verifies()


def test_a_stop_deadline_on_a_full_disk_gives_up_and_counts_what_is_lost(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = site.recorder

    async def main() -> None:
        await recorder.put(reading(0))
        task = asyncio.create_task(recorder.run())
        await until(lambda: recorder.sealed == 1, 10, "the first commit")
        site.disk.on()
        for i in range(1, 5):
            await recorder.put(big(i))
        await until(lambda: recorder.write_failing, 10, "a failed commit")
        recorder.close(deadline_secs=0.2)
        await asyncio.wait_for(task, 5)  # the stop does not wait for the disk

    asyncio.run(main())
    # The four readings and the buffer_write_failed record that could not be stored either.
    assert recorder.unsaved == 5
    assert site.outbox.last_seq == 1
    assert any("buffer.unsaved records=5" in r.getMessage() for r in caplog.records)


def test_evidence_until_stays_where_the_recorder_last_caught_up_while_facts_wait(
    site: Site,
) -> None:
    """Rules judge silence only up to here: a queued reading must hold it back."""
    recorder = site.recorder

    async def main() -> None:
        before = time.time()  # the recorder (made by the fixture) caught up before this
        await asyncio.sleep(0.05)
        await recorder.put(reading(0))
        assert recorder.evidence_until() <= before, "a fact waits: evidence is not up to now"
        put_at = time.time()
        recorder.close()
        await recorder.run()
        assert recorder.evidence_until() >= put_at, "committed: up to now again"

    asyncio.run(main())
