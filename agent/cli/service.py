"""``gxpgate service install``: the systemd unit and its snippets, the service user, its
directories, a signing key and a starting config (CONTRACT §5); see
:mod:`gxpgate.agent.service.install` for where each goes.

Exit status: 0 installed (or, with ``--dry-run``, shown), 1 a step failed or not root, 2 the
config is invalid (file, field path and reason printed, as by ``gxpgate config validate``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from gxpgate.agent.cli.common import fail, load
from gxpgate.agent.service.install import (
    DEFAULT_CONFIG,
    KEY_PATH,
    Installer,
    InstallError,
    config_path_warnings,
    config_warnings,
    executable_problems,
    running_executable,
)
from gxpgate.config import LoadedConfig

__all__ = ["app"]

app = typer.Typer(
    help="Run gxpgate as a systemd service.", no_args_is_help=True, add_completion=False
)


@app.command("install")
def install(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print every step it would take; change nothing")
    ] = False,
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            help="Config the service runs with; the commented example is installed there if absent",
        ),
    ] = DEFAULT_CONFIG,
    root: Annotated[
        Path,
        typer.Option(
            help="Stage everything under this folder instead of / (like DESTDIR); the unit "
            "keeps the paths the service will see"
        ),
    ] = Path("/"),
) -> None:
    """Install the systemd unit, the service user, its directories, a signing key (if none)
    and a starting config (if none); validate the config; print the key to enrol."""
    if not dry_run and os.geteuid() != 0:
        fail(
            "service install changes the system and must run as root: "
            "sudo gxpgate service install (or add --dry-run to see what it would do)"
        )
    root = Path(os.path.abspath(root))
    if not config.is_absolute():
        if root != Path("/"):
            fail(f"--config {config}: give the absolute path the service will see", 2)
        config = Path(os.path.abspath(config))
    try:
        executable = running_executable(sys.argv[0], sys.executable)
    except InstallError as exc:
        fail(str(exc))
    problems = executable_problems(executable)
    if problems and root == Path("/") and not dry_run:
        fail("\n".join(problems))

    where = "" if root == Path("/") else f" (staged under {root})"
    typer.echo(("Would install" if dry_run else "Installing") + f" the gxpgate service{where}:")
    installer = Installer(root, executable, config, dry_run, typer.echo)
    try:
        installer.install_units()
        account = installer.create_user()
        installer.create_directories(account)
        key_file = installer.create_key(account)
        config_file = installer.create_config(account)
    except InstallError as exc:
        fail(str(exc))
    loaded = _validate(config_file, dry_run, installer.config_is_example)
    refusal = "a real install refuses: " if root == Path("/") else ""
    warnings = [refusal + problem for problem in problems]
    warnings += config_path_warnings(config)
    if installer.deferred and config != DEFAULT_CONFIG:
        warnings.append(
            f"{config} stays root:root until you give it to group gxpgate after the first boot "
            f"(chgrp gxpgate {config}); systemd-tmpfiles does so only for {DEFAULT_CONFIG}"
        )
    if loaded is not None:
        warnings += config_warnings(loaded.config, root)
    for warning in warnings:
        typer.echo(f"  WARNING    {warning}")
    _show_key(key_file, dry_run)
    try:
        reloaded = installer.daemon_reload()
    except InstallError as exc:
        fail(str(exc))
    _next_steps(installer, reloaded, root)


def _validate(config_file: Path, dry_run: bool, example: bool) -> LoadedConfig | None:
    if dry_run and not os.access(config_file, os.R_OK):
        typer.echo(f"  {'would check':<10} {config_file} (gxpgate config validate)")
        return None
    loaded = load(config_file)  # prints FILE: FIELD: REASON and exits 2 when invalid
    cfg = loaded.config
    note = " — the example: EDIT IT before starting the service" if example else ""
    typer.echo(
        f"  {'valid':<10} {config_file}: gateway {cfg.gateway.id}, {len(cfg.zones)} zone(s), "
        f"{len(cfg.devices)} device(s){note}"
    )
    return loaded


def _show_key(key_file: Path, dry_run: bool) -> None:
    from gxpgate.agent.evidence import KeyFileError, describe, load_private_key

    if dry_run and not os.access(key_file, os.R_OK):
        typer.echo("\nA real install prints the public key to enrol.")
        return
    try:
        key = load_private_key(key_file)
    except KeyFileError as exc:
        fail(str(exc))
    typer.echo(f"\nEnrol this public key with the quality service (signing key {KEY_PATH}):")
    typer.echo(describe(key.public_key()), nl=False)


def _next_steps(installer: Installer, reloaded: bool, root: Path) -> None:
    gxpgate = installer.executable
    config = "" if installer.config == DEFAULT_CONFIG else f" --config {installer.config}"
    lines = []
    if installer.config_is_example:
        lines.append(
            f"edit {installer.config}: it is the commented example (example devices, "
            "quality service and alarm outputs) and must describe this site before the "
            "service starts; then check it:\n"
            f"     sudo -u gxpgate {gxpgate} config validate {installer.config}"
        )
    lines.append("enrol the public key above with the quality service")
    if not reloaded:
        lines.append("systemctl daemon-reload")
    lines += [
        "systemctl enable --now gxpgate",
        "journalctl -u gxpgate -f  — the agent's log",
        f"{gxpgate} status{config}  — devices, backlog, uplink, alarms",
    ]
    staged = "" if root == Path("/") else f" (once {root} is the machine's root)"
    typer.echo(f"\nNext{staged}:")
    for number, line in enumerate(lines, 1):
        typer.echo(f"  {number}. {line}")
