"""Configuration of custody devices: barcode scanners and RFID readers that send one read per line.

Nothing here opens a port or a socket: ``gxpgate config validate`` runs this code.

Each device is reached over ``transport = "serial"`` (a ``[devices.<id>.serial]`` table:
:class:`~gxpgate.drivers.serial_model.SerialLine`) or ``transport = "tcp"`` (``host`` and ``port``
of a fixed-mount device that is the TCP server; the gateway connects as the client). Each read
becomes one EPCIS 2.0 ``ObjectEvent`` whose *why* and *where* come from here: ``biz_step`` and
``disposition`` are CBV 2.0 short names, ``read_point`` and ``biz_location`` URIs (defaults: a
private ``urn:gxpgate:…`` URI built from the gateway id and the device id or the zone).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gxpgate.drivers.serial_model import SerialLine

if TYPE_CHECKING:
    from gxpgate.drivers.base import BuildContext
    from gxpgate.drivers.scanner import BarcodeScannerSource, RfidReaderSource

__all__ = [
    "CBV_BIZ_STEPS",
    "CBV_DISPOSITIONS",
    "TERMINATORS",
    "BarcodeScannerDevice",
    "BizStep",
    "CustodyDevice",
    "Disposition",
    "RfidReaderDevice",
    "Terminator",
]

Terminator = Literal["crlf", "cr", "lf"]
TERMINATORS: Final[dict[str, bytes]] = {"crlf": b"\r\n", "cr": b"\r", "lf": b"\n"}

# GS1 Core Business Vocabulary 2.0, business steps (§7.1) and dispositions (§7.2), as the
# short names the EPCIS 2.0 JSON-LD context defines.
BizStep = Literal[
    "accepting", "arriving", "assembling", "collecting", "commissioning", "consigning",
    "creating_class_instance", "cycle_counting", "decommissioning", "departing", "destroying",
    "disassembling", "dispensing", "encoding", "entering_exiting", "holding", "inspecting",
    "installing", "killing", "loading", "other", "packing", "picking", "receiving", "removing",
    "repackaging", "repairing", "replacing", "reserving", "retail_selling", "sampling",
    "sensor_reporting", "shipping", "staging_outbound", "stock_taking", "stocking", "storing",
    "transporting", "unloading", "unpacking", "void_shipping",
]  # fmt: skip
Disposition = Literal[
    "active", "available", "completeness_inferred", "completeness_verified", "conformant",
    "container_closed", "container_open", "damaged", "destroyed", "dispensed", "disposed",
    "encoded", "expired", "in_progress", "in_transit", "inactive", "mismatch_class",
    "mismatch_instance", "mismatch_quantity", "needs_replacement", "no_pedigree_match",
    "non_conformant", "non_sellable_other", "partially_dispensed", "recalled", "reserved",
    "retail_sold", "returned", "sellable_accessible", "sellable_not_accessible", "stolen",
    "unavailable", "unknown",
]  # fmt: skip
CBV_BIZ_STEPS: Final[frozenset[str]] = frozenset(get_args(BizStep))
CBV_DISPOSITIONS: Final[frozenset[str]] = frozenset(get_args(Disposition))

# An absolute URI (RFC 3986 scheme, then anything without white space): EPCIS identifiers.
Uri = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$", max_length=2048)]
CompanyPrefix = Annotated[str, Field(pattern=r"^[0-9]{6,12}$")]
_PRINTABLE = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$")


class _CustodyDevice(BaseModel):
    """What barcode scanners and RFID readers share: how to reach them, and the custody step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transport: Literal["serial", "tcp"]
    """``serial``: a serial port (the ``serial`` table); ``tcp``: the device is a TCP server at
    ``host``:``port`` and the gateway connects to it."""
    serial: SerialLine | None = None
    """Serial transport: port and framing, e.g. ``[devices.dock-scanner.serial]`` with
    ``port = "/dev/serial/by-id/…"`` and ``baudrate = 9600``."""
    host: str | None = Field(default=None, min_length=1)
    """TCP transport: the device's address."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """TCP transport: the device's port (fixed-mount scanners often use 23 or 2001)."""
    connect_timeout_ms: int = Field(default=3000, ge=100, le=60_000)
    """TCP transport: how long a connection attempt may take before the device counts as
    unreachable."""
    terminator: Terminator = "crlf"
    """What ends each read the device sends: ``crlf``, ``cr`` or ``lf``."""
    zone: str
    """Zone the device stands in: the EPCIS ``bizLocation`` of its reads, and the zone the read
    objects are in afterwards (the lot register)."""
    read_point: Uri | None = None
    """EPCIS ``readPoint`` id, e.g. an SGLN ``urn:epc:id:sgln:0614141.00001.dock-door-1``.
    Default: ``urn:gxpgate:<gateway id>:device:<device id>``."""
    biz_location: Uri | None = None
    """EPCIS ``bizLocation`` id of the zone, e.g. ``urn:epc:id:sgln:0614141.00001.cold-room-1``.
    Default: ``urn:gxpgate:<gateway id>:zone:<zone>``."""
    biz_step: BizStep
    """CBV business step of every read: ``receiving``, ``storing``, ``picking``, ``shipping``, …
    It decides the EPCIS action (``commissioning``, ``encoding``, ``creating_class_instance``:
    ADD; ``decommissioning``, ``destroying``, ``killing``: DELETE; any other: OBSERVE) and whether
    the read objects leave the site (``shipping``, ``departing``, ``retail_selling`` and the
    DELETE steps end their presence in the lot register)."""
    disposition: Disposition | None = None
    """CBV disposition after the step, e.g. ``in_progress``, ``sellable_not_accessible``,
    ``in_transit``; leave it out when the step says nothing about the objects' state."""
    dedupe_window_secs: float = Field(default=0.0, ge=0, le=3600)
    """Repeated reads of the same code or tag count as one observation until it has not been
    read for this long (0: every read counts)."""
    max_reads_per_sec: float = Field(default=50.0, gt=0, le=10_000)
    """Observations (after ``dedupe_window_secs``) taken per second at most, with bursts of
    ``burst_reads``: a stuck trigger or a reader in a loop must not starve the other devices.
    What is beyond it is not sealed one by one but counted: a ``scan_overflow`` audit record
    per second of flood says how many and between which times."""
    burst_reads: int = Field(default=500, ge=1, le=100_000)
    """Observations taken at once above ``max_reads_per_sec`` (a pallet of tagged cases)."""
    reconnect_max_secs: float = Field(default=30.0, gt=0, le=3600)
    """Cap of the jittered exponential backoff between reconnect attempts."""

    @property
    def points(self) -> dict[str, Any]:
        """Custody devices have no measurement points (the config's zone checks iterate them)."""
        return {}

    @property
    def report_interval_secs(self) -> float:
        """No rhythm to miss: reads arrive when something is read (and there are no points)."""
        return math.inf

    @property
    def changes_only(self) -> bool:
        """Silence is normal; comm loss counts from the device going offline."""
        return True

    @model_validator(mode="after")
    def _transport_settings(self) -> _CustodyDevice:
        if self.transport == "serial":
            if self.serial is None:
                raise ValueError("transport 'serial' needs a serial table (port, baudrate, …)")
            if self.host is not None or self.port is not None:
                raise ValueError("host and port apply to transport 'tcp' only")
        else:
            if self.host is None or self.port is None:
                raise ValueError("transport 'tcp' needs host and port")
            if self.serial is not None:
                raise ValueError("the serial table applies to transport 'serial' only")
        return self


