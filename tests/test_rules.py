"""The rules engine with injected time: delays, hysteresis, escalation, faults, comm loss, MKT."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gxpgate.agent.alarms.mkt import RollingMkt, mean_kinetic_temperature
from gxpgate.agent.alarms.rules import (
    Engine,
    PointRules,
    RateWindow,
    Reading,
    RuleError,
    Transition,
)
from gxpgate.config.rules_model import QuantityRules
from tests.vectors import load_vectors

NOON = datetime(2026, 11, 21, 12, 0, tzinfo=UTC).timestamp()
MIN = 60.0


def point(rules: dict[str, Any], interval: float = 180.0, **extra: Any) -> PointRules:
    return PointRules(
        zone="cold-1", device="probe", point="temperature", unit="Cel",
        rules=QuantityRules.model_validate(rules), interval_secs=interval, **extra,
    )  # fmt: skip


class Feed:
    """Readings into an engine, one ``seq`` each, at minutes after noon."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seq = 0

    def at(self, minutes: float, value: float | None, quality: str = "good") -> list[Transition]:
        self.seq += 1
        t = NOON + minutes * MIN
        reading = Reading(self.seq, "probe", "temperature", value, quality, t, t)
        return self.engine.observe(reading)


def states(transitions: list[Transition]) -> list[tuple[str, str]]:
    return [(t.rule.rsplit(".", 1)[1], t.state) for t in transitions]


def test_on_delay_by_duration_raises_at_the_first_reading_past_it_and_off_delay_clears() -> None:
    feed = Feed(
        Engine(
            [point({"high": {"limit": 8}, "on_delay_secs": 300, "off_delay_secs": 300})], now=NOON
        )
    )
    assert feed.at(0, 9.0) == []  # 12:00 pending
    assert feed.at(3, 9.0) == []  # 12:03 still pending: 3 min < 5 min
    raised = feed.at(6, 9.0)  # 12:06
    assert states(raised) == [("high", "active")]
    assert raised[0].data()["started_at"] == "2026-11-21T12:00:00.000000Z"
    assert feed.at(9, 7.0) == []  # 12:09 back in range: off-delay starts
    assert feed.at(12, 7.0) == []  # 12:12: 3 min
    cleared = feed.at(15, 7.0)  # 12:15: 6 min ≥ 5
    assert states(cleared) == [("high", "cleared")]
    assert cleared[0].alarm_id == raised[0].alarm_id


def test_a_good_reading_while_pending_returns_to_normal() -> None:
    feed = Feed(Engine([point({"high": {"limit": 8}, "on_delay_secs": 300})], now=NOON))
    assert feed.at(0, 9.0) == []
    assert feed.at(3, 7.0) == []  # pending cancelled
    assert feed.at(6, 9.0) == []  # a new pending, from 12:06
    assert feed.at(9, 9.0) == []  # only 3 min of it
    assert states(feed.at(12, 9.0)) == [("high", "active")]
    views = feed.engine.alarms()
    assert [(v.state, v.started_at) for v in views] == [("active", NOON + 6 * MIN)]


def test_on_delay_as_a_count_of_consecutive_samples() -> None:
    feed = Feed(Engine([point({"high": {"limit": 8, "on_delay_samples": 3}})], now=NOON))
    assert feed.at(0, 9) == []
    assert feed.at(0.1, 9) == []
    assert states(feed.at(0.2, 9)) == [("high", "active")]


def test_hysteresis_applies_on_return_to_normal_only() -> None:
    feed = Feed(Engine([point({"high": {"limit": 10, "hysteresis": 1}})], now=NOON))
    assert feed.at(0, 10.0) == []  # at the limit is within it
    assert states(feed.at(1, 10.5)) == [("high", "active")]
    assert feed.at(2, 9.5) == []  # below the limit but within the hysteresis: still active
    assert states(feed.at(3, 9.0)) == [("high", "cleared")]


def test_escalation_warning_before_alarm() -> None:
    rules = {"high": {"limit": 8, "severity": "warning"}, "high_high": {"limit": 10}}
    feed = Feed(Engine([point(rules)], now=NOON))
    first = feed.at(0, 9.0)
    assert [(t.rule, t.severity, t.state) for t in first] == [
        ("probe.temperature.high", "warning", "active")
    ]
    second = feed.at(1, 11.0)
    assert [(t.rule, t.severity, t.state) for t in second] == [
        ("probe.temperature.high_high", "alarm", "active")
    ]
    assert first[0].alarm_id != second[0].alarm_id
    assert states(feed.at(2, 7.0)) == [("high", "cleared"), ("high_high", "cleared")]


