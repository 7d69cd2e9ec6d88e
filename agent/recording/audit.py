"""The audit vocabulary: every name an ``audit`` record's ``data["event"]`` can carry, each with
what it means and the fields of ``data`` beside it.

The agent's own events are defined here. What a driver reports about its device is named in
``drivers/events.py`` (the drivers never import the agent), and the key change the evidence
contract defines in ``agent/evidence`` (a leaf: it imports nothing of the rest of the agent);
:data:`EVENTS` lists all of them, and README.md ("Audit records") documents each one. The
buffer seals nothing of its own: a repair or a schema migration it makes on open is sealed by
the agent (``buffer_repaired``, ``buffer_migrated``).

Code that seals or reads an audit event uses these constants, never a string literal
(``tests/test_audit_vocabulary.py`` checks the sources, and the README table against
:data:`EVENTS`). They are plain ``str``, for the reason given in ``drivers/events.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from gxpgate.agent.evidence import KEY_ROTATED
from gxpgate.drivers.events import DRIVER_EVENTS, EventInfo

__all__ = [
    "AGENT_EVENTS",
    "AGENT_STARTED",
    "AGENT_STOPPED",
    "ALARM_ACKNOWLEDGED",
    "ALARM_OUTPUT_FAILED",
    "ALARM_OUTPUT_RECOVERED",
    "BUFFER_BELOW_HIGH_WATER",
    "BUFFER_FULL",
    "BUFFER_HIGH_WATER",
    "BUFFER_MIGRATED",
    "BUFFER_PRUNED_EARLY",
    "BUFFER_REPAIRED",
    "BUFFER_THINNING_ENDED",
    "BUFFER_WRITE_FAILED",
    "CHAIN_REPLACED",
    "CLOCK_STEP",
    "CLOCK_SYNC",
    "CONTROL_SOCKET_UNAVAILABLE",
    "DEVICE_FAILING",
    "DEVICE_OFFLINE",
    "DEVICE_ONLINE",
    "DEVICE_RECOVERED",
    "DRIVER_EVENTS",
    "EVENTS",
    "KEY_ROTATED",
    "METRICS_UNAVAILABLE",
    "POLICY_LOADED",
    "POLICY_RELOAD_FAILED",
    "SCAN_INVALID",
    "SCAN_OVERFLOW",
    "UPLINK_ACK_BEYOND_SENT",
    "UPLINK_NO_SUBSCRIBERS",
    "UPLINK_RECORDS_PRUNED",
    "UPLINK_REJECTED",
    "EventInfo",
]

# The agent (agent/service/runtime.py)
AGENT_STARTED: Final = "agent_started"
AGENT_STOPPED: Final = "agent_stopped"
CHAIN_REPLACED: Final = "chain_replaced"
BUFFER_REPAIRED: Final = "buffer_repaired"
BUFFER_MIGRATED: Final = "buffer_migrated"
CONTROL_SOCKET_UNAVAILABLE: Final = "control_socket_unavailable"
METRICS_UNAVAILABLE: Final = "metrics_unavailable"
# Product master and hold list (agent/custody/policy.py)
POLICY_LOADED: Final = "policy_loaded"
POLICY_RELOAD_FAILED: Final = "policy_reload_failed"
# The clock (agent/health/clock.py)
CLOCK_SYNC: Final = "clock_sync"
CLOCK_STEP: Final = "clock_step"
# Devices (agent/devices/supervisor.py)
DEVICE_OFFLINE: Final = "device_offline"
DEVICE_ONLINE: Final = "device_online"
DEVICE_FAILING: Final = "device_failing"
DEVICE_RECOVERED: Final = "device_recovered"
# Scanners (agent/custody/epcis.py)
SCAN_INVALID: Final = "scan_invalid"
SCAN_OVERFLOW: Final = "scan_overflow"
# Alarms (agent/alarms/service.py, agent/alarms/outputs.py)
ALARM_ACKNOWLEDGED: Final = "alarm_acknowledged"
ALARM_OUTPUT_FAILED: Final = "alarm_output_failed"
ALARM_OUTPUT_RECOVERED: Final = "alarm_output_recovered"
# The buffer (agent/recording/recorder.py, agent/health/capacity.py)
BUFFER_WRITE_FAILED: Final = "buffer_write_failed"
BUFFER_HIGH_WATER: Final = "buffer_high_water"
BUFFER_BELOW_HIGH_WATER: Final = "buffer_below_high_water"
BUFFER_FULL: Final = "buffer_full"
BUFFER_PRUNED_EARLY: Final = "buffer_pruned_early"
BUFFER_THINNING_ENDED: Final = "buffer_thinning_ended"
# The uplink (agent/uplink/http.py, agent/uplink/mqtt.py)
UPLINK_REJECTED: Final = "uplink_rejected"
UPLINK_ACK_BEYOND_SENT: Final = "uplink_ack_beyond_sent"
UPLINK_RECORDS_PRUNED: Final = "uplink_records_pruned"
UPLINK_NO_SUBSCRIBERS: Final = "uplink_no_subscribers"

# Fields of every capacity event (agent/health/capacity.py), before the event's own.
_USE = ("used_bytes", "quota_bytes", "used_pct", "high_water_pct", "pending")

AGENT_EVENTS: Final[Mapping[str, EventInfo]] = MappingProxyType(
    {
        AGENT_STARTED: EventInfo(
            "the agent started: what it runs, with which config and key",
            ("version", "config_sha256", "config_path", "key_id", "devices"),
        ),
        AGENT_STOPPED: EventInfo("the agent stops (sealed in the final flush)", ("reason",)),
        CHAIN_REPLACED: EventInfo(
            "first start on a chain that replaces one `gxpgate buffer reset` set aside",
            ("previous",),
        ),
        BUFFER_REPAIRED: EventInfo(
            "the buffer repaired something when it was opened, or the agent a rule's memory in"
            " the checkpoint that it could not read, which starts afresh (one record per repair)",
            ("what",),
        ),
        BUFFER_MIGRATED: EventInfo(
            "the buffer was converted to a newer schema when it was opened; every record "
            "exports as before",
            ("from_schema", "to_schema", "records", "kept_whole"),
        ),
        CONTROL_SOCKET_UNAVAILABLE: EventInfo(
            "the control socket for `gxpgate alarms ack` could not be opened", ("path", "error")
        ),
        METRICS_UNAVAILABLE: EventInfo(
            "the metrics endpoint could not listen", ("address", "port", "error")
        ),
        POLICY_LOADED: EventInfo(
            "the product master and hold list in force, at start and after each SIGHUP reload",
            ("reason", "products", "hold_list"),
        ),
        POLICY_RELOAD_FAILED: EventInfo(
            "a SIGHUP reload found errors: the policy in force is kept",
            ("reason", "error_count", "errors", "files", "in_force"),
        ),
        CLOCK_SYNC: EventInfo(
            "the clock's NTP synchronisation, at start and when it changes",
            ("synchronized", "source", "at_start"),
        ),
        CLOCK_STEP: EventInfo(
            "the wall clock jumped by more than `clock.step_threshold_secs`",
            ("before", "after", "step_secs", "threshold_secs"),
        ),
        DEVICE_OFFLINE: EventInfo("a device stopped answering (once per episode)", ("error",)),
        DEVICE_ONLINE: EventInfo("an offline device answers again"),
        DEVICE_FAILING: EventInfo(
            "a device answers, but with nothing but bad values (once per episode)", ("error",)
        ),
        DEVICE_RECOVERED: EventInfo("a failing device answers with a usable value again"),
        SCAN_INVALID: EventInfo(
            "an unusable read (invalid GS1, a no-read, line noise, an undecodable EPC), sealed "
            "after its custody record",
            ("reason", "scan"),
        ),
        SCAN_OVERFLOW: EventInfo(
            "reads beyond the scanner's rate limit were refused but counted (one per second)",
            ("count", "first_at", "last_at", "max_reads_per_sec", "burst_reads"),
        ),
        ALARM_ACKNOWLEDGED: EventInfo(
            "an alarm was acknowledged through the control socket, and by whom",
            ("alarm_id", "rule", "by", "comment", "os_user", "os_uid"),
        ),
        ALARM_OUTPUT_FAILED: EventInfo(
            "a local alarm output (MQTT, coil) cannot be driven (once per episode)",
            ("output", "error"),
        ),
        ALARM_OUTPUT_RECOVERED: EventInfo("a failed local alarm output works again", ("output",)),
        BUFFER_WRITE_FAILED: EventInfo(
            "the buffer cannot commit (disk full): records are kept in memory and retried",
            ("error",),
        ),
        BUFFER_HIGH_WATER: EventInfo(
            "undelivered records fill the buffer to `buffer.high_water_pct` of its quota", _USE
        ),
        BUFFER_BELOW_HIGH_WATER: EventInfo("the buffer is below its high-water mark again", _USE),
        BUFFER_FULL: EventInfo(
            "the buffer reached its quota; `policy` is what it does now", (*_USE, "policy")
        ),
        BUFFER_PRUNED_EARLY: EventInfo(
            "at the quota, delivered records were pruned before their retention ran out",
            (*_USE, "records", "used_after"),
        ),
        BUFFER_THINNING_ENDED: EventInfo(
            "the buffer is below its quota again: how many readings thinning left out, of which "
            "points, between which times",
            (*_USE, "readings_left_out", "by_point", "since", "until", "interval_secs"),
        ),
        UPLINK_REJECTED: EventInfo(
            "the quality service or broker refused a batch or gave an invalid answer (once per "
            "episode); `status`, `reason`, `seq` over HTTP, the rest over MQTT",
            (
                "status",
                "error",
                "reason",
                "seq",
                "transport",
                "reason_code",
                "first_seq",
                "last_seq",
            ),
        ),
        UPLINK_ACK_BEYOND_SENT: EventInfo(
            "the service claims records beyond what this gateway sent (not believed; once per "
            "episode)",
            ("endpoint", "claimed_through", "sent_through"),
        ),
        UPLINK_RECORDS_PRUNED: EventInfo(
            "the service asks for records retention already pruned: an operator is needed",
            ("first_seq", "last_seq"),
        ),
        UPLINK_NO_SUBSCRIBERS: EventInfo(
            "the MQTT broker has no subscriber for the evidence topic (once per episode)",
            ("topic", "first_seq"),
        ),
        KEY_ROTATED: EventInfo(
            "a key change, signed by the old key (CONTRACT §2); verifiers learn the new key from "
            "it. Not sealed by this gateway: it refuses to start with a changed key",
            ("public_key",),
        ),
    }
)

EVENTS: Final[Mapping[str, EventInfo]] = MappingProxyType({**AGENT_EVENTS, **DRIVER_EVENTS})
"""Every audit event the gateway knows, the drivers' included: name → meaning and fields."""
