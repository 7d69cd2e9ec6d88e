"""Local alarm outputs that work with the WAN down: the log, MQTT (retained), Modbus coils.

Outputs see only *sealed* alarm records (seal before output). None of them can hold up
sealing: MQTT publishes are handed to paho's own thread; coil writes run in their own task
and are retried with backoff. A failing output is logged and sealed as one ``audit`` record per
episode (``alarm_output_failed`` / ``alarm_output_recovered``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from gxpgate.agent._retry import Backoff, Episode
from gxpgate.agent.recording.audit import ALARM_OUTPUT_FAILED, ALARM_OUTPUT_RECOVERED
from gxpgate.config.model import GatewayConfig
from gxpgate.config.rules_model import CoilOutput, MqttAlarmOutput
from gxpgate.drivers.base import DriverError
from gxpgate.drivers.modbus_model import ModbusTcpDevice

if TYPE_CHECKING:
    from gxpgate.agent.alarms.mqtt_client import MqttSettings, RetainedPublisher
    from gxpgate.drivers.modbus_coil import CoilWriter

__all__ = ["AlarmOutputs", "alarm_topic"]

log = logging.getLogger(__name__)

Audit = Callable[[dict[str, Any]], Awaitable[None]]
ActiveAlarms = Callable[[], Iterable[Mapping[str, Any]]]


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


GATEWAY_TOPIC_ZONE = "_gateway"
"""The topic's zone level for alarms of the gateway itself (no zone id starts with ``_``)."""


def alarm_topic(gw: str, zone: str | None, rule: str) -> str:
    """CONTRACT §4: ``gxpgate/{gw}/alarms/{zone}/{rule}``."""
    return f"gxpgate/{gw}/alarms/{zone or GATEWAY_TOPIC_ZONE}/{rule}"


def _episode(output: str, audit: Audit) -> Episode:
    """Says a failing output once, and its recovery once."""
    return Episode(
        log,
        "alarm_output.failed output=%s error=%s",
        "alarm_output.recovered output=%s",
        output,
        audit=audit,
        events=(ALARM_OUTPUT_FAILED, ALARM_OUTPUT_RECOVERED),
        fields={"output": output},
    )


class _Coil:
    """One coil that follows the alarms: written on change and every ``refresh_secs``."""

    def __init__(self, spec: CoilOutput, device: ModbusTcpDevice, audit: Audit) -> None:
        self.spec = spec
        self.device = device
        self.unit = spec.unit_id if spec.unit_id is not None else device.unit_id
        self.name = f"coil:{spec.device}:{spec.address}"
        self.episode = _episode(self.name, audit)
        self.wanted = False
        self.written: bool | None = None
        self.changed = asyncio.Event()
        self._writer: CoilWriter | None = None

    def wants(self, alarms: Iterable[Mapping[str, Any]]) -> bool:
        spec = self.spec
        for alarm in alarms:
            if alarm["severity"] not in spec.severities:
                continue
            if spec.zones and alarm["zone"] not in spec.zones:
                continue
            if spec.when == "active" or not alarm["acked"]:
                return True
        return False

    def update(self, alarms: Iterable[Mapping[str, Any]]) -> None:
        wanted = self.wants(alarms)
        if wanted != self.wanted or self.written is None:
            self.wanted = wanted
            self.changed.set()

    async def run(self) -> None:
        backoff = Backoff(0.5, 30.0)
        while True:
            self.changed.clear()
            value = self.wanted
            try:
                await self._write(value)
            except (DriverError, OSError, TimeoutError) as exc:
                await self.episode.failed(f"{type(exc).__name__}: {exc}")
                await self.aclose()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff.next_delay()):
                        await self.changed.wait()
                continue
            backoff.reset()
            if self.written != value:
                log.info("alarm_output.coil output=%s value=%s", self.name, value)
            self.written = value
            await self.episode.recovered()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.spec.refresh_secs):
                    await self.changed.wait()

    async def _write(self, value: bool) -> None:
        if self._writer is None:
            from gxpgate.drivers.modbus_coil import (
                CoilWriter,  # pymodbus only when a coil is configured
            )

            self._writer = CoilWriter(self.spec.device, self.device, self.unit)
        await self._writer.write(self.spec.address, value)

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()  # the next write connects again