def test_low_levels_trip_below_and_track_the_lowest_value() -> None:
    feed = Feed(Engine([point({"low": {"limit": 2, "hysteresis": 0.5}})], now=NOON))
    assert states(feed.at(0, 1.5)) == [("low", "active")]
    assert feed.at(1, 0.9) == []
    assert feed.at(2, 2.4) == []  # above 2 but below 2.5
    cleared = feed.at(3, 2.5)
    assert states(cleared) == [("low", "cleared")]
    assert cleared[0].extreme == 0.9


def test_bad_quality_raises_sensor_fault_not_a_limit_alarm() -> None:
    rules = {"high": {"limit": 8}, "sensor_fault": {"severity": "warning"}}
    feed = Feed(Engine([point(rules)], now=NOON))
    raised = feed.at(0, None, "bad")
    assert states(raised) == [("sensor_fault", "active")]
    assert feed.at(1, 99.0, "uncertain") == []  # uncertain: not a value either, still faulty
    assert states(feed.at(2, 5.0)) == [("sensor_fault", "cleared")]


def test_comm_loss_after_n_intervals_on_the_gateway_clock() -> None:
    engine = Engine([point({"comm_loss": {"intervals": 3}}, interval=10)], now=NOON)
    feed = Feed(engine)
    feed.at(0, 5.0)
    assert engine.tick(NOON + 29) == []
    assert engine.tick(NOON + 30) == []  # exactly 3 intervals: not yet more
    lost = engine.tick(NOON + 31)
    assert states(lost) == [("comm_loss", "active")]
    assert lost[0].started_at == NOON  # since the last good reading
    assert engine.tick(NOON + 40) == []  # one alarm, not one per tick
    assert states(feed.at(40 / MIN, 5.0)) == [("comm_loss", "cleared")]


def test_comm_loss_of_a_subscription_counts_from_offline() -> None:
    spec = point({"comm_loss": {"intervals": 3}}, interval=1, changes_only=True)
    engine = Engine([spec], now=NOON)
    assert engine.tick(NOON + 3600) == []  # silence is normal for a subscription
    engine.device_status("probe", False, NOON + 3600, seq=1)
    assert engine.tick(NOON + 3602) == []
    assert states(engine.tick(NOON + 3604)) == [("comm_loss", "active")]


def test_rate_of_change_over_the_window() -> None:
    feed = Feed(Engine([point({"rate": {"max_per_min": 0.5, "window_mins": 4}})], now=NOON))
    assert feed.at(0, 5.0) == []
    assert feed.at(1, 5.2) == []  # window under half full: not judged
    assert feed.at(2, 5.4) == []  # 0.2 °C/min
    raised = feed.at(3, 7.0)  # +2 °C over 3 min
    assert states(raised) == [("rate", "active")]
    assert raised[0].value == pytest.approx(2.0 / 3)


def test_acknowledge_then_clear_and_ack_of_a_cleared_alarm() -> None:
    engine = Engine([point({"high": {"limit": 8}})], now=NOON)
    feed = Feed(engine)
    alarm = feed.at(0, 9.0)[0]
    ack = engine.acknowledge(alarm.alarm_id, "alice", "door left open", NOON + 60, "root")
    assert (ack.state, ack.by, ack.comment, ack.condition) == (
        "acknowledged", "alice", "door left open", "active"
    )  # fmt: skip
    with pytest.raises(RuleError, match="already acknowledged"):
        engine.acknowledge(alarm.alarm_id, "bob", "again", NOON + 61)
    assert states(feed.at(2, 7.0)) == [("high", "cleared")]
    assert engine.alarms() == []  # acknowledged and cleared: over
    second = feed.at(3, 9.0)[0]
    feed.at(4, 7.0)
    assert [v.state for v in engine.alarms()] == ["cleared"]  # cleared, nobody acknowledged
    late = engine.acknowledge(second.alarm_id, "bob", "seen", NOON + 300)
    assert (late.state, late.condition) == ("acknowledged", "normal")
    assert engine.alarms() == []
    with pytest.raises(RuleError, match="no alarm A99"):
        engine.acknowledge("A99", "bob", "x", NOON)


