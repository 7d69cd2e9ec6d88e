"""Storage profiles and excursion rules: what a zone must keep, and when a reading is an alarm.

A profile holds rules per measured quantity (``temperature``, ``humidity``). A zone names its
profile and may override rules for the whole zone (``[zones.Z.rules.temperature]``) or for one
point (``[zones.Z.points."DEVICE.POINT"]``). Overrides merge field by field: what an override
sets replaces the profile's value, a limit level is replaced whole, and ``false`` switches a
level or rule off. The built-in profiles are data (``config/profiles.toml``), each with its
citation.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gxpgate.config.mqtt_model import MqttBroker

__all__ = [
    "LEVELS",
    "QUANTITY_UNITS",
    "AlarmRoutes",
    "AlarmsConfig",
    "CoilOutput",
    "CommLossRule",
    "FaultRule",
    "LimitRule",
    "MktRule",
    "MqttAlarmOutput",
    "QuantityRules",
    "RateRule",
    "StorageProfile",
]

Severity = Literal["warning", "alarm"]
Level = Literal["low_low", "low", "high", "high_high"]
Quantity = Literal["temperature", "humidity"]
LEVELS: tuple[Level, ...] = ("low_low", "low", "high", "high_high")
QUANTITY_UNITS: dict[str, Quantity] = {"Cel": "temperature", "%": "humidity"}
"""A point's quantity follows from its UCUM unit; other points get rules only per point."""

