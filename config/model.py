"""The site configuration: one TOML file, validated strictly by these pydantic models.

Unknown keys are errors everywhere. Device models live beside their drivers and are composed
here in a union tagged by ``type``. Field docstrings are the user documentation; the commented
example (``gxpgate config example``) is kept in step with them by a test.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    IPvAnyAddress,
    SecretStr,
    Tag,
    model_validator,
)

from gxpgate.config.exceptions_model import ExceptionsConfig
from gxpgate.config.mqtt_model import MqttUplinkConfig
from gxpgate.config.products import HoldListConfig, ProductsConfig
from gxpgate.config.profiles import BUILTIN_PROFILES, resolve_profile
from gxpgate.config.rules_model import QUANTITY_UNITS, AlarmsConfig, QuantityRules, StorageProfile
from gxpgate.drivers.filedrop_model import CsvDropDevice
from gxpgate.drivers.gs1 import CSET82, gs1_check_digit
from gxpgate.drivers.logger_model import SerialLoggerDevice
from gxpgate.drivers.modbus_model import ModbusRtuBus, ModbusRtuDevice, ModbusTcpDevice
from gxpgate.drivers.opcua_model import OpcUaDevice
from gxpgate.drivers.scanner_model import BarcodeScannerDevice, RfidReaderDevice

__all__ = [
    "DEVICE_TYPES",
    "UPLINK_TRANSPORTS",
    "AlarmsConfig",
    "BufferConfig",
    "ClockConfig",
    "DeviceConfig",
    "GatewayConfig",
    "GatewayIdentity",
    "MetricsConfig",
    "MqttUplinkConfig",
    "SigningConfig",
    "UplinkConfig",
    "ZoneConfig",
]

_GATEWAY_ID = r"^[a-z0-9][a-z0-9-]{0,62}$"
_IDENTIFIER = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
_URL = r"^https?://[^\s/]+"
_POINT_KEY = r"^[a-z0-9][a-z0-9_.-]*\.[^.]+$"
GatewayId = Annotated[str, Field(pattern=_GATEWAY_ID)]
Identifier = Annotated[str, Field(pattern=_IDENTIFIER)]
PATTERN_WORDS = {
    _GATEWAY_ID: "must be 1 to 63 lowercase letters, digits or hyphens, starting with a letter "
    "or digit",
    _IDENTIFIER: "must be 1 to 63 lowercase letters, digits, '_', '.' or '-', starting with a "
    "letter or digit",
    _URL: "must be an http:// or https:// URL with a host, e.g. https://quality.example.com",
    _POINT_KEY: 'must be "DEVICE.POINT", e.g. "cold-room-1-probe.temperature"',
    r"^opc\.tcp://[^\s/]+": "must be an opc.tcp:// URL with a host, e.g. "
    "opc.tcp://192.0.2.20:4840/",
    r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$": "must be a URI (scheme:rest, no spaces), e.g. "
    "urn:epc:id:sgln:0614141.00001.dock-1",
    r"^[0-9]{6,12}$": "must be 6 to 12 digits",
    r"\S": "must not be blank",
}
"""What a site engineer reads instead of a regular expression."""

DeviceConfig = Annotated[
    ModbusTcpDevice
    | ModbusRtuDevice
    | OpcUaDevice
    | SerialLoggerDevice
    | CsvDropDevice
    | BarcodeScannerDevice
    | RfidReaderDevice,
    Field(discriminator="type"),
]
DEVICE_TYPES = (
    "modbus_tcp",
    "modbus_rtu",
    "opcua",
    "serial_logger",
    "csv_drop",
    "barcode_scanner",
    "rfid_reader",
)


def _gln_extension(text: str) -> bool:
    return 0 < len(text) <= 20 and set(text) <= CSET82


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewayIdentity(_Strict):
    id: GatewayId
    """Gateway id, the ``gw`` of every record: lowercase letters, digits and ``-``."""
    site: str = Field(min_length=1)
    """Human-readable site name, for the operator's and the auditor's benefit."""
    gln: str | None = Field(default=None, pattern=r"^[0-9]{13}$")
    """GS1 Global Location Number of the site (13 digits), e.g. ``"0614141000012"``. EPCIS
    events then name each scanner's ``read_point`` and each zone's ``biz_location`` as an SGLN
    with the device or zone id as GLN extension (``urn:epc:id:sgln:0614141.00001.dock-door-1``),
    unless the device sets them itself. Without it they are private ``urn:gxpgate:…`` URIs that
    trading partners cannot resolve (``config validate`` warns)."""

    @model_validator(mode="after")
    def _gln_check_digit(self) -> GatewayIdentity:
        if self.gln is not None:
            expected = gs1_check_digit(self.gln[:12])
            if int(self.gln[12]) != expected:
                why = f"GLN {self.gln}: check digit is {self.gln[12]}, expected {expected}"
                raise ValueError(why)
        return self


class SigningConfig(_Strict):
    key_file: Path
    """Ed25519 private key (PKCS#8 PEM, mode 0600). When ``$CREDENTIALS_DIRECTORY`` is set
    (systemd ``LoadCredential``) and holds a file of the same name, that file is used."""


class BufferConfig(_Strict):
    path: Path
    """SQLite database holding every sealed record until delivered (and for the retention)."""
    retention_days: float = Field(default=30.0, ge=0)
    """How long delivered records are kept after the service acknowledged them."""
    quota_mb: float = Field(default=2048, ge=0.25, le=16 * 1024 * 1024, allow_inf_nan=False)
    """Disk space the buffer may use, in MiB (1 MiB = 1,048,576 bytes). Undelivered records are
    never deleted to stay within it: see ``high_water_pct`` and ``at_quota``."""
    reserve_mb: float = Field(default=16, ge=0, le=1024, allow_inf_nan=False)
    """Space (MiB) held back beside the buffer in ``<path>.reserve`` and given back the moment
    the disk is full, so the gateway goes on sealing (and can start) on a disk that something
    else filled, while the local alarm ``gateway.buffer.disk_full`` says so. 0: no reserve."""
    high_water_pct: float = Field(default=80.0, gt=0, lt=100)
    """Share of the quota at which the gateway seals a ``buffer_high_water`` audit record and
    raises the local alarm ``gateway.buffer.high_water`` (cleared 5 points below)."""
    at_quota: Literal["thin_readings", "keep_sealing"] = "thin_readings"
    """What happens at the quota, after delivered records have been pruned early to make room
    (the service holds them). ``thin_readings``: alarm, custody and audit records are always
    sealed, and so is every reading that is not good, carries a logger resume point, or could
    start or end an alarm; other readings are sealed at most one per point per
    ``thin_interval_secs``, and how many were left out is sealed when thinning ends.
    ``keep_sealing``: everything is sealed beyond the quota until the disk itself is full.
    Either way the ``gateway.buffer.full`` alarm is raised."""
    thin_interval_secs: float = Field(default=60.0, gt=0, le=3600)
    """While thinning: the longest gap between sealed in-spec readings of one point."""
    commit_interval_ms: int = Field(default=200, ge=1, le=10000)
    """Longest a record waits to be committed together with others (group commit)."""


class ClockConfig(_Strict):
    step_threshold_secs: float = Field(default=2.0, gt=0, le=3600)
    """A wall-clock jump against the monotonic clock larger than this is sealed as a
    ``clock_step`` audit record with the time before and after."""
    sync_check_secs: float = Field(default=60.0, ge=1, le=3600)
    """How often NTP synchronisation is checked (``adjtimex``, else ``timedatectl``); the
    state is sealed as ``clock_sync`` at start and whenever it changes."""
    unsynced_readings: Literal["flag", "accept"] = "flag"
    """Readings taken while the clock is known not to be synchronised: ``flag`` adds
    ``"clock_unsynced": true`` to their ``data``; ``accept`` seals them unmarked."""


class MetricsConfig(_Strict):
    enabled: bool = True
    """Serve health and metrics in the Prometheus text format at ``/metrics``; ``gxpgate
    status`` reads them there."""
    address: IPvAnyAddress = IPv4Address("127.0.0.1")
    """Address to listen on. Loopback by default: the endpoint has no authentication and names
    devices and zones; for a remote Prometheus put a TLS reverse proxy in front of it."""
    port: int = Field(default=19720, ge=1, le=65535)
    """TCP port; 19720 lies outside Prometheus's exporter range 9100-9999 (fully allocated)
    and below Linux's ephemeral ports."""


class UplinkConfig(_Strict):
    transport: Literal["http"] = "http"
    """``"http"`` (the default): POST to the quality service (CONTRACT §3). ``"mqtt"``:
    publish to a broker (CONTRACT §4), configured by the keys of the MQTT variant."""
    url: str = Field(pattern=_URL)
    """Base URL of the central quality service (``/v1/evidence`` is appended)."""
    token: SecretStr | None = None
    """Bearer token. Prefer ``token_file`` so the secret stays out of the config."""
    token_file: Path | None = None
    """File holding the bearer token (first line)."""
    tls_verify: bool = True
    """Verify the service's TLS certificate. Only switch off for a lab."""
    ca_file: Path | None = None
    """CA bundle to verify the service with, instead of the system's."""
    client_cert_file: Path | None = None
    """Client certificate (PEM) for mutual TLS."""
    client_key_file: Path | None = None
    """Private key of the client certificate."""
    batch_max_records: int = Field(default=1000, ge=1, le=10000)
    timeout_secs: float = Field(default=15.0, gt=0, le=600)
    backoff_initial_secs: float = Field(default=1.0, gt=0, le=600)
    backoff_max_secs: float = Field(default=300.0, gt=0, le=3600)

    file_fields: ClassVar[tuple[str, ...]] = (
        "token_file",
        "ca_file",
        "client_cert_file",
        "client_key_file",
    )
    """Fields naming files: resolved against the config's folder, checked at start."""

    @model_validator(mode="after")
    def _one_token_source(self) -> UplinkConfig:
        if self.token is not None and self.token_file is not None:
            raise ValueError("set token or token_file, not both")
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("client_cert_file and client_key_file go together")
        return self


UPLINK_TRANSPORTS = ("http", "mqtt")


def _uplink_transport(value: Any) -> str | None:
    """The tag of an ``[uplink]`` table: ``transport``, ``"http"`` when absent."""
    if isinstance(value, dict):
        transport = value.get("transport", "http")
        return transport if isinstance(transport, str) else None
    return getattr(value, "transport", None)


Uplink = Annotated[
    Annotated[UplinkConfig, Tag("http")] | Annotated[MqttUplinkConfig, Tag("mqtt")],
    Discriminator(_uplink_transport),
]


class ZoneConfig(_Strict):
    profile: str
    """Storage profile the zone keeps: a built-in profile or one under ``[profiles]``."""
    name: str | None = None
    """Display name."""
    rules: dict[Literal["temperature", "humidity"], QuantityRules] = Field(default_factory=dict)
    """Overrides of the profile's rules for this zone, per quantity."""
    points: dict[Annotated[str, Field(pattern=_POINT_KEY)], QuantityRules] = Field(
        default_factory=dict
    )
    """Overrides for one point, keyed ``"DEVICE.POINT"``; also gives rules to a point whose
    unit has no quantity (a door contact)."""


class GatewayConfig(_Strict):
    gateway: GatewayIdentity
    signing: SigningConfig
    buffer: BufferConfig
    uplink: Uplink | None = None
    """Where evidence goes. Without it the gateway seals and buffers only."""
    zones: dict[Identifier, ZoneConfig] = Field(min_length=1)
    profiles: dict[Identifier, StorageProfile] = Field(default_factory=dict)
    """Site storage profiles, beside the built-in ones; may ``extend`` one."""
    products: ProductsConfig = Field(default_factory=ProductsConfig)
    """The product master: the storage profile each product requires, by GTIN or prefix."""
    hold_list: HoldListConfig = Field(default_factory=HoldListConfig)
    """Lots and SSCCs the site has put on hold."""
    exceptions: ExceptionsConfig = Field(default_factory=ExceptionsConfig)
    """Thresholds of the custody exceptions and of time out of storage."""
    clock: ClockConfig = Field(default_factory=ClockConfig)
    """Wall-clock integrity: steps and NTP synchronisation."""
    alarms: AlarmsConfig = Field(default_factory=AlarmsConfig)
    """Local alarm outputs and the acknowledgement channel."""
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    """The health and metrics endpoint (Prometheus), also read by ``gxpgate status``."""
    buses: dict[Identifier, ModbusRtuBus] = Field(default_factory=dict)
    """Serial lines with Modbus RTU slaves, by name; slaves are devices naming their ``bus``."""
    devices: dict[Identifier, DeviceConfig] = Field(default_factory=dict)

    def cross_reference_errors(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Checks that span sections: every zone a device or point names exists."""
        errors: list[tuple[tuple[str | int, ...], str]] = []
        for dev_id, dev in self.devices.items():
            if dev.zone not in self.zones:
                errors.append((("devices", dev_id, "zone"), f"unknown zone {dev.zone!r}"))
            for name, point in dev.points.items():
                if point.zone is not None and point.zone not in self.zones:
                    loc = ("devices", dev_id, "points", name, "zone")
                    errors.append((loc, f"unknown zone {point.zone!r}"))
        errors.extend(self._serial_errors())
        errors.extend(self._rule_errors())
        errors.extend(self._unmonitored_errors())
        errors.extend(self._sgln_errors())
        errors.extend(self.products.profile_errors(self.profiles))
        return errors

    def rules_of(self, dev_id: str, name: str) -> QuantityRules:
        """A point's rules: its zone's profile for its quantity (from its unit), then the
        zone's override for that quantity, then the point's own override; none when the point
        is ``monitored = false``. The zone and profile must exist (see cross_reference_errors)."""
        point = self.devices[dev_id].points[name]
        if not point.monitored:
            return QuantityRules()
        zone = self.zones[point.zone or self.devices[dev_id].zone]
        quantity = QUANTITY_UNITS.get(point.unit)
        rules = QuantityRules()
        if quantity is not None:
            profile = resolve_profile(zone.profile, self.profiles)
            rules = (profile.rules_for(quantity) or rules).merged(zone.rules.get(quantity))
        return rules.merged(zone.points.get(f"{dev_id}.{name}"))

    def _unmonitored_errors(self) -> list[tuple[tuple[str | int, ...], str]]:
        """A point in a zone whose profile has rules, that no rule watches: the silent gap a
        unit without a quantity opens (``1`` by default, ``hPa``, …). A quantity the profile
        does not regulate (humidity in a refrigerated zone) is not a gap. Only where the zones
        and profiles themselves are sound."""
        errors: list[tuple[tuple[str | int, ...], str]] = []
        for dev_id, dev in self.devices.items():
            for name, point in dev.points.items():
                zone_id = point.zone or dev.zone
                zone = self.zones.get(zone_id)
                if zone is None or not point.monitored:
                    continue
                try:
                    profile = resolve_profile(zone.profile, self.profiles)
                except (KeyError, ValueError):
                    continue
                watched = [q for q in ("temperature", "humidity") if profile.rules_for(q)]
                if not watched or self.rules_of(dev_id, name).watches():
                    continue
                quantity = QUANTITY_UNITS.get(point.unit)
                if quantity is not None and quantity not in watched:
                    continue  # e.g. humidity in a zone whose profile regulates temperature only
                units = " or ".join(repr(u) for u, q in QUANTITY_UNITS.items() if q in watched)
                why = (
                    f"unmonitored: no rule watches it (unit {point.unit!r}; zone {zone_id!r} "
                    f"keeps profile {zone.profile!r}, whose rules watch units {units}); give it "
                    f'one of those units, rules under [zones.{zone_id}.points."{dev_id}.{name}"], '
                    "or monitored = false"
                )
                errors.append((("devices", dev_id, "points", name), why))
        return errors

    def _sgln_errors(self) -> list[tuple[tuple[str | int, ...], str]]:
        """With a site GLN, device and zone ids become GLN extensions (AI 254: up to 20
        characters of set 82) wherever the device does not name its locations itself."""
        errors: list[tuple[tuple[str | int, ...], str]] = []
        if self.gateway.gln is None:
            return errors
        for dev_id, dev in self.devices.items():
            if not isinstance(dev, BarcodeScannerDevice | RfidReaderDevice):
                continue
            for field, ext in (("read_point", dev_id), ("biz_location", dev.zone)):
                if getattr(dev, field) is None and not _gln_extension(ext):
                    what = "device" if field == "read_point" else "zone"
                    why = (
                        f"the {what} id {ext!r} cannot be the SGLN extension of gateway.gln "
                        f"(at most 20 characters); set {field}"
                    )
                    errors.append((("devices", dev_id, field), why))
        return errors

    def warnings(self) -> list[tuple[tuple[str | int, ...], str]]:
        """What is valid but probably not meant: shown by ``config validate``, never fatal."""
        found: list[tuple[tuple[str | int, ...], str]] = []
        if self.gateway.gln is not None:
            return found
        for dev_id, dev in self.devices.items():
            if not isinstance(dev, BarcodeScannerDevice | RfidReaderDevice):
                continue
            missing = [f for f in ("read_point", "biz_location") if getattr(dev, f) is None]
            if missing:
                why = (
                    f"no gateway.gln and no {' or '.join(missing)}: its EPCIS events name "
                    f"private urn:gxpgate: locations that trading partners cannot resolve"
                )
                found.append((("devices", dev_id), why))
        return found

    def _rule_errors(self) -> list[tuple[tuple[str | int, ...], str]]:
        errors: list[tuple[tuple[str | int, ...], str]] = []
        for name in self.profiles:
            if name in BUILTIN_PROFILES:
                errors.append((("profiles", name), "is a built-in profile name; choose another"))
        known = ", ".join([*BUILTIN_PROFILES, *self.profiles])
        for zone_id, zone in self.zones.items():
            try:
                resolve_profile(zone.profile, self.profiles)
            except KeyError as exc:
                why = f"unknown storage profile {exc.args[0]!r}; known: {known}"
                errors.append((("zones", zone_id, "profile"), why))
            except ValueError as exc:
                errors.append((("zones", zone_id, "profile"), str(exc)))
            for key in zone.points:
                device, point = key.split(".", 1)
                dev = self.devices.get(device)
                if dev is None or point not in dev.points:
                    why = f"no point {point!r} on a device {device!r}"
                    errors.append((("zones", zone_id, "points", key), why))
        for index, coil in enumerate(self.alarms.coils):
            dev = self.devices.get(coil.device)
            if dev is None or dev.type != "modbus_tcp":
                why = f"{coil.device!r} is not a modbus_tcp device of this config"
                errors.append((("alarms", "coils", index, "device"), why))
            for zone_name in coil.zones:
                if zone_name not in self.zones:
                    why = f"unknown zone {zone_name!r}"
                    errors.append((("alarms", "coils", index, "zones"), why))
        return errors

    def _serial_errors(self) -> list[tuple[tuple[str | int, ...], str]]:
        errors: list[tuple[tuple[str | int, ...], str]] = []
        slaves: dict[tuple[str, int], str] = {}
        for dev_id, dev in self.devices.items():
            if not isinstance(dev, ModbusRtuDevice):
                continue
            if dev.bus not in self.buses:
                known = ", ".join(sorted(self.buses)) or "none configured"
                errors.append((("devices", dev_id, "bus"), f"unknown bus {dev.bus!r} ({known})"))
                continue
            other = slaves.setdefault((dev.bus, dev.unit_id), dev_id)
            if other != dev_id:
                why = f"slave {dev.unit_id} on bus {dev.bus!r} is already device {other!r}"
                errors.append((("devices", dev_id, "unit_id"), why))
        ports: dict[str, tuple[str | int, ...]] = {}
        for loc, port in self._serial_ports():
            first = ports.setdefault(port, loc)
            if first != loc:
                where = ".".join(str(part) for part in first)
                errors.append(((*loc, "port"), f"serial port {port} is already used by {where}"))
        return errors

    def _serial_ports(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Every serial port the config opens, with where it is configured (one opener each)."""
        found: list[tuple[tuple[str | int, ...], str]] = [
            (("buses", name), bus.port) for name, bus in self.buses.items()
        ]
        for dev_id, dev in self.devices.items():
            line = getattr(dev, "serial", None)
            if line is not None:
                found.append((("devices", dev_id, "serial"), line.port))
        return found

    def resolve_relative(self, base: Path) -> GatewayConfig:
        """Paths in the file are relative to the file's folder, as a reader would expect."""

        def fix(model: BaseModel, *names: str) -> BaseModel:
            paths = {n: getattr(model, n) for n in names}
            return model.model_copy(
                update={
                    n: base / p for n, p in paths.items() if p is not None and not p.is_absolute()
                }
            )

        update: dict[str, object] = {
            "signing": fix(self.signing, "key_file"),
            "buffer": fix(self.buffer, "path"),
        }
        if self.uplink is not None:
            update["uplink"] = fix(self.uplink, *self.uplink.file_fields)
        alarms = fix(self.alarms, "control_socket")
        if self.alarms.mqtt is not None:
            mqtt = fix(self.alarms.mqtt, "ca_file", "cert_file", "key_file", "password_file")
            alarms = alarms.model_copy(update={"mqtt": mqtt})
        update["alarms"] = alarms
        update["products"] = fix(self.products, "file")
        update["hold_list"] = fix(self.hold_list, "file")
        devices: dict[str, BaseModel] = {}
        for dev_id, dev in self.devices.items():
            if isinstance(dev, OpcUaDevice):
                files = ("certificate_file", "private_key_file", "server_certificate_file")
                security = fix(dev.security, *files)
                devices[dev_id] = fix(dev, "credentials_file").model_copy(
                    update={"security": security}
                )
            elif isinstance(dev, CsvDropDevice):
                devices[dev_id] = fix(dev, "folder")
            else:
                devices[dev_id] = dev
        update["devices"] = devices
        return self.model_copy(update=update)