def test_realarm_while_unacknowledged() -> None:
    engine = Engine([point({"high": {"limit": 8}, "realarm_mins": 10})], now=NOON)
    feed = Feed(engine)
    feed.at(0, 9.0)
    assert engine.tick(NOON + 9 * MIN) == []
    again = engine.tick(NOON + 10 * MIN)
    assert [(t.state, t.realarm) for t in again] == [("active", 1)]
    engine.acknowledge(again[0].alarm_id, "alice", "on it", NOON + 11 * MIN)
    assert engine.tick(NOON + 30 * MIN) == []


def test_late_readings_feed_mkt_but_do_not_rerun_delays() -> None:
    engine = Engine([point({"high": {"limit": 8}})], now=NOON)
    feed = Feed(engine)
    feed.at(10, 5.0)
    assert feed.at(5, 20.0) == []  # older than what was judged: back-filled memory


def test_lots_present_during_the_excursion_are_named() -> None:
    asked: list[tuple[str, datetime, datetime]] = []

    def lots(zone: str, t1: datetime, t2: datetime) -> list[str]:
        asked.append((zone, t1, t2))
        return ["(01)10614141000019(10)LOT-A1"]

    feed = Feed(Engine([point({"high": {"limit": 8}, "on_delay_secs": 300})], now=NOON, lots=lots))
    feed.at(0, 9)
    raised = feed.at(6, 9)
    assert raised[0].lots == ["(01)10614141000019(10)LOT-A1"]
    start = datetime.fromtimestamp(NOON, UTC)
    assert asked[-1][:2] == ("cold-1", start)


def test_checkpoint_and_replay_restore_the_same_state() -> None:
    rules = {"high": {"limit": 8}, "on_delay_secs": 300, "off_delay_secs": 300}
    first = Engine([point(rules)], now=NOON)
    feed = Feed(first)
    feed.at(0, 9)
    raised = feed.at(6, 9)
    saved = {k.removeprefix("rules:"): v for k, v in raised[0].entries.items()}
    feed.at(9, 7)  # off-delay running, not checkpointed
    # Restart: a new engine from the checkpoint replays the readings after it.
    second = Engine([point(rules)], now=NOON)
    replay_from = second.load(saved)
    assert replay_from == 0  # no periodic checkpoint: everything is replayed ...
    again = Feed(second)
    assert again.at(0, 9) == []  # ... but the machine skips what it had seen
    assert again.at(6, 9) == []  # no second "active"
    assert again.at(9, 7) == []
    cleared = again.at(15, 7)
    assert states(cleared) == [("high", "cleared")]
    assert cleared[0].alarm_id == raised[0].alarm_id
    periodic = {k.removeprefix("rules:"): v for k, v in second.checkpoint().items()}
    third = Engine([point(rules)], now=NOON)
    assert third.load(periodic) == 4
    assert [(v.alarm_id, v.state) for v in third.alarms()] == [(raised[0].alarm_id, "cleared")]
    assert third.next_id == second.next_id


@pytest.mark.parametrize("case", load_vectors()["mkt"], ids=lambda c: c["name"])
def test_mkt_vectors(case: dict[str, Any]) -> None:
    got = mean_kinetic_temperature(case["temps_c"], case["weights"])
    assert got == pytest.approx(case["expected_c"], abs=5e-4)


def test_rolling_mkt_matches_the_formula_and_forgets_the_old() -> None:
    rolling = RollingMkt(window_secs=48 * 60)
    temps = [5, 5, 5, 15, 5, 5]
    for i, temp in enumerate(temps):
        rolling.add(NOON + i * 60, temp)
    assert rolling.value() == pytest.approx(mean_kinetic_temperature(temps), abs=1e-9)
    rolling.add(NOON + 100 * 60, 5)  # the window has moved past all of them
    assert rolling.value() == pytest.approx(5.0)


def test_mkt_rule_alarms_when_the_window_mkt_exceeds_the_limit() -> None:
    feed = Feed(Engine([point({"mkt": {"limit": 8, "window_hours": 1}})], now=NOON))
    for minute in range(10):
        assert feed.at(minute, 7.0) == []
    raised = [t for minute in range(10, 20) for t in feed.at(minute, 12.0)]
    assert states(raised) == [("mkt", "active")]
    assert raised[0].value is not None
    assert raised[0].value > 8


