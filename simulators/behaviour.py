"""Point behaviours shared by the device simulators: drift, hold, ramp, excursion.

Values are computed from the simulator's clock when asked for, so no task runs between reads,
and every simulator scripts its points through the same few shapes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "DRIFT",
    "DRIFT_STEP_SECS",
    "POINTS",
    "Base",
    "Behaviour",
    "Excursion",
    "Hold",
    "Ramp",
    "RandomWalk",
    "ScriptedPoints",
    "check_point",
    "finite",
]

DRIFT_STEP_SECS = 5.0
# point -> (bound of the walk around the base, standard deviation of one step)
DRIFT = {"temperature": (0.3, 0.03), "humidity": (1.5, 0.15)}


class Behaviour(Protocol):
    def value_at(self, now: float) -> float: ...


class RandomWalk:
    """Offset from the base: bounded random walk, one step per ``DRIFT_STEP_SECS``.

    Steps are generated lazily as time advances (time never goes back), so a value costs only
    the steps since the previous one and nothing runs in between.
    """

    def __init__(self, seed: str, bound: float, sigma: float, origin: float) -> None:
        self._rng = random.Random(seed)
        self._bound = bound
        self._sigma = sigma
        self._origin = origin
        self._step = 0
        self._here = 0.0
        self._next = self._draw(0.0)

    def _draw(self, value: float) -> float:
        value += self._rng.gauss(0.0, self._sigma)
        if value > self._bound:  # reflect at the bounds, then clamp for huge steps
            value = 2 * self._bound - value
        elif value < -self._bound:
            value = -2 * self._bound - value
        return min(self._bound, max(-self._bound, value))

    def offset_at(self, now: float) -> float:
        position = max(0.0, now - self._origin) / DRIFT_STEP_SECS
        while self._step < int(position):
            self._step += 1
            self._here, self._next = self._next, self._draw(self._next)
        fraction = min(1.0, max(0.0, position - self._step))
        return self._here + (self._next - self._here) * fraction


@dataclass(frozen=True)
class Base:
    base: float
    walk: RandomWalk | None

    def value_at(self, now: float) -> float:
        return self.base + (self.walk.offset_at(now) if self.walk else 0.0)


@dataclass(frozen=True)
class Hold:
    value: float

    def value_at(self, now: float) -> float:
        return self.value


@dataclass(frozen=True)
class Ramp:
    start: float
    end: float
    t0: float
    seconds: float

    def value_at(self, now: float) -> float:
        if now >= self.t0 + self.seconds:
            return self.end
        fraction = max(0.0, (now - self.t0) / self.seconds)
        return self.start + (self.end - self.start) * fraction


@dataclass(frozen=True)
class Excursion:
    value: float
    until: float
    then: Behaviour

    def value_at(self, now: float) -> float:
        return self.value if now < self.until else self.then.value_at(now)


POINTS = ("temperature", "humidity", "door_open")


class ScriptedPoints:
    """One simulated device's points: each has a base behaviour (its value, drifting or not)
    and a current one, which the scripting verbs replace. Arguments are checked here, once,
    for every simulator."""

    def __init__(
        self, seed_key: str, temperature_c: float, humidity_pct: float, drift: bool, t0: float
    ) -> None:
        bases = {"temperature": temperature_c, "humidity": humidity_pct}
        self.base: dict[str, Base] = {"door_open": Base(0.0, None)}
        for point, (bound, sigma) in DRIFT.items():
            walk = RandomWalk(f"{seed_key}:{point}", bound, sigma, t0) if drift else None
            self.base[point] = Base(bases[point], walk)
        self.behaviour: dict[str, Behaviour] = dict(self.base)

    def value(self, point: str, now: float) -> float:
        return self.behaviour[check_point(point)].value_at(now)

    def hold(self, point: str, value: float) -> None:
        """Hold ``value`` (no drift) until changed."""
        self.behaviour[check_point(point)] = Hold(finite(value))

    def ramp(self, point: str, to: float, seconds: float, now: float) -> None:
        """Go linearly from the current value to ``to`` over ``seconds``, then hold ``to``."""
        if not seconds >= 0:
            raise ValueError(f"ramp seconds must be >= 0, got {seconds}")
        start, target = self.value(point, now), finite(to)
        self.behaviour[point] = Ramp(start, target, now, seconds) if seconds else Hold(target)

    def excursion(self, point: str, value: float, seconds: float, now: float) -> None:
        """Jump to ``value`` for ``seconds``, then hand back to the behaviour it interrupted."""
        if not seconds > 0:
            raise ValueError(f"excursion seconds must be > 0, got {seconds}")
        previous = self.behaviour[check_point(point)]
        while isinstance(previous, Excursion) and previous.until <= now:
            previous = previous.then  # an expired excursion is already handed back
        self.behaviour[point] = Excursion(finite(value), now + seconds, previous)

    def freeze(self, point: str, now: float) -> None:
        """Stuck sensor: keep returning the current value."""
        self.behaviour[point] = Hold(self.value(point, now))

    def resume(self, point: str) -> None:
        """Back to the base value, drifting if the device drifts."""
        self.behaviour[check_point(point)] = self.base[point]


def check_point(point: str) -> str:
    if point not in POINTS:
        raise ValueError(f"unknown point {point!r}; expected one of {list(POINTS)}")
    return point


def finite(value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"value must be finite, got {value}")
    return value
