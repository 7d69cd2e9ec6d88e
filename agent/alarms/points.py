"""Which rules watch which point: the site config resolved into the alarm engine's inputs.

Pure: config in, :class:`~gxpgate.agent.alarms.rules.PointRules` out. The alarm service and the
exposure book both start from it.
"""

from __future__ import annotations

from gxpgate.agent.alarms.rules import GatewayCondition, PointRules
from gxpgate.config import GatewayConfig
from gxpgate.drivers.record_model import point_recording

__all__ = ["GATEWAY_CONDITIONS", "point_rules"]

GATEWAY_CONDITIONS = (
    GatewayCondition("buffer", "high_water", "alarm", "%"),
    GatewayCondition("buffer", "full", "alarm", "%"),
    GatewayCondition("buffer", "disk_full", "alarm", None),
)
"""Conditions of the gateway itself that raise local alarms (see agent/health/capacity.py)."""


def point_rules(config: GatewayConfig) -> list[PointRules]:
    """Every point's rules: its zone's profile for its quantity, then the zone's override for
    that quantity, then the point's own override."""
    found: list[PointRules] = []
    for dev_id, dev in config.devices.items():
        # How often the device reports, and whether silence is normal (a subscription, a file
        # drop): its model says (``report_interval_secs``, ``changes_only``).
        interval, changes_only = dev.report_interval_secs, dev.changes_only
        for name, point in dev.points.items():
            zone_id = point.zone or dev.zone
            rules = config.rules_of(dev_id, name)
            mode, every, _deadband = point_recording(dev, point)
            record_interval = every if mode == "interval" else 0.0
            spec = (zone_id, dev_id, name, point.unit, rules, interval, changes_only)
            found.append(PointRules(*spec, record_interval))
    return found
