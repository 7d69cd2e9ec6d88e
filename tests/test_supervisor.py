"""The per-device supervisor (agent/devices/supervisor.py, :class:`DevicePoller`): fixed poll slots,
overrun skipping, catch-up, reconnect backoff, offline and failing episodes.

A scripted :class:`~gxpgate.drivers.base.PolledSource` runs on an injected clock: each read "takes"
as long as its script says by moving that clock, and the poller's sleeps move it too, so a
ten-second poll interval runs in microseconds and every slot is asserted exactly. What the
poller seals goes through a real recorder into a real outbox and is read back from there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gxpgate.agent.devices.supervisor import DevicePoller
from gxpgate.agent.devices.zones import ZoneMap
from gxpgate.agent.recording.recorder import Recorder
from gxpgate.agent.recording.sealing import Sealer
from gxpgate.buffer import Outbox
from gxpgate.config import load_config
from gxpgate.drivers.base import DeviceUnreachable, DriverError, Quality, Sample, utc_now

GW = "gw-test"
DEVICE = "probe-1"
INTERVAL = 10.0
T0 = 1000.0


class FakeClock:
    """The monotonic clock the poller counts slots on; sleeping moves it, nothing waits."""

    def __init__(self) -> None:
        self.now = T0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, secs: float) -> None:
        self.sleeps.append(secs)
        self.now += max(0.0, secs)
        await asyncio.sleep(0)  # still a turn of the loop, as a real sleep is


class ScriptEnd(Exception):
    """The script ran out: ends :meth:`DevicePoller.run` (it catches driver errors only)."""


def sample(
    value: float | None = 5.0, quality: Quality = "good", error: str | None = None
) -> Sample:
    data = {"error": error} if error else {}
    return Sample("temperature", value, "Cel", quality, utc_now(), data=data)


@dataclass
class Step:
    """One read: how long it takes on the clock, and what it answers or raises."""

    takes: float = 0.5
    samples: list[Sample] = field(default_factory=lambda: [sample()])
    error: DriverError | None = None


def unreachable(message: str = "connection refused") -> Step:
    bad = sample(None, "bad", message)
    return Step(takes=0.2, samples=[], error=DeviceUnreachable(DEVICE, message, [bad]))


class ScriptedSource:
    """A :class:`~gxpgate.drivers.base.PolledSource` whose reads follow a script on the fake
    clock."""

    def __init__(self, clock: FakeClock, script: list[Step]) -> None:
        self.device_id = DEVICE
        self.poll_interval_secs = INTERVAL
        self.clock = clock
        self.script = list(script)
        self.reads: list[float] = []
        """When each read started (fake clock)."""
        self.open = False

    async def __aenter__(self) -> ScriptedSource:
        self.open = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.open = False

    async def read(self) -> list[Sample]:
        if not self.script:
            raise ScriptEnd
        step = self.script.pop(0)
        self.reads.append(self.clock.now)
        self.clock.now += step.takes
        if step.error is not None:
            raise step.error
        return step.samples

    def describe(self) -> list[str]:
        return ["scripted"]


class ScriptedLogger(ScriptedSource):
    """A source with a memory to catch up on: ``chunks`` old records, each taking ``chunk_secs``."""

    def __init__(
        self,
        clock: FakeClock,
        script: list[Step],
        chunks: list[list[Sample] | DriverError],
        chunk_secs: float,
    ) -> None:
        super().__init__(clock, script)
        self.chunks = list(chunks)
        self.chunk_secs = chunk_secs
        self.catch_ups: list[float] = []

    async def catch_up(self) -> list[Sample] | None:
        if not self.chunks:
            return None
        self.catch_ups.append(self.clock.now)
        self.clock.now += self.chunk_secs
        chunk = self.chunks.pop(0)
        if isinstance(chunk, DriverError):
            raise chunk
        return chunk


@dataclass
class Site:
    zones: ZoneMap
    outbox: Outbox
    recorder: Recorder
    clock: FakeClock = field(default_factory=FakeClock)

    def poller(self, source: ScriptedSource, reconnect_max_secs: float = 8.0) -> DevicePoller:
        return DevicePoller(
            source, self.zones, self.recorder, reconnect_max_secs,
            clock=self.clock, sleep=self.clock.sleep,
        )  # fmt: skip

    async def run(self, poller: DevicePoller) -> list[dict[str, Any]]:
        """Run the poller to the end of its script; commit and return what it sealed."""
        with pytest.raises(ScriptEnd):
            await poller.run()
        self.recorder.close()
        await self.recorder.run()
        return [orjson.loads(body) for body in self.outbox.export()]


@pytest.fixture
def site(
    tmp_path: Path, write_config: Callable[..., Path], signing_key: tuple[Path, Ed25519PrivateKey]
) -> Iterator[Site]:
    config = load_config(write_config()).config
    outbox = Outbox(tmp_path / "buffer.db", GW)
    sealer = Sealer(signing_key[1], GW, outbox.chain)
    try:
        yield Site(ZoneMap(config), outbox, Recorder(outbox, sealer, commit_interval_secs=0.01))
    finally:
        outbox.close()


def events(records: list[dict[str, Any]]) -> list[str]:
    return [r["data"]["event"] for r in records if r["kind"] == "audit"]


def test_polls_start_on_fixed_slots_whatever_each_read_takes(site: Site) -> None:
    source = ScriptedSource(site.clock, [Step(3.0), Step(0.5), Step(9.9), Step(1.0)])
    poller = site.poller(source)
    records = asyncio.run(site.run(poller))
    assert source.reads == pytest.approx([T0, T0 + 10, T0 + 20, T0 + 30])
    assert site.clock.sleeps == pytest.approx([7.0, 9.5, 0.1, 9.0])
    assert poller.overruns == 0
    assert poller.polls == 4
    assert not source.open, "the source is closed when the poller ends"
    readings = [r for r in records if r["kind"] == "reading"]
    assert len(readings) == 4
    assert {(r["device"], r["point"], r["zone"]) for r in readings} == {
        (DEVICE, "temperature", "cold-1")
    }


def test_an_overrun_skips_the_missed_slots_and_counts_them(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """A read at slot 10 that takes 2.5 intervals ends at 35: slots 20 and 30 are skipped,
    not run back to back late; the next read is on slot 40, and the slots after on time."""
    caplog.set_level(logging.WARNING, logger="gxpgate.agent.devices.supervisor")
    source = ScriptedSource(site.clock, [Step(1.0), Step(25.0), Step(1.0), Step(1.0)])
    poller = site.poller(source)
    records = asyncio.run(site.run(poller))
    assert source.reads == pytest.approx([T0, T0 + 10, T0 + 40, T0 + 50])
    assert poller.overruns == 2
    overruns = [r.getMessage() for r in caplog.records if "device.overrun" in r.getMessage()]
    assert overruns == [f"device.overrun device={DEVICE} skipped_polls=2"]
    assert len([r for r in records if r["kind"] == "reading"]) == 4, "the slow read is kept"


@pytest.mark.parametrize(
    ("takes", "skipped", "next_read"),
    [(9.0, 0, 20.0), (10.0, 0, 20.0), (10.5, 1, 30.0), (19.9, 1, 30.0), (20.5, 2, 40.0)],
)
def test_only_a_read_past_its_slot_skips_and_the_next_read_is_on_a_slot(
    site: Site, takes: float, skipped: int, next_read: float
) -> None:
    source = ScriptedSource(site.clock, [Step(1.0), Step(takes), Step(1.0)])
    poller = site.poller(source)
    asyncio.run(site.run(poller))
    assert poller.overruns == skipped
    assert source.reads == pytest.approx([T0, T0 + 10, T0 + next_read])


def test_catch_up_uses_the_rest_of_each_slot_and_live_polls_keep_their_rate(site: Site) -> None:
    """Five old chunks of 3 s each: three fit after the first read, two after the second; the
    reads stay on their slots and the old data never counts as live."""
    chunks: list[list[Sample] | DriverError] = [
        [sample(4.0 + i), sample(4.5 + i)] for i in range(5)
    ]
    source = ScriptedLogger(
        site.clock, [Step(1.0, []), Step(1.0, []), Step(1.0, []), Step(1.0, [])], chunks, 3.0
    )
    poller = site.poller(source)
    records = asyncio.run(site.run(poller))
    assert source.reads == pytest.approx([T0, T0 + 10, T0 + 20, T0 + 30])
    assert source.catch_ups == pytest.approx([T0 + 1, T0 + 4, T0 + 7, T0 + 11, T0 + 14])
    assert poller.caught_up == 10
    assert poller.overruns == 0
    assert poller.last_data is None, "caught-up records say nothing about now"
    values = [r["value"] for r in records if r["kind"] == "reading"]
    assert values == [4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5, 8.0, 8.5]


def test_a_failed_catch_up_goes_offline_once_and_retries_after_the_backoff(site: Site) -> None:
    lost = DeviceUnreachable(DEVICE, "timeout", [sample(None, "bad", "timeout")])
    chunks: list[list[Sample] | DriverError] = [[sample(4.0)], lost, [sample(4.1)]]
    source = ScriptedLogger(site.clock, [Step(1.0), Step(1.0), Step(1.0)], chunks, 2.0)
    poller = site.poller(source)
    records = asyncio.run(site.run(poller))
    # Read at T0 (1 s), chunk at 1 (2 s), the failing chunk at 3 (2 s), then the backoff.
    backoff = site.clock.sleeps[0]
    assert 0.5 <= backoff <= 1.0
    assert source.reads[1] == pytest.approx(T0 + 5 + backoff), "read again after the backoff"
    assert events(records) == ["device_offline", "device_online"]
    offline = next(r for r in records if r["kind"] == "audit")
    assert offline["data"]["error"] == "timeout"
    bad = [r for r in records if r["kind"] == "reading" and r["quality"] == "bad"]
    assert [r["data"]["error"] for r in bad] == ["timeout"], "the failed chunk is on record"


def test_reconnect_backoff_doubles_to_its_cap_and_resets_once_online(site: Site) -> None:
    """reconnect_max_secs 8 with a 10 s interval: delays from 1 s doubling to 10 s, each drawn
    from [d/2, d]; a successful read resets them and restarts the slots from itself."""
    script = [unreachable() for _ in range(5)] + [Step(1.0), unreachable(), Step(1.0), Step(1.0)]
    source = ScriptedSource(site.clock, script)
    poller = site.poller(source, reconnect_max_secs=8.0)
    records = asyncio.run(site.run(poller))
    sleeps = site.clock.sleeps
    for delay, cap in zip(sleeps[:5], [1, 2, 4, 8, 10], strict=True):
        assert cap / 2 <= delay <= cap
    assert 0.5 <= sleeps[6] <= 1.0, "the next episode starts from the first delay again"
    for i in range(5):  # every retry right after its backoff, not on the next poll slot
        assert source.reads[i + 1] == pytest.approx(source.reads[i] + 0.2 + sleeps[i])
    online = source.reads[5]
    assert sleeps[5] == pytest.approx(INTERVAL - 1.0), "slots count from the first good read"
    assert source.reads[6] == pytest.approx(online + INTERVAL)
    assert source.reads[8] == pytest.approx(source.reads[7] + INTERVAL)
    assert poller.polls == 9
    assert events(records) == [
        "device_offline", "device_online", "device_offline", "device_online"
    ]  # fmt: skip
    assert poller.up is True
    assert poller.last_error is None


def test_offline_is_sealed_once_per_episode_and_before_the_bad_readings(site: Site) -> None:
    script = [Step(1.0), unreachable("refused"), unreachable("refused"), unreachable("timeout")]
    source = ScriptedSource(site.clock, script)
    poller = site.poller(source)
    records = asyncio.run(site.run(poller))
    assert events(records) == ["device_offline"]
    offline = next(r for r in records if r["kind"] == "audit")
    assert offline["data"]["error"] == "refused", "the episode's first error"
    assert offline["device"] == DEVICE
    assert offline["zone"] == "cold-1"
    bad = [r for r in records if r["kind"] == "reading" and r["quality"] == "bad"]
    assert len(bad) == 3, "every failed attempt is on record"
    assert offline["seq"] < bad[0]["seq"], "offline explains the bad readings after it"
    assert poller.up is False
    assert poller.last_error == "timeout", "health shows the latest error"


def test_a_device_answering_only_bad_values_is_failing_once_until_it_recovers(
    site: Site,
) -> None:
    def bad() -> Step:
        return Step(1.0, [sample(None, "bad", "exception 2"), sample(None, "bad", "exception 2")])

    mixed = Step(1.0, [sample(None, "bad", "exception 2"), sample(6.0)])
    script = [Step(1.0), bad(), bad(), Step(1.0, []), bad(), mixed, bad()]
    source = ScriptedSource(site.clock, script)
    poller = site.poller(source)
    records = asyncio.run(site.run(poller))
    assert events(records) == ["device_failing", "device_recovered", "device_failing"]
    failing = next(r for r in records if r["kind"] == "audit")
    assert failing["data"]["error"] == "exception 2"
    assert poller.up is True, "failing is reachable: not offline"
    assert poller.failing == "exception 2"
    assert poller.last_error == "exception 2"
    assert poller.overruns == 0
    assert source.reads == pytest.approx([T0 + i * INTERVAL for i in range(7)])
