"""Identity resolution: which zone a device's point stands in, decided once from the config."""

from __future__ import annotations

from gxpgate.config.model import GatewayConfig

__all__ = ["ZoneMap"]


class ZoneMap:
    """(device, point) → zone id, precomputed at load so the hot path is one dict lookup."""

    def __init__(self, config: GatewayConfig) -> None:
        self._zones: dict[tuple[str, str], str] = {}
        self._device_zone: dict[str, str] = {}
        for dev_id, dev in config.devices.items():
            self._device_zone[dev_id] = dev.zone
            for name, point in dev.points.items():
                self._zones[(dev_id, name)] = point.zone or dev.zone

    def zone_of(self, device: str, point: str | None = None) -> str | None:
        if point is not None and (device, point) in self._zones:
            return self._zones[(device, point)]
        return self._device_zone.get(device)
