"""The control channel's operations on alarms (``gxpgate alarms list|ack``; the protocol is in
agent/service/control.py): requests checked and answered here, acted on by the alarm service."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gxpgate.agent.alarms.rules import AlarmView, RuleError
from gxpgate.agent.alarms.service import ACK_WAIT_SECS, AlarmService
from gxpgate.agent.service.control import Peer

__all__ = ["AlarmOps"]


class AlarmOps:
    """``list`` and ``ack`` for the control server's handler."""

    def __init__(self, alarms: AlarmService) -> None:
        self.alarms = alarms

    async def handle(self, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        op = request.get("op")
        if op == "list":
            return {"ok": True, "alarms": [_view(v) for v in self.alarms.views()]}
        if op == "ack":
            return await self._ack(request, peer)
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def _ack(self, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        alarm_id = str(request.get("alarm_id") or "").strip()
        by = str(request.get("by") or "").strip()
        comment = str(request.get("comment") or "").strip()
        if not alarm_id or not by or not comment:
            return {"ok": False, "error": "alarm_id, by and comment are all required"}
        os_user = peer.user or f"uid {peer.uid}"
        try:
            seq = await self.alarms.acknowledge(alarm_id, by, comment, os_user, peer.uid)
        except RuleError as exc:
            return {"ok": False, "error": str(exc)}
        except TimeoutError:
            return {
                "ok": False,
                "error": f"acknowledgement queued but not sealed within {ACK_WAIT_SECS:g} s",
            }
        return {"ok": True, "alarm_id": alarm_id, "seq": seq}


def _view(view: AlarmView) -> dict[str, Any]:
    return {
        "alarm_id": view.alarm_id,
        "rule": view.rule,
        "zone": view.zone,
        "severity": view.severity,
        "state": view.state,
        "started_at": datetime.fromtimestamp(view.started_at, UTC).isoformat(),
        "value": view.value,
        "limit": view.limit,
    }