_ALARM_ONLY: tuple[Severity, ...] = ("alarm",)
Secs = Annotated[float, Field(ge=0, le=30 * 86400)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Delays(_Strict):
    on_delay_secs: Secs | None = None
    """How long the condition must hold before the alarm is raised (None: the rule set's)."""
    on_delay_samples: int | None = Field(default=None, ge=1, le=10_000)
    """Or: how many consecutive readings must show it (instead of a duration)."""
    off_delay_secs: Secs | None = None
    """How long the value must be back (beyond the hysteresis) before the alarm clears."""


class LimitRule(_Delays):
    limit: float
    """The limit in the point's unit. High levels trip above it, low levels below it."""
    severity: Severity = "alarm"
    hysteresis: float | None = Field(default=None, ge=0)
    """Applied on return to normal only: a high alarm clears at or below ``limit -
    hysteresis`` (a low one at or above ``limit + hysteresis``); it trips at the limit itself."""


class RateRule(_Delays):
    max_per_min: float = Field(gt=0)
    """Largest change per minute (either direction) over the window."""
    window_mins: float = Field(default=10.0, gt=0, le=1440)
    """The change is measured between the newest reading and the oldest one in the window; a
    window less than half full is not judged."""
    severity: Severity = "warning"


class MktRule(_Strict):
    limit: float
    """Mean kinetic temperature limit, °C."""
    window_hours: float = Field(default=24.0, gt=0, le=24 * 366)
    """Rolling window; readings are summed in 48 buckets, so the window slides in steps of
    1/48 of its length."""
    activation_energy_k: float = Field(default=10_000.0, gt=0)
    """ΔH/R in kelvin (USP <1079.2>: 83.144 kJ/mol ÷ R = 10,000 K)."""
    severity: Severity = "alarm"


class FaultRule(_Delays):
    severity: Severity = "alarm"


class CommLossRule(_Strict):
    intervals: int = Field(default=3, ge=1, le=1000)
    """No good reading for this many of the device's poll intervals. OPC UA subscriptions,
    which report only changes, count from the moment the device went offline instead."""
    severity: Severity = "alarm"


class QuantityRules(_Strict):
    """The rules for one quantity of a profile, or an override for a zone or a point."""

    low_low: LimitRule | Literal[False] | None = None
    low: LimitRule | Literal[False] | None = None
    high: LimitRule | Literal[False] | None = None
    high_high: LimitRule | Literal[False] | None = None
    rate: RateRule | Literal[False] | None = None
    mkt: MktRule | Literal[False] | None = None
    sensor_fault: FaultRule | Literal[False] | None = None
    """Bad or uncertain readings: never used as values; this rule says they are happening."""
    comm_loss: CommLossRule | Literal[False] | None = None
    on_delay_secs: Secs | None = None
    """Default on-delay of this set's limit rules."""
    on_delay_samples: int | None = Field(default=None, ge=1, le=10_000)
    """Or: default count of consecutive readings; a rule's own delay takes precedence."""
    off_delay_secs: Secs | None = None
    hysteresis: float | None = Field(default=None, ge=0)
    """Default hysteresis of this set's limit rules."""
    realarm_mins: float | Literal[False] | None = None
    """Seal the alarm again (``data.realarm``) this often while nobody acknowledged it."""

    def watches(self) -> bool:
        """Does any rule of this set watch the point (a limit, rate, MKT, fault or silence)?"""
        return any(
            getattr(self, name) not in (None, False)
            for name in (*LEVELS, "rate", "mkt", "sensor_fault", "comm_loss")
        )

    def merged(self, override: QuantityRules | None) -> QuantityRules:
        """This set with what ``override`` sets replacing it."""
        if override is None:
            return self
        return self.model_copy(
            update={name: getattr(override, name) for name in override.model_fields_set}
        )

    @model_validator(mode="after")
    def _ordered_limits(self) -> Self:
        limits = [
            (name, rule.limit)
            for name in LEVELS
            if isinstance(rule := getattr(self, name), LimitRule)
        ]
        for (low_name, low), (high_name, high) in itertools.pairwise(limits):
            if low > high:
                raise ValueError(f"{low_name} ({low:g}) is above {high_name} ({high:g})")
        return self


class StorageProfile(_Strict):
    description: str = Field(min_length=1)
    citation: str | None = None
    """Where the condition comes from (pharmacopoeia, guideline, label claim, SOP)."""
    extends: str | None = None
    """Site profiles only: start from this profile (built-in or site) and override."""
    temperature: QuantityRules | None = None
    humidity: QuantityRules | None = None

    def rules_for(self, quantity: Quantity) -> QuantityRules | None:
        rules: QuantityRules | None = getattr(self, quantity)
        return rules


class MqttAlarmOutput(MqttBroker):
    host: str = "127.0.0.1"
    """Site broker for local alarm state (CONTRACT §4): retained, QoS 1."""
    client_id: str | None = None
    """Default ``gxpgate-<gateway id>-alarms``."""


class CoilOutput(_Strict):
    device: str
    """A ``modbus_tcp`` device of this config that drives the stack light or siren."""
    address: int = Field(ge=0, le=65535)
    """Coil address (0-based)."""
    unit_id: int | None = Field(default=None, ge=0, le=255)
    """Default: the device's own unit id."""
    when: Literal["unacknowledged", "active"] = "unacknowledged"
    """On while an alarm is active and not yet acknowledged (a siren), or while any is active
    (a stack light)."""
    severities: list[Severity] = Field(default_factory=lambda: list(_ALARM_ONLY), min_length=1)
    zones: list[str] = Field(default_factory=list)
    """Only alarms of these zones; empty: every zone."""
    refresh_secs: float = Field(default=30.0, gt=0, le=3600)
    """The coil is written again this often, so a restarted PLC is put right."""


Team = Literal["quality", "warehouse", "compliance", "logistics", "release"]


class AlarmRoutes(_Strict):
    """Which team reviews an alarm, per rule kind: every ``alarm`` record carries it as
    ``data.route`` so the central service can queue it for the right reviewers."""

    limit: Team = "quality"
    """Limit excursions (low-low … high-high)."""
    rate: Team = "quality"
    mkt: Team = "quality"
    sensor_fault: Team = "warehouse"
    """Bad or uncertain readings: a probe or its wiring to look at."""
    comm_loss: Team = "warehouse"
    high_water: Team = "compliance"
    """The gateway's buffer reached its high-water mark (evidence at risk)."""
    full: Team = "compliance"
    """The gateway's buffer reached its quota."""
    disk_full: Team = "compliance"
    """The disk holding the buffer is full: its reserve was given back, or writes fail."""
    wrong_zone: Team = "warehouse"
    """A product put away in a zone whose profile does not keep its required condition."""
    expired: Team = "quality"
    """An expired lot scanned at receiving or put-away."""
    expiring: Team = "logistics"
    """A lot received or put away that expires within ``exceptions.expiry_horizon_days``."""
    on_hold: Team = "release"
    """A lot or SSCC on the hold list scanned at picking or shipping."""
    not_received: Team = "logistics"
    """An SSCC shipped that was never received on this site."""
    tos_warning: Team = "quality"
    """A lot has used ``exceptions.tos_warn_share`` of its time-out-of-storage allowance."""
    tos_exhausted: Team = "release"
    """A lot has used its allowance (``exceptions.tos_alarm_share``): a disposition decision."""
    freezing: Team = "quality"
    """A do-not-freeze lot's zone read at or below 0 °C."""


class AlarmsConfig(_Strict):
    control_socket: Path | None = None
    """Unix socket for ``gxpgate alarms ack`` (default: ``gxpgate.sock`` beside the buffer)."""
    admin_group: str | None = None
    """OS group allowed to acknowledge through the socket (besides root and the service user)."""
    snapshot_secs: float = Field(default=60.0, ge=1, le=3600)
    """How often the rule state is checkpointed into the buffer; a restart replays the
    readings sealed since the last checkpoint."""
    mqtt: MqttAlarmOutput | None = None
    coils: list[CoilOutput] = Field(default_factory=list)
    routes: AlarmRoutes = Field(default_factory=AlarmRoutes)
    """The reviewing team per rule kind (``data.route``)."""
