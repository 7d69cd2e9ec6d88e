"""The ``gxpgate`` command line (CONTRACT §5).

Exit status: 0 success, 1 the operation failed, 2 bad usage or invalid config/input. Expected
failures print one clear message per problem to stderr; a traceback means a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from gxpgate.agent.cli import alarms as alarms_cli
from gxpgate.agent.cli import buffer as buffer_cli
from gxpgate.agent.cli import lots as lots_cli
from gxpgate.agent.cli import scan as scan_cli
from gxpgate.agent.cli import service as service_cli
from gxpgate.agent.cli import status as status_cli
from gxpgate.agent.cli.common import ConfigOption, fail, load
from gxpgate.agent.evidence import (
    KeyFileError,
    describe,
    generate_key_file,
    load_private_key,
    load_public_key,
    public_key_path_for,
    public_key_pem,
)
from gxpgate.agent.service.logging_setup import quiet_libraries, setup_logging
from gxpgate.config import example_config_text

__all__ = ["app", "main"]

log = logging.getLogger(__name__)

app = typer.Typer(
    name="gxpgate",
    help="Edge gateway for GxP warehouses: signed, buffered, verifiable evidence.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Check and explain the site configuration.", no_args_is_help=True)
keys_app = typer.Typer(help="The gateway's Ed25519 signing key.", no_args_is_help=True)
devices_app = typer.Typer(help="Configured devices.", no_args_is_help=True)
simulate_app = typer.Typer(
    help="Run one bundled simulator in the foreground.", no_args_is_help=True
)
opcua_app = typer.Typer(help="OPC UA client identity.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(keys_app, name="keys")
app.add_typer(buffer_cli.app, name="buffer")
app.add_typer(devices_app, name="devices")
app.add_typer(simulate_app, name="simulate")
app.add_typer(opcua_app, name="opcua")
app.add_typer(scan_cli.app, name="scan")
app.add_typer(lots_cli.app, name="lots")
app.add_typer(alarms_cli.app, name="alarms")
app.add_typer(service_cli.app, name="service")
app.command("status")(status_cli.status)


# -- config -------------------------------------------------------------------------------------


@config_app.command("validate")
def config_validate(
    file: Annotated[Path, typer.Argument(help="Config file to check")],
    syntax_only: Annotated[
        bool,
        typer.Option(
            "--syntax-only",
            help="Check the file alone, not the key, credential files, folders and port it "
            "names (e.g. a config not yet on its gateway)",
        ),
    ] = False,
) -> None:
    """Check a config file as `gxpgate run` would: the file, the product / hold-list files it
    names, the signing key (present, 0600), credential and certificate files (readable), the
    buffer's folder (writable) and the metrics port (free). Every problem is printed as
    FILE: FIELD.PATH: REASON or FILE:LINE: REASON (exit 2)."""
    from gxpgate.agent.service.preflight import port_problems, start_problems
    from gxpgate.config.policy_files import load_policy
    from gxpgate.config.products import PolicyError

    loaded = load(file)
    cfg = loaded.config
    # Everything in one pass: what `run` refuses to start without, the metrics port, and the
    # product / hold-list files the agent reads at start and on SIGHUP.
    found = [] if syntax_only else start_problems(cfg) + port_problems(cfg)
    problems = [f"{file}: {field}: {why}" for field, why in found]
    try:
        policy = load_policy(cfg, loaded.path)
    except PolicyError as exc:
        problems += exc.lines()
    if problems:
        for line in problems:
            typer.echo(line, err=True)
        raise typer.Exit(2)
    for loc, why in cfg.warnings():
        typer.echo(f"{file}: warning: {'.'.join(str(part) for part in loc)}: {why}", err=True)
    points = sum(len(d.points) for d in cfg.devices.values())
    typer.echo(
        f"{file}: valid — gateway {cfg.gateway.id}, {len(cfg.zones)} zone(s), "
        f"{len(cfg.devices)} device(s), {points} point(s); sha256 {loaded.sha256}"
    )
    for part, source in (("products", policy.products_source), ("hold list", policy.holds_source)):
        if source.path is not None:
            typer.echo(
                f"{source.path}: valid — {part}, {source.entries} entries; sha256 {source.sha256}"
            )


@config_app.command("example")
def config_example() -> None:
    """Print a complete, commented example config."""
    typer.echo(example_config_text(), nl=False)


# -- keys ---------------------------------------------------------------------------------------


@keys_app.command("generate")
def keys_generate(
    out: Annotated[Path, typer.Option("--out", help="Private key file to create (mode 0600)")],
) -> None:
    """Create an Ed25519 signing key; print its key id and public key PEM."""
    try:
        key = generate_key_file(out)
    except KeyFileError as exc:
        fail(str(exc))
    typer.echo(f"wrote {out} (mode 0600)")
    public = public_key_path_for(out)
    try:
        public.write_text(public_key_pem(key.public_key()), encoding="ascii")
    except OSError as exc:
        fail(f"{public}: {exc.strerror or exc} (the key itself is written)")
    typer.echo(f"wrote {public} (the public key, for gxpgate verify and the quality service)")
    typer.echo(describe(key.public_key()), nl=False)


@keys_app.command("show")
def keys_show(
    key: Annotated[Path, typer.Option("--key", help="Private key file")],
) -> None:
    """Print the key id and public key PEM of a signing key (to enrol with the service)."""
    try:
        private_key = load_private_key(key)
    except KeyFileError as exc:
        fail(str(exc), 2)
    typer.echo(describe(private_key.public_key()), nl=False)


# -- verify / export ----------------------------------------------------------------------------


@app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="JSON Lines export (gxpgate export)")],
    public_key: Annotated[
        list[Path], typer.Option("--public-key", help="Gateway public key PEM (repeatable)")
    ],
) -> None:
    """Check hashes, signatures, chain links and gaps; exit 1 naming the first bad seq."""
    from gxpgate.agent.evidence import verify_file

    try:
        keys = [load_public_key(path) for path in public_key]
    except KeyFileError as exc:
        fail(str(exc), 2)
    try:
        verdict = verify_file(file, keys)
    except OSError as exc:
        fail(f"{file}: {exc.strerror or exc}", 2)
    typer.echo(verdict.summary())
    if not verdict.ok:
        raise typer.Exit(1)


def _parse_time(value: str | None, option: str) -> str | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option}: not an ISO 8601 time: {value!r}", 2)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", help="JSON Lines file to write ('-' for stdout)")],
    config: ConfigOption = None,
    since: Annotated[str | None, typer.Option(help="Only records with at >= TIME")] = None,
    until: Annotated[str | None, typer.Option(help="Only records with at < TIME")] = None,
) -> None:
    """Write buffered records as JSON Lines, one record per line, unchanged."""
    from gxpgate.agent.service.runtime import AgentStartError, open_outbox

    loaded = load(config)
    since_at, until_at = _parse_time(since, "--since"), _parse_time(until, "--until")
    try:
        outbox = open_outbox(loaded, must_exist=True)
    except AgentStartError as exc:
        fail(str(exc))
    count = 0
    try:
        target = contextlib.nullcontext(sys.stdout.buffer) if str(out) == "-" else out.open("wb")
        with target as handle:
            for body in outbox.export(since_at, until_at):
                handle.write(body + b"\n")
                count += 1
            handle.flush()
    except OSError as exc:
        fail(f"{out}: {exc.strerror or exc}")
    finally:
        outbox.close()
    typer.echo(f"exported {count} record(s) to {out}", err=True)


# -- devices ------------------------------------------------------------------------------------


@devices_app.command("test")
def devices_test(
    device: Annotated[str | None, typer.Argument(help="Only this device")] = None,
    config: ConfigOption = None,
) -> None:
    """Connect to each configured device once and print what it reads; exit 1 when any
    device does not answer or answers with nothing but bad values."""
    from gxpgate.drivers.base import BuildContext, DriverError

    loaded = load(config)
    ctx = BuildContext(buses=loaded.config.buses)
    devices = loaded.config.devices
    if device is not None:
        if device not in devices:
            fail(f"no device {device!r} in {loaded.path}; configured: {', '.join(devices)}", 2)
        devices = {device: devices[device]}

    async def probe() -> int:
        failures = 0
        for dev_id, dev in devices.items():
            source = dev.build(dev_id, ctx)
            typer.echo(f"{dev_id}:")
            for line in source.describe():
                typer.echo(f"  {line}")
            async with source:
                try:
                    samples = await source.read()
                except DriverError as exc:
                    failures += 1
                    typer.echo(f"  UNREACHABLE: {exc.message}")
                    continue
            for s in samples:
                value = "-" if s.value is None else f"{s.value:g}"
                extra = f"  ({s.data['error']})" if "error" in s.data else ""
                typer.echo(f"  {s.point:<20} {value:>12} {s.unit or '':<4} {s.quality}{extra}")
            drain = getattr(source, "drain_events", None)
            for event in drain() if drain is not None else []:
                # e.g. a Modbus block the device refused, split: the plan it is read with now
                details = ", ".join(f"{k} {v}" for k, v in event.data.items() if k != "event")
                typer.echo(f"  {event.data.get('event', 'event')}: {details}")
            if samples and all(s.quality == "bad" for s in samples):
                # It answers, but nothing it says can be used: as good as unreachable.
                failures += 1
                typer.echo(f"  FAILING: {samples[0].data.get('error', 'every value bad')}")
        return failures

    if asyncio.run(probe()):
        raise typer.Exit(1)


# -- run / demo ---------------------------------------------------------------------------------


@app.command("run")
def run(
    config: ConfigOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging")] = False,
) -> None:
    """Run the gateway in the foreground (what systemd starts)."""
    from gxpgate.agent.service.runtime import Agent, AgentStartError

    loaded = load(config)
    setup_logging(verbose)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        agent = Agent(loaded)
        await agent.run(stop)
        return agent.unsaved

    try:
        unsaved = asyncio.run(main())
    except AgentStartError as exc:
        fail(str(exc), exc.exit_code)
    except Exception:  # the top-level crash handler: a bug; exit 1 so systemd restarts us
        log.critical("agent.crashed", exc_info=True)
        raise typer.Exit(1) from None
    if unsaved:
        fail(f"{unsaved} records were lost: the buffer's disk refused them until the stop", 1)


@app.command("demo")
def demo(
    seconds: Annotated[
        float | None, typer.Option(help="Stop cleanly after N seconds [default: until Ctrl-C]")
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="Keep the demo's files here [default: a temporary folder]")
    ] = None,
    uplink: Annotated[
        str | None, typer.Option(help="Send to this quality service instead of the simulator")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--continue", help="Go on with the chain an earlier demo left in --workdir"),
    ] = False,
) -> None:
    """Run the simulators, the quality-service simulator and the agent, and show what happens.
    Exit 0 when every record verifies, 1 when not, 2 for bad options, 130 after Ctrl-C."""
    from gxpgate.agent.cli.demo import run_demo

    code = run_demo(seconds=seconds, workdir=workdir, uplink=uplink, echo=typer.echo, resume=resume)
    raise typer.Exit(code)


# -- simulators ---------------------------------------------------------------------------------


def _script_option(stages: str) -> Any:
    return typer.Option(
        "--script",
        help=f"Commands to stage ({stages}; see README), one a line; '-' reads them from stdin "
        "as typed",
    )


@simulate_app.command("modbus")
def simulate_modbus(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 5020,
    rtu: Annotated[
        bool, typer.Option("--rtu", help="Modbus RTU on a pseudo-terminal instead of TCP")
    ] = False,
    baudrate: Annotated[int, typer.Option(help="RTU: line rate the simulator paces to")] = 19200,
    script: Annotated[
        str | None, _script_option("excursion, ramp, freeze, exception, silent, drop")
    ] = None,
) -> None:
    """Modbus temperature/humidity sensors (units 1-3); prints where to connect and the map."""
    from gxpgate.agent.cli.simulate import load_script
    from gxpgate.simulators.modbus_sim import DEFAULT_SENSORS, run_forever, run_forever_rtu

    names = {s.name: s.name for s in DEFAULT_SENSORS}
    names.update({str(s.unit_id): s.name for s in DEFAULT_SENSORS})
    commands = load_script(script, names, refuse={"drop": "drop is TCP only"} if rtu else {})
    interactive = script == "-" or sys.stdin.isatty()
    quiet_libraries()
    try:
        if rtu:
            asyncio.run(
                run_forever_rtu(
                    baudrate=baudrate,
                    print_fn=typer.echo,
                    script=commands,
                    interactive=interactive,
                )
            )
        else:
            asyncio.run(
                run_forever(
                    host, port, print_fn=typer.echo, script=commands, interactive=interactive
                )
            )
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        where = "a pseudo-terminal" if rtu else f"{host}:{port}"
        fail(f"cannot open {where}: {exc.strerror or exc}")


@simulate_app.command("logger")
def simulate_logger(
    serial: Annotated[str, typer.Option(help="The logger's serial number")] = "L0001",
    interval_secs: Annotated[int, typer.Option(help="Seconds between stored records")] = 60,
    stored: Annotated[int, typer.Option(help="Records already in its memory")] = 60,
    clock_offset_secs: Annotated[float, typer.Option(help="How far its clock is off")] = 0.0,
    script: Annotated[
        str | None, _script_option("excursion, ramp, freeze, bad, silent, garbage, checksum")
    ] = None,
) -> None:
    """A GXL/1 data logger on a pseudo-terminal; prints the device path to configure."""
    import time

    from gxpgate.agent.cli.simulate import load_script
    from gxpgate.simulators.logger_sim import run_forever, script_language

    if interval_secs < 1 or stored < 0:
        fail("--interval-secs must be at least 1 and --stored at least 0", 2)
    names, dialect = script_language(serial)
    commands = load_script(script, names, dialect=dialect)
    started = time.time() - stored * interval_secs
    try:
        asyncio.run(
            run_forever(
                print_fn=typer.echo,
                script=commands,
                interactive=script == "-" or sys.stdin.isatty(),
                serial=serial,
                interval_secs=interval_secs,
                started_at=started,
                clock_offset_secs=clock_offset_secs,
            )
        )
    except KeyboardInterrupt:
        pass
    except ValueError as exc:
        fail(str(exc), 2)


@simulate_app.command("scanner")
def simulate_scanner(
    kind: Annotated[str, typer.Option(help="barcode or rfid")] = "barcode",
    transport: Annotated[str, typer.Option(help="tcp (the scanner listens) or pty")] = "tcp",
    script: Annotated[
        str | None,
        typer.Option(help="Scans to replay (barcode: dock-receiving, put-away, faulty, vectors)"),
    ] = None,
    interval_secs: Annotated[float, typer.Option(help="Seconds between scans")] = 1.0,
    host: Annotated[str, typer.Option(help="Address to listen on (tcp)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (tcp; 0 picks a free one)")] = 0,
) -> None:
    """A barcode scanner or RFID reader replaying scripted scans in a loop."""
    from gxpgate.simulators.scanner_sim import run_forever

    if kind not in ("barcode", "rfid") or transport not in ("tcp", "pty"):
        fail("--kind must be barcode or rfid, --transport tcp or pty", 2)
    try:
        asyncio.run(
            run_forever(
                kind,  # type: ignore[arg-type]
                transport,  # type: ignore[arg-type]
                script,
                interval_secs,
                host=host,
                port=port,
                print_fn=typer.echo,
            )
        )
    except KeyboardInterrupt:
        pass
    except ValueError as exc:
        fail(str(exc), 2)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


@simulate_app.command("quality-service")
def simulate_quality_service(
    public_key: Annotated[
        list[Path], typer.Option("--public-key", help="Gateway public key PEM (repeatable)")
    ],
    db: Annotated[Path, typer.Option(help="SQLite file for what it receives")] = Path(
        "quality-service.db"
    ),
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8080,
    token: Annotated[str | None, typer.Option(help="Require this bearer token")] = None,
    mqtt_broker: Annotated[
        str | None,
        typer.Option(help="Also consume the MQTT uplink (gxpgate/+/evidence) from HOST:PORT"),
    ] = None,
    script: Annotated[str | None, _script_option("outage, fail 503/429, drop, delay")] = None,
) -> None:
    """The central quality service: verifies and stores what gateways send (CONTRACT §3, §4)."""
    from gxpgate.agent.cli.simulate import load_script
    from gxpgate.simulators.quality_run import run_forever
    from gxpgate.simulators.script import QUALITY_SERVICE

    commands = load_script(script, {}, dialect=QUALITY_SERVICE)

    for path in public_key:
        try:
            load_public_key(path)
        except KeyFileError as exc:
            fail(str(exc), 2)
    broker = None
    if mqtt_broker is not None:
        broker_host, _, broker_port = mqtt_broker.rpartition(":")
        if not broker_host or not broker_port.isdigit() or not 0 < int(broker_port) < 65536:
            fail(f"--mqtt-broker {mqtt_broker!r}: expected HOST:PORT", 2)
        broker = (broker_host.strip("[]"), int(broker_port))
    try:
        run_forever(
            db,
            host,
            port,
            public_key,
            token,
            print_fn=typer.echo,
            mqtt_broker=broker,
            script=commands,
            interactive=script == "-" or sys.stdin.isatty(),
        )
    except TimeoutError as exc:
        fail(f"MQTT broker {mqtt_broker}: {exc}")
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


@simulate_app.command("opcua")
def simulate_opcua(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 4840,
    security: Annotated[
        str, typer.Option(help="none or basic256sha256 (needs --cert-dir)")
    ] = "none",
    cert_dir: Annotated[
        Path | None, typer.Option(help="Where the server's certificate is kept/created")
    ] = None,
    max_nodes_per_read: Annotated[
        int, typer.Option(help="Advertise and enforce this MaxNodesPerRead (0: none)")
    ] = 0,
    script: Annotated[
        str | None, _script_option("excursion, ramp, freeze, bad StatusCode, drop")
    ] = None,
) -> None:
    """OPC UA server of a small warehouse (zones with temperature, humidity, door)."""
    from gxpgate.agent.cli.simulate import load_script
    from gxpgate.simulators.opcua_sim import DEFAULT_ZONES, run_forever, script_dialect

    zones = {zone.name: zone.name for zone in DEFAULT_ZONES}
    commands = load_script(script, zones, dialect=script_dialect())
    if security not in ("none", "basic256sha256"):
        fail("--security must be none or basic256sha256", 2)
    if security == "basic256sha256" and cert_dir is None:
        fail("--security basic256sha256 needs --cert-dir", 2)
    quiet_libraries()
    try:
        asyncio.run(
            run_forever(
                host,
                port,
                security=security,
                cert_dir=cert_dir,
                max_nodes_per_read=max_nodes_per_read,
                print_fn=typer.echo,
                script=commands,
                interactive=script == "-" or sys.stdin.isatty(),
            )
        )
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


@opcua_app.command("certificate")
def opcua_certificate(
    config: ConfigOption = None,
    host_name: Annotated[
        str | None, typer.Option(help="Host name for the certificate [default: this host's]")
    ] = None,
) -> None:
    """Create the gateway's OPC UA application certificate and key where the config names them
    (if absent) and print the thumbprint to trust on the servers."""
    import socket

    from gxpgate.drivers.opcua import ensure_application_certificate
    from gxpgate.drivers.opcua_model import OpcUaDevice

    loaded = load(config)
    secured = {
        dev_id: dev.security
        for dev_id, dev in loaded.config.devices.items()
        if isinstance(dev, OpcUaDevice) and dev.security.policy != "None"
    }
    if not secured:
        fail(f"{loaded.path}: no OPC UA device uses a security policy", 2)
    done: set[tuple[Path, Path]] = set()
    for dev_id, sec in secured.items():
        assert sec.certificate_file is not None
        assert sec.private_key_file is not None
        pair = (sec.certificate_file, sec.private_key_file)
        if pair in done:
            continue
        done.add(pair)
        created, thumbprint = ensure_application_certificate(
            *pair, sec.application_uri, host_name or socket.gethostname()
        )
        state = "created" if created else "exists"
        typer.echo(f"{dev_id}: {sec.certificate_file} ({state}), key {sec.private_key_file} (0600)")
        typer.echo(f"  application URI {sec.application_uri}, SHA-1 thumbprint {thumbprint}")
    typer.echo("Trust this certificate on each OPC UA server (its PKI 'trusted' folder).")


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit", is_eager=True)
    ] = False,
) -> None:
    if version:
        from gxpgate.agent.service.runtime import agent_version

        typer.echo(f"gxpgate {agent_version()}")
        raise typer.Exit(0)


def main() -> None:
    app()