def test_set_level_sample_delay_applies_unless_a_level_has_its_own() -> None:
    rules = {
        "high": {"limit": 8},
        "high_high": {"limit": 10, "on_delay_secs": 0},
        "on_delay_samples": 2,
    }
    feed = Feed(Engine([point(rules)], now=NOON))
    assert states(feed.at(0, 11)) == [("high_high", "active")]
    assert states(feed.at(0.1, 11)) == [("high", "active")]


def test_a_logger_back_online_clears_comm_loss_and_sensor_fault() -> None:
    # A logger's good values carry its own clock (here 42 s behind); the bad readings made while
    # it was unreachable carry the gateway's. Neither may block the other.
    engine = Engine(
        [point({"comm_loss": {"intervals": 3}, "sensor_fault": {}}, interval=1)], now=NOON
    )
    seq = iter(range(1, 100))

    def read(at: float, value: float | None, src: float | None = None) -> list[Transition]:
        quality = "good" if value is not None else "bad"
        t = src if src is not None else at
        return engine.observe(Reading(next(seq), "probe", "temperature", value, quality, t, at))

    read(NOON, 5.0, NOON - 42)
    assert states(read(NOON + 1, None)) == [("sensor_fault", "active")]
    assert states(engine.tick(NOON + 5)) == [("comm_loss", "active")]
    back = read(NOON + 6, 5.1, NOON + 6 - 42)
    assert sorted(states(back)) == [("comm_loss", "cleared"), ("sensor_fault", "cleared")]


def test_the_gateways_own_downtime_is_not_a_devices_comm_loss() -> None:
    spec = point({"comm_loss": {"intervals": 3}}, interval=10)
    before = Engine([spec], now=NOON)
    Feed(before).at(0, 5.0)
    saved = {k.removeprefix("rules:"): v for k, v in before.checkpoint().items()}
    after = Engine([spec], now=NOON + 3600)  # restarted an hour later
    after.load(saved)
    assert after.tick(NOON + 3601) == []
    assert states(after.tick(NOON + 3631)) == [("comm_loss", "active")]  # then it counts


def test_rolling_mkt_running_totals_survive_dump_and_load_and_late_readings() -> None:
    rolling = RollingMkt(window_secs=48 * 60)
    temps = [5.0, 6.0, 7.0, 8.0]
    for i, temp in enumerate(temps):
        rolling.add(NOON + i * 60, temp)
    rolling.add(NOON + 30, 15.0)  # late but in the window: counts
    expected = mean_kinetic_temperature([*temps, 15.0])
    assert rolling.value() == pytest.approx(expected, abs=1e-9)
    copy = RollingMkt(window_secs=48 * 60)
    copy.load(rolling.dump())
    assert copy.value() == pytest.approx(expected, abs=1e-9)
    copy.add(NOON + 300, 5.0)
    assert copy.value() == pytest.approx(mean_kinetic_temperature([*temps, 15.0, 5.0]), abs=1e-9)


@given(
    st.lists(
        st.tuples(st.floats(0, 30), st.floats(-40, 40, allow_nan=False)), min_size=1, max_size=400
    ),
    st.floats(1, 600),
)
def test_the_rate_window_keeps_what_a_plain_deque_would(
    steps: list[tuple[float, float]], secs: float
) -> None:
    """The compact window answers like the obvious one, out-of-order samples and compaction
    included, and its checkpoint holds the same samples."""
    window, reference = RateWindow(secs), deque[tuple[float, float]]()
    t = 0.0
    for i, (dt, value) in enumerate(steps):
        t = t + dt if i % 7 else t - dt / 2  # now and then a sample older than the last
        reference.append((t, value))
        while len(reference) > 1 and t - reference[0][0] > secs:
            reference.popleft()
        assert window.add(t, value) == reference[0]
    assert window.pairs() == list(reference)
    restored = RateWindow(secs)
    restored.load([list(pair) for pair in window.pairs()])
    assert restored.pairs() == list(reference)


def _apply(store: dict[str, str], entries: dict[str, str | None]) -> None:
    """What the buffer's state table does with checkpoint entries."""
    for key, text in entries.items():
        if text is None:
            store.pop(key, None)
        else:
            store[key] = text


