"""OPC UA device configuration. No I/O and no asyncua import: ``config validate`` runs this."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from gxpgate.drivers.record_model import PointRecording, RecordingOptions
from gxpgate.drivers.units import Unit

if TYPE_CHECKING:
    from gxpgate.drivers.base import BuildContext
    from gxpgate.drivers.opcua import OpcUaSource

__all__ = ["OpcUaDevice", "OpcUaPoint", "OpcUaSecurity"]

Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]


class OpcUaPoint(PointRecording):
    """One variable of an OPC UA server, by NodeId or by browse path."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_id: str | None = None
    """NodeId string, e.g. ``ns=2;s=ColdRoom1.Temperature`` or ``ns=3;i=1042``."""
    browse_path: str | None = None
    """Path from the Objects folder as ``nsidx:Name`` steps separated by ``/``, e.g.
    ``0:Objects/2:Warehouse/2:cold-room-1/2:temperature``; resolved again after every reconnect."""
    unit: Unit = "1"
    """UCUM unit code of the value: ``Cel``, ``%``, ``hPa``, ``1``."""
    monitored: bool = True
    """``false``: no rule watches this point, deliberately (a door contact nobody alarms on).
    Otherwise a point in a zone whose profile has rules must be watched by one, or ``gxpgate
    config validate`` says which point is unmonitored and why."""
    scale: float = 1.0
    """Engineering value = value × scale + offset + calibration_offset."""
    offset: float = 0.0
    calibration_offset: float = 0.0
    deadband_abs: float | None = Field(default=None, ge=0)
    """Absolute deadband for this point's monitored item (overrides the device's)."""
    zone: str | None = None
    """Zone of this point when it differs from the device's zone."""

    @model_validator(mode="after")
    def _one_address(self) -> OpcUaPoint:
        if (self.node_id is None) == (self.browse_path is None):
            raise ValueError("give exactly one of node_id or browse_path")
        return self


class OpcUaSecurity(BaseModel):
    """Message security. ``Basic256Sha256`` needs the gateway's application certificate and the
    server's certificate, trusted explicitly (``gxpgate opcua certificate`` creates the former)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Literal["None", "Basic256Sha256"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate_file: Path | None = None
    """The gateway's application certificate (DER or PEM)."""
    private_key_file: Path | None = None
    """Its private key (PEM)."""
    server_certificate_file: Path | None = None
    """The server's certificate; a server presenting any other is refused."""
    application_uri: str = "urn:gxpgate:gateway"
    """Must match the URI in the application certificate."""

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaSecurity:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError(
                "policy None goes with mode None; Basic256Sha256 needs Sign or SignAndEncrypt"
            )
        if self.policy != "None":
            missing = [
                name
                for name in ("certificate_file", "private_key_file", "server_certificate_file")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"{self.policy} needs {', '.join(missing)}")
        return self


class OpcUaDevice(RecordingOptions):
    """An OPC UA server (a cold-room controller, a building-management system)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["opcua"]
    endpoint: str = Field(pattern=r"^opc\.tcp://[^\s/]+")
    """Endpoint URL, e.g. ``opc.tcp://10.1.2.3:4840/``."""
    zone: str
    """Zone of the device's points, unless a point names its own."""
    mode: Literal["subscription", "polling"] = "subscription"
    """``subscription``: the server reports changes (monitored items); ``polling``: batched
    reads every ``poll_interval_secs`` within the server's MaxNodesPerRead."""
    poll_interval_secs: float = Field(default=10.0, gt=0, le=86400)
    """Polling mode: read interval."""
    publishing_interval_ms: int = Field(default=1000, ge=10, le=3_600_000)
    """Subscription mode: how often the server sends collected changes."""
    sampling_interval_ms: int = Field(default=1000, ge=0, le=3_600_000)
    """Subscription mode: how often the server samples each point."""
    queue_size: int = Field(default=10, ge=1, le=10000)
    """Subscription mode: changes the server keeps per point between publishes."""
    deadband_abs: float | None = Field(default=None, ge=0)
    """Subscription mode: report a change only when it exceeds this absolute amount."""
    timeout_ms: int = Field(default=5000, ge=100, le=120_000)
    """Per-request timeout; also bounds how long a dead connection goes unnoticed."""
    reconnect_max_secs: float = Field(default=60.0, gt=0, le=3600)
    """Cap of the jittered exponential backoff between reconnect attempts."""
    security: OpcUaSecurity = OpcUaSecurity()
    username: str | None = None
    password: SecretStr | None = None
    credentials_file: Path | None = None
    """File with the username on the first line and the password on the second (keeps the
    secret out of the config); instead of ``username``/``password``."""
    points: dict[Identifier, OpcUaPoint] = Field(min_length=1)

    @property
    def report_interval_secs(self) -> float:
        """How often the device reports: the publishing interval of a subscription, the poll
        interval otherwise."""
        if self.mode == "subscription":
            return self.publishing_interval_ms / 1000
        return self.poll_interval_secs

    @property
    def changes_only(self) -> bool:
        """A subscription reports changes only: silence is normal, and comm loss counts from
        the server going offline."""
        return self.mode == "subscription"

    def build(self, device_id: str, ctx: BuildContext) -> OpcUaSource:
        from gxpgate.drivers.opcua import OpcUaSource  # asyncua is imported only where it is used

        return OpcUaSource(device_id, self)

    @model_validator(mode="after")
    def _credentials(self) -> OpcUaDevice:
        if self.credentials_file is not None and (self.username or self.password):
            raise ValueError("set username/password or credentials_file, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self