class BarcodeScannerDevice(_CustodyDevice):
    """A barcode scanner (handheld on a cradle, or fixed-mount at a door or conveyor) that sends
    each decoded barcode as one line, preferably led by its AIM symbology identifier (``]d2``,
    ``]C1``…; switch it on in the scanner's settings: without it an EAN-13 can read as GS1)."""

    type: Literal["barcode_scanner"]
    company_prefixes: list[CompanyPrefix] = Field(default_factory=list)
    """GS1 Company Prefixes (6-12 digits) of the products scanned here, e.g. ``["0614141"]``.
    A barcode does not say where its company prefix ends, which EPC URIs need; prefixes listed
    here win over GS1's prefix-length table (bundled), and a GTIN or SSCC covered by neither is
    written as a GS1 Digital Link URI (``https://id.gs1.org/01/…/21/…``) instead."""
    no_read_text: str | None = Field(default="NOREAD", min_length=1, max_length=64)
    """What the scanner sends when it was triggered but decoded nothing (its "no read" message):
    recorded as an unreadable scan. Leave out (or empty the scanner's setting) if it sends none."""

    @model_validator(mode="after")
    def _no_read_printable(self) -> BarcodeScannerDevice:
        if self.no_read_text is not None and not _PRINTABLE.match(self.no_read_text):
            raise ValueError("no_read_text must be printable ASCII without edge spaces")
        return self

    def build(self, device_id: str, ctx: BuildContext) -> BarcodeScannerSource:
        from gxpgate.drivers.scanner import (
            BarcodeScannerSource,  # pyserial is imported only where it is used
        )

        return BarcodeScannerSource(device_id, self)


class RfidReaderDevice(_CustodyDevice):
    """An RFID reader (a portal at a dock door, a tunnel on a conveyor) that reports each tag as
    one line of EPC hex. Set ``dedupe_window_secs``: a reader reports a tag many times a second
    while it is in the field."""

    type: Literal["rfid_reader"]
    strip_pc_word: bool = False
    """Each line starts with the tag's 16-bit PC word (4 hex digits), which gives the EPC length;
    set this when the reader is configured to report it."""
    dedupe_window_secs: float = Field(default=5.0, ge=0, le=3600)
    """A tag read again within this many seconds of its previous read is the same observation,
    however long it stays in the field (0: every read counts)."""

    def build(self, device_id: str, ctx: BuildContext) -> RfidReaderSource:
        from gxpgate.drivers.scanner import (
            RfidReaderSource,  # pyserial is imported only where it is used
        )

        return RfidReaderSource(device_id, self)


CustodyDevice = BarcodeScannerDevice | RfidReaderDevice