@given(
    st.lists(
        st.tuples(st.floats(0, 30), st.floats(-40, 40, allow_nan=False), st.booleans()),
        min_size=1,
        max_size=600,
    ),
    st.floats(1, 600),
)
def test_a_rate_window_restored_from_its_chunks_is_the_window_it_was(
    steps: list[tuple[float, float, bool]], secs: float
) -> None:
    """Checkpointed now and then (only the chunks that changed, old ones deleted), a window
    restored from the chunks holds the same samples, answers the next sample the same, and
    the checkpoint holds no more chunks than the window spans."""
    window = RateWindow(secs)
    chunks: dict[int, str] = {}
    first = 0
    t = 0.0
    for i, (dt, value, checkpoint) in enumerate(steps):
        t = t + dt if i % 7 else t - dt / 2  # now and then a sample older than the last
        window.add(t, value)
        if checkpoint:
            changed = window.changed_chunks()
            _apply(chunks, {str(c): text for c, text in changed.items()})  # type: ignore[misc]
            first = window.first
            spanned = (first + len(window) - 1) // 64 - first // 64 + 1
            assert len(chunks) <= spanned
            restored = RateWindow(secs)
            restored.load_chunks(first, {int(c): text for c, text in chunks.items()}, window.end)
            assert restored.pairs() == window.pairs()
            assert restored.first == window.first
            assert restored.peek(t + 1, 0.0) == window.peek(t + 1, 0.0)


def test_a_rate_window_chunk_missing_from_a_checkpoint_is_an_error_not_a_shorter_window() -> None:
    window = RateWindow(600)
    for i in range(200):
        window.add(NOON + i, 5.0)
    chunks = {c: text for c, text in window.changed_chunks().items() if text is not None}
    assert sorted(chunks) == [0, 1, 2, 3]
    del chunks[1]
    with pytest.raises(ValueError, match="starts at sample 128, not 64"):
        RateWindow(600).load_chunks(0, chunks)


def test_rate_windows_checkpoint_only_what_changed_and_restore_the_rate_rule() -> None:
    """At a 1 s poll with a 10-minute window, a periodic checkpoint rewrites about a minute of
    each window, not the whole window; a restarted engine then raises the rate alarm at the
    same reading as one that never stopped."""
    rules = {"rate": {"max_per_min": 0.5, "window_mins": 10}}
    engines = [Engine([point(rules, interval=1)], now=NOON) for _ in range(2)]
    store: dict[str, str] = {}
    sizes = []
    for second in range(1200):
        reading = Reading(second + 1, "probe", "temperature", 5.0, "good", NOON + second, NOON)
        engines[0].observe(reading)
        if second % 60 == 59:
            entries = engines[0].checkpoint()
            sizes.append(sum(len(text) for text in entries.values() if text is not None))
            _apply(store, entries)
    # The last checkpoint wrote about a tenth of the window; the stored chunks span it.
    assert sizes[-1] < 0.2 * sum(len(v) for k, v in store.items() if k.startswith("rules:w:"))
    assert len([k for k in store if k.startswith("rules:w:")]) <= 600 // 64 + 2
    restarted = Engine([point(rules, interval=1)], now=NOON)
    assert restarted.load({k.removeprefix("rules:"): v for k, v in store.items()}) == 1200
    # A steady rise of 1 °C/min, to both: the alarm comes at the same reading.
    raised = []
    for engine in (engines[0], restarted):
        for second in range(1200, 1800):
            value = 5.0 + (second - 1200) / 60
            at = NOON + second
            moved = engine.observe(
                Reading(second + 1, "probe", "temperature", value, "good", at, at)
            )
            if moved:
                raised.append((second, states(moved)))
                break
    assert raised[0] == raised[1]
    assert raised[0][1] == [("rate", "active")]


def test_a_checkpoint_written_before_windows_were_chunked_still_restores_them() -> None:
    rules = {"rate": {"max_per_min": 0.5, "window_mins": 10}}
    engine = Engine([point(rules, interval=1)], now=NOON)
    entries = engine.checkpoint()
    pairs = [[NOON + s, 5.0] for s in range(600)]
    old = {"last_t": NOON + 599, "last_good_at": NOON + 599, "offline_at": None, "window": pairs}
    saved = {k.removeprefix("rules:"): v for k, v in entries.items() if v is not None}
    saved["p:probe.temperature"] = orjson.dumps({**old, "through": 600}).decode()
    restored = Engine([point(rules, interval=1)], now=NOON)
    restored.load(saved)
    window = restored._points["probe", "temperature"].window
    assert window.pairs() == [tuple(pair) for pair in pairs]
    chunks = restored.checkpoint()  # the window goes into chunks; the point's entry loses it
    assert "window" not in orjson.loads(chunks["rules:p:probe.temperature"] or "{}")
    assert len([k for k in chunks if k.startswith("rules:w:")]) == 10


