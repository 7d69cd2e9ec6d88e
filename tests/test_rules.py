"""The rules engine with injected time: delays, hysteresis, escalation, faults, comm loss, MKT."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from typing import Any

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
