"""Episode: failing said once, recovered said once, each optionally sealed (pure logic)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gxpgate.agent._retry import Episode

log = logging.getLogger("tests.episode")


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == log.name]


def test_a_run_of_failures_is_logged_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    episode = Episode(
        log,
        "uplink.failing kind=%s error=%s",
        "uplink.recovered acked_through=%d",
        levels=(logging.WARNING, logging.INFO),
    )
    assert not episode.recover(5), "nothing failed: nothing to recover from"
    assert episode.fail("refused", "connect")
    assert not episode.fail("timed out", "timeout")
    assert episode.error == "timed out"
    assert episode.failing
    assert episode.recover(7)
    assert not episode.recover(8)
    assert episode.error is None
    assert episode.fail("again", "connect")
    assert _lines(caplog) == [
        (logging.WARNING, "uplink.failing kind=connect error=refused"),
        (logging.INFO, "uplink.recovered acked_through=7"),
        (logging.WARNING, "uplink.failing kind=connect error=again"),
    ]


def test_the_subject_leads_both_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    episode = Episode(
        log,
        "sdnotify.send_failed socket=%s error=%s",
        "sdnotify.recovered socket=%s",
        "/run/notify",
    )
    episode.fail("Connection refused")
    episode.recover()
    assert [line for _, line in _lines(caplog)] == [
        "sdnotify.send_failed socket=/run/notify error=Connection refused",
        "sdnotify.recovered socket=/run/notify",
    ]


def test_each_episode_seals_one_record_when_it_starts_and_one_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sealed: list[dict[str, object]] = []

    async def audit(data: dict[str, object]) -> None:
        sealed.append(data)

    episode = Episode(
        log,
        "alarm_output.failed output=%s error=%s",
        "alarm_output.recovered output=%s",
        "coil:plc:3",
        audit=audit,
        events=("alarm_output_failed", "alarm_output_recovered"),
        fields={"output": "coil:plc:3"},
    )

    async def scenario() -> None:
        await episode.recovered()
        await episode.failed("OSError: refused")
        await episode.failed("TimeoutError: late")
        await episode.recovered()
        await episode.recovered()

    asyncio.run(scenario())
    assert sealed == [
        {"event": "alarm_output_failed", "output": "coil:plc:3", "error": "OSError: refused"},
        {"event": "alarm_output_recovered", "output": "coil:plc:3"},
    ]
    assert list(sealed[0]) == ["event", "output", "error"]
    assert [line for _, line in _lines(caplog)] == [
        "alarm_output.failed output=coil:plc:3 error=OSError: refused",
        "alarm_output.recovered output=coil:plc:3",
    ]


def test_the_state_changes_before_the_record_is_sealed() -> None:
    """A second failure arriving while the first is being sealed starts no second episode."""
    sealed: list[dict[str, object]] = []
    episode: Episode

    async def audit(data: dict[str, object]) -> None:
        await asyncio.sleep(0)
        sealed.append(data)

    episode = Episode(
        log, "x.failed error=%s", "x.recovered", audit=audit, events=("x_failed", "x_recovered")
    )

    async def scenario() -> None:
        await asyncio.gather(episode.failed("one"), episode.failed("two"))

    asyncio.run(scenario())
    assert sealed == [{"event": "x_failed", "error": "one"}]


def test_audit_needs_its_event_names() -> None:
    async def audit(data: dict[str, object]) -> None:
        pass

    with pytest.raises(ValueError, match="audit and events"):
        Episode(log, "x.failed error=%s", "x.recovered", audit=audit)