@given(
    st.lists(
        st.tuples(st.floats(0, 7200), st.floats(0, 1), st.floats(-25, 40), st.booleans()),
        min_size=1,
        max_size=300,
    )
)
def test_rolling_mkt_is_the_formula_over_the_readings_its_window_holds(
    steps: list[tuple[float, float, float, bool]],
) -> None:
    """Late readings within the window count, older ones are ignored, whole slots expire as
    the window slides; a dump and load on the way changes nothing."""
    rolling, width = RollingMkt(window_secs=24 * 3600), 24 * 3600 / RollingMkt.BUCKETS
    kept: list[tuple[int, float]] = []
    t = NOON
    newest: int | None = None
    for dt, late, temp, reload in steps:
        t += dt
        at = t - late * 30 * 3600 if late > 0.8 else t  # now and then back-filled memory
        slot = int(at // width)
        newest = slot if newest is None else max(newest, slot)
        if slot > newest - RollingMkt.BUCKETS:
            kept.append((slot, temp))
        rolling.add(at, temp)
        if reload:
            copy = RollingMkt(window_secs=24 * 3600)
            copy.load(orjson.loads(orjson.dumps(rolling.dump())))
            rolling = copy
        window = [temp for s, temp in kept if s > newest - RollingMkt.BUCKETS]
        assert rolling.value() == pytest.approx(mean_kinetic_temperature(window), abs=1e-9)


def test_mkt_buckets_checkpoint_only_the_groups_that_changed_and_restore_the_mkt() -> None:
    """A day of readings every minute fills the 48 buckets; a checkpoint then rewrites the
    newest group only, deletes groups that have left the window, and a restarted engine has
    the same MKT."""
    rules = {"mkt": {"limit": 8, "window_hours": 24}}
    engine = Engine([point(rules, interval=60)], now=NOON)
    store: dict[str, str] = {}
    last: dict[str, str | None] = {}
    for minute in range(0, 36 * 60):
        t = NOON + minute * MIN
        value = 5.0 + (minute % 90) / 30
        engine.observe(Reading(minute + 1, "probe", "temperature", value, "good", t, t))
        if minute % 60 == 59:
            last = engine.checkpoint()
            _apply(store, last)
    groups = sorted(int(k.rsplit(":", 1)[1]) for k in store if k.startswith("rules:mkt:"))
    assert len(groups) <= 48 // 8 + 1, groups  # old groups were deleted
    written = [k for k, v in last.items() if k.startswith("rules:mkt:") and v is not None]
    assert len(written) == 1, written  # an hour's readings fall in one group
    restarted = Engine([point(rules, interval=60)], now=NOON)
    restarted.load({k.removeprefix("rules:"): v for k, v in store.items()})
    before = engine._points["probe", "temperature"].rolling
    after = restarted._points["probe", "temperature"].rolling
    assert before is not None
    assert after is not None
    assert after.value() == before.value()
    assert after.dump() == before.dump()


def test_a_checkpoint_with_mkt_buckets_in_the_points_entry_still_restores_them() -> None:
    rules = {"mkt": {"limit": 8, "window_hours": 24}}
    old_mkt = RollingMkt(24 * 3600)
    for hour in range(30):
        old_mkt.add(NOON + hour * 3600, 6.0 + hour % 3)
    old = {"last_t": NOON + 29 * 3600, "last_good_at": NOON, "offline_at": None}
    saved = {"p:probe.temperature": orjson.dumps({**old, "mkt": old_mkt.dump()}).decode()}
    restored = Engine([point(rules, interval=60)], now=NOON)
    restored.load(saved)
    rolling = restored._points["probe", "temperature"].rolling
    assert rolling is not None
    assert rolling.value() == old_mkt.value()
    entries = restored.checkpoint()  # the buckets go into groups
    assert "mkt" not in orjson.loads(entries["rules:p:probe.temperature"] or "{}")
    groups = {k: v for k, v in entries.items() if k.startswith("rules:mkt:") and v}
    again = Engine([point(rules, interval=60)], now=NOON)
    again.load({k.removeprefix("rules:"): v for k, v in groups.items() if v is not None})
    moved = again._points["probe", "temperature"].rolling
    assert moved is not None
    assert moved.value() == old_mkt.value()


def test_machines_at_rest_are_not_rewritten_by_each_checkpoint_and_restore_alike() -> None:
    rules = {"high": {"limit": 8}, "low": {"limit": 2}, "on_delay_secs": 120}
    running, store = Engine([point(rules)], now=NOON), {}
    feed = Feed(running)
    for minute in range(10):
        feed.at(minute, 5.0 + minute / 10)  # a different value each time, all normal
        entries = running.checkpoint()
        _apply(store, entries)
        rewritten = [k for k in entries if k.startswith("rules:m:")]
        # Nothing about them changed but their last value: written once, at the first.
        assert rewritten == (
            [] if minute else ["rules:m:probe.temperature.low", "rules:m:probe.temperature.high"]
        )
    restarted = Engine([point(rules)], now=NOON)
    restarted.load({k.removeprefix("rules:"): v for k, v in store.items()})
    again = Feed(restarted)
    again.seq = feed.seq
    for engine_feed in (feed, again):
        assert engine_feed.at(10, 9.5) == []
        raised = engine_feed.at(13, 9.7)
        assert [(t.state, t.value, t.extreme) for t in raised] == [("active", 9.7, 9.7)]


def test_unreadable_mkt_buckets_start_afresh_and_the_next_checkpoint_replaces_them() -> None:
    rules = {"mkt": {"limit": 8, "window_hours": 24}}
    engine, store = Engine([point(rules, interval=60)], now=NOON), {}
    feed = Feed(engine)
    for minute in range(0, 300, 10):
        feed.at(minute, 6.0)
    _apply(store, engine.checkpoint())
    groups = [k for k in store if k.startswith("rules:mkt:")]
    store[groups[0]] = "[1, 2"  # not JSON
    restarted = Engine([point(rules, interval=60)], now=NOON)
    restarted.load({k.removeprefix("rules:"): v for k, v in store.items()})
    assert len(restarted.damaged) == 1
    assert restarted.damaged[0].startswith("probe.temperature: MKT buckets (")
    rolling = restarted._points["probe", "temperature"].rolling
    assert rolling is not None
    assert rolling.value() is None  # starts empty
    again = Feed(restarted)
    again.seq = feed.seq
    again.at(300, 7.0)
    _apply(store, restarted.checkpoint())
    third = Engine([point(rules, interval=60)], now=NOON)
    third.load({k.removeprefix("rules:"): v for k, v in store.items()})
    assert third.damaged == []
    rolling = third._points["probe", "temperature"].rolling
    assert rolling is not None
    assert rolling.value() == pytest.approx(7.0)  # the damaged buckets are gone, not merged


def test_a_checkpoint_missing_its_newest_rate_window_chunk_is_found_not_loaded_short() -> None:
    rules = {"rate": {"max_per_min": 0.5, "window_mins": 10}}
    engine, store = Engine([point(rules, interval=1)], now=NOON), {}
    for second in range(300):
        at = NOON + second
        engine.observe(Reading(second + 1, "probe", "temperature", 5.0, "good", at, at))
    _apply(store, engine.checkpoint())
    newest = max(
        (k for k in store if k.startswith("rules:w:")), key=lambda k: int(k.rsplit(":", 1)[1])
    )
    del store[newest]
    restarted = Engine([point(rules, interval=1)], now=NOON)
    restarted.load({k.removeprefix("rules:"): v for k, v in store.items()})
    assert restarted.damaged == [
        "probe.temperature: rate window (rate window chunks end at sample 256, not 300): "
        "starts empty"
    ]


@pytest.mark.parametrize(
    ("rules", "kind"),
    [
        ({"mkt": {"limit": 8}}, "mkt"),
        ({"rate": {"max_per_min": 0.5, "window_mins": 10}}, "w"),
    ],
)
def test_checkpointed_state_of_a_rule_removed_from_its_point_is_deleted(
    rules: dict[str, Any], kind: str
) -> None:
    engine, store = Engine([point(rules, interval=1)], now=NOON), {}
    feed = Feed(engine)
    for second in range(100):
        feed.at(second / 60, 6.0)
    _apply(store, engine.checkpoint())
    assert any(k.startswith(f"rules:{kind}:") for k in store)
    without = Engine([point({"high": {"limit": 8}}, interval=1)], now=NOON)
    without.load({k.removeprefix("rules:"): v for k, v in store.items()})
    _apply(store, without.checkpoint())
    assert not any(k.startswith(f"rules:{kind}:") for k in store)