def _mqtt_settings(gw: str, cfg: MqttAlarmOutput) -> MqttSettings:
    from gxpgate.agent.alarms.mqtt_client import MqttSettings

    password = cfg.password.get_secret_value() if cfg.password is not None else None
    if cfg.password_file is not None:
        password = _first_line(cfg.password_file)
    return MqttSettings(
        host=cfg.host,
        port=cfg.port,
        client_id=cfg.client_id or f"gxpgate-{gw}-alarms",
        tls=cfg.tls,
        ca_file=cfg.ca_file,
        cert_file=cfg.cert_file,
        key_file=cfg.key_file,
        insecure_skip_verify=not cfg.tls_verify,
        username=cfg.username,
        password=password,
    )


def _first_line(path: Path) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0].strip() if lines else ""


class AlarmOutputs:
    """Everything that announces a sealed alarm transition locally."""

    def __init__(self, config: GatewayConfig, audit: Audit, active: ActiveAlarms) -> None:
        self.gw = config.gateway.id
        self.audit = audit
        self.active = active
        self.published = 0
        self.mqtt: RetainedPublisher | None = None
        self._mqtt_episode = _episode("mqtt", audit)
        if config.alarms.mqtt is not None:
            # paho is loaded only by a gateway that publishes: 0.9 MiB of RSS otherwise.
            from gxpgate.agent.alarms.mqtt_client import RetainedPublisher

            self.mqtt = RetainedPublisher(
                _mqtt_settings(self.gw, config.alarms.mqtt), on_state=self._mqtt_state
            )
        self.coils: list[_Coil] = []
        for spec in config.alarms.coils:
            device = config.devices[spec.device]
            assert isinstance(device, ModbusTcpDevice)  # checked at config load
            self.coils.append(_Coil(spec, device, audit))
        self._tasks: list[asyncio.Task[None]] = []
        self._episodes: set[asyncio.Task[None]] = set()

    def _mqtt_state(self, event: str, error: str | None) -> None:
        # paho's thread hands these to the loop; seal them from a task.
        if event == "connected":
            task = self._mqtt_episode.recovered()
        else:
            task = self._mqtt_episode.failed(f"{event}: {error or 'no reason given'}")
        spawned = asyncio.get_running_loop().create_task(task)
        self._episodes.add(spawned)
        spawned.add_done_callback(self._episodes.discard)

    async def start(self) -> None:
        if self.mqtt is not None:
            await self.mqtt.start()
        loop = asyncio.get_running_loop()
        for coil in self.coils:
            coil.update(self.active())
            self._tasks.append(loop.create_task(coil.run(), name=coil.name))

    async def stop(self) -> None:
        for task in [*self._tasks, *self._episodes]:
            task.cancel()
        for task in [*self._tasks, *self._episodes]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for coil in self.coils:
            await coil.aclose()
        if self.mqtt is not None:
            await self.mqtt.stop()

    def sealed(self, record: Mapping[str, Any]) -> None:
        """An ``alarm`` record has been sealed: announce it."""
        data = record["data"]
        template = "alarm.%s id=%s zone=%s rule=%s severity=%s value=%s limit=%s lots=%d"
        args = [
            data["state"], data["alarm_id"], record["zone"] or GATEWAY_TOPIC_ZONE, data["rule"],
            data["severity"], _num(data["value"]), _num(data["limit"]), len(data["lots"]),
        ]  # fmt: skip
        if data.get("by"):
            template += " by=%s"  # a key=value of its own, so a name with spaces is quoted
            args.append(data["by"])
        log.warning(template, *args)
        if self.mqtt is not None:
            topic = alarm_topic(self.gw, record["zone"], data["rule"])
            payload = {**data, "zone": record["zone"], "seq": record["seq"], "at": record["at"]}
            self.mqtt.publish(topic, orjson.dumps(payload))
            self.published += 1
        for coil in self.coils:
            coil.update(self.active())
