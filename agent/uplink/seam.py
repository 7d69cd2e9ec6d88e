"""The uplink seam: :class:`Uplink`, and :func:`build_uplink` for the one the config names.

Two transports sit behind it: HTTP (:class:`gxpgate.agent.uplink.http.Forwarder`, CONTRACT §3) and
MQTT (:class:`gxpgate.agent.uplink.mqtt.MqttUplink`, CONTRACT §4). Both read the buffer from its
cursor onwards, move the cursor only over what the other side acknowledged, and never hold up
sealing. What they share is in :mod:`gxpgate.agent.uplink.base`.

Exceptions::

    MqttUplinkError     the MQTT uplink cannot be set up (TLS or password file unreadable)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, Self

import httpx

from gxpgate.agent.recording.sealing import Fact
from gxpgate.agent.uplink.base import ErrorKind, MqttUplinkError, UplinkStats, classify_error
from gxpgate.agent.uplink.http import Forwarder
from gxpgate.buffer import Outbox
from gxpgate.config.model import UplinkConfig
from gxpgate.config.mqtt_model import MqttUplinkConfig

__all__ = [
    "ErrorKind",
    "MqttUplinkError",
    "Uplink",
    "UplinkStats",
    "build_uplink",
    "classify_error",
]


class Uplink(Protocol):
    """Delivers the buffer's records from its cursor onwards; an async context manager.

    Everything is called on the event loop. Entering connects (or starts connecting) and
    leaving disconnects; :meth:`run` runs inside, until cancelled; :meth:`flush` comes after
    :meth:`run` has ended (cancelled), never beside it. :meth:`wake` may be called at any time,
    also before :meth:`run` starts. Failures never raise out of :meth:`run` or :meth:`flush`:
    they are counted in :attr:`stats` and retried.
    """

    stats: UplinkStats
    """Delivery and failures so far, for health, metrics and ``gxpgate status``."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def run(self) -> None:
        """Deliver what is pending, then wait for :meth:`wake` (or a few seconds); forever."""
        ...

    def wake(self) -> None:
        """New records are committed (called by the recorder)."""
        ...

    async def flush(self, deadline_secs: float) -> bool:
        """Deliver until nothing is pending; True when all is delivered, False when the
        deadline passed or the uplink is failing (the buffer keeps what is left)."""
        ...


def build_uplink(
    config: UplinkConfig | MqttUplinkConfig,
    outbox: Outbox,
    record: Callable[[Fact], Awaitable[None]],
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Uplink:
    """The uplink ``config`` names (``[uplink] transport``), sealing its audit facts through
    ``record``. ``transport`` replaces the HTTP uplink's network (tests). Raises
    :class:`MqttUplinkError` when the MQTT uplink's files cannot be read."""
    if isinstance(config, MqttUplinkConfig):
        # paho is loaded only by a gateway whose uplink is MQTT: 0.9 MiB of RSS otherwise.
        from gxpgate.agent.uplink.mqtt import MqttUplink

        return MqttUplink(outbox, config, record)
    return Forwarder(outbox, config, record, transport=transport)
