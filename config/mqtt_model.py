"""MQTT broker connections: the fields every MQTT client of the gateway shares, and the uplink.

:class:`MqttBroker` is the connection (address, TLS, credentials) used by the local alarm
output (``[alarms.mqtt]``) and by the MQTT uplink (``[uplink] transport = "mqtt"``).
:class:`MqttUplinkConfig` adds what the evidence uplink needs (CONTRACT §4).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

__all__ = ["MqttBroker", "MqttUplinkConfig"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttBroker(_Strict):
    host: str = Field(min_length=1)
    """Broker host name or address."""
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    """CA bundle to verify the broker with, instead of the system's (needs ``tls``)."""
    cert_file: Path | None = None
    """Client certificate (PEM) for mutual TLS (needs ``tls``)."""
    key_file: Path | None = None
    """Private key of the client certificate."""
    tls_verify: bool = True
    """Verify the broker's certificate (when ``tls``). Only switch off for a lab."""
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    """File holding the password (first line); keeps the secret out of the config."""

    file_fields: ClassVar[tuple[str, ...]] = ("ca_file", "cert_file", "key_file", "password_file")
    """Fields naming files: resolved against the config's folder, checked at start."""

    @model_validator(mode="after")
    def _one_password_source(self) -> Self:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set password or password_file, not both")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class MqttUplinkConfig(MqttBroker):
    """The MQTT uplink (CONTRACT §4): batches published QoS 1 to ``gxpgate/<gw>/evidence``."""

    transport: Literal["mqtt"]
    """``"mqtt"``: publish evidence to an MQTT broker instead of POSTing it over HTTP."""
    host: str = Field(min_length=1)
    """The enterprise broker (EMQX, HiveMQ, Mosquitto, …) the quality service consumes from."""
    port: int = Field(default=8883, ge=1, le=65535)
    client_id: str | None = None
    """Default ``gxpgate-<gateway id>-uplink``. Keep it stable and unique per gateway: the
    broker keeps the session by it."""
    tls: bool = True
    """TLS to the broker (on by default: evidence crosses the site's WAN)."""
    protocol: Literal["5", "3.1.1"] = "5"
    """MQTT version. With 3.1.1 a broker that drops a batch (ACL, size limit) still
    acknowledges it, so refusals go unnoticed: use it only for a broker without MQTT 5."""
    session_expiry_secs: int = Field(default=86400, ge=0, le=4294967295)
    """How long the broker keeps the gateway's session while it is disconnected (MQTT 5)."""
    keepalive_secs: int = Field(default=30, ge=5, le=3600)
    """A broker silent for 1.5 times this long is taken as gone and reconnected."""
    connect_timeout_secs: float = Field(default=15.0, gt=0, le=600)
    batch_max_records: int = Field(default=1000, ge=1, le=10000)
    """Records per message (consecutive, gzip-compressed)."""
    max_payload_kb: int = Field(default=1024, ge=1, le=262143)
    """Largest message the broker accepts, in KiB (EMQX and Mosquitto default to 1 MB
    packets; an MQTT 5 broker's own smaller limit is learned when connecting). Batches are
    cut to fit."""
    inflight_max_batches: int = Field(default=4, ge=1, le=64)
    """Batches published and not yet acknowledged at any time (an MQTT 5 broker's
    ``Receive Maximum`` lowers it)."""
    backoff_initial_secs: float = Field(default=1.0, gt=0, le=600)
    backoff_max_secs: float = Field(default=300.0, gt=0, le=3600)
    """Reconnects and retries of refused batches back off exponentially, with jitter, from
    initial to max."""

    @model_validator(mode="after")
    def _tls_options_need_tls(self) -> Self:
        if not self.tls:
            given = [n for n in ("ca_file", "cert_file", "key_file") if getattr(self, n)]
            if given or not self.tls_verify:
                raise ValueError(f"{', '.join(given) or 'tls_verify'} needs tls = true")
        if (self.password is not None or self.password_file is not None) and not self.username:
            raise ValueError("a password needs a username")
        return self
