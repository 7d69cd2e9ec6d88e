"""``gxpgate service install`` end to end, staged under a temporary root (``--root``), with the
real systemd-sysusers and systemd-tmpfiles; and the unit files inside a built wheel.

The install needs root (it chowns to the user it creates), as does running the refusal check as
an unprivileged user; CI runs tests as root. Where root or systemd's tools are missing these
tests skip, unless ``GXPGATE_REQUIRE_SYSTEMD=1`` (set by ``.ci/run``): then they fail.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gxpgate.agent.evidence import describe, load_private_key
from gxpgate.agent.service.install import (
    DEFAULT_CONFIG,
    member_groups,
    render_unit,
    service_account,
    starting_config,
    unit_file_text,
)
from gxpgate.config import load_config

ROOT = Path(__file__).resolve().parents[1]
GXPGATE = Path(sys.executable).parent / "gxpgate"
NOBODY = 65534


def _require(what: str) -> None:
    if os.environ.get("GXPGATE_REQUIRE_SYSTEMD"):
        pytest.fail(f"{what} — GXPGATE_REQUIRE_SYSTEMD is set, so this must not skip")
    pytest.skip(what)


@pytest.fixture
def as_root() -> None:
    if os.geteuid() != 0:
        _require("service install needs root (it gives files to the user it creates)")
    for tool in ("systemd-sysusers", "systemd-tmpfiles"):
        if shutil.which(tool) is None and not Path("/usr/bin", tool).is_file():
            _require(f"{tool} not found; install Debian's systemd package")


def _install(*args: str, nobody: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``gxpgate service install`` (as user nobody when the tests run as root)."""
    command = [str(GXPGATE), "service", "install", *args]
    if nobody and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            _require("setpriv (util-linux) not found")
        command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                   *command]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd="/")


# Where nobody cannot read this checkout or its Python (e.g. under /root): the same process
# imports the CLI as root, then becomes nobody before parsing the arguments.
_AS_NOBODY = f"""
import os, sys
from gxpgate.agent.cli.main import app
os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})
app(sys.argv[1:], prog_name="gxpgate")
"""


def _nobody_can_run_gxpgate() -> bool:
    if os.geteuid() != 0:
        return True
    probe = _install("--help", nobody=True)
    return probe.returncode == 0


def _snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything under ``root``: type, mode, owner, and for files contents and modification
    time. Not a folder's modification time: systemd-sysusers takes /etc/.pwd.lock and works
    through temporary files even when it has nothing to change."""
    seen: dict[str, tuple[object, ...]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        content: tuple[object, ...] = ()
        if path.is_file():
            content = (hashlib.sha256(path.read_bytes()).hexdigest(), info.st_mtime_ns)
        seen[str(path.relative_to(root))] = (info.st_mode, info.st_uid, info.st_gid, *content)
    return seen


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


_BASE_GROUP = "root:x:0:\ndialout:x:20:\n"


def _base_system(root: Path) -> None:
    """The part of an image's base system the install relies on: root, and group dialout."""
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text(_BASE_GROUP)
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc/gshadow").write_text("root:*::\ndialout:*::\n")


def test_install_then_again_changes_nothing(as_root: None, tmp_path: Path) -> None:
    root = tmp_path / "root"
    _base_system(root)
    first = _install("--root", str(root))
    assert first.returncode == 0, first.stdout + first.stderr

    unit = root / "etc/systemd/system/gxpgate.service"
    expected = render_unit(unit_file_text("gxpgate.service"), str(GXPGATE), DEFAULT_CONFIG)
    assert unit.read_text() == expected
    assert f"ExecStart={GXPGATE} run --config /etc/gxpgate/gxpgate.toml" in expected
    for name, dest in (("gxpgate.sysusers", "etc/sysusers.d/gxpgate.conf"),
                       ("gxpgate.tmpfiles", "etc/tmpfiles.d/gxpgate.conf")):  # fmt: skip
        assert (root / dest).read_text() == unit_file_text(name)
        assert _mode(root / dest) == 0o644
    assert _mode(unit) == 0o644

    account = service_account(root)
    assert account is not None
    passwd = next(line for line in (root / "etc/passwd").read_text().splitlines()
                  if line.startswith("gxpgate:"))  # fmt: skip
    assert passwd.endswith(":/var/lib/gxpgate:/usr/sbin/nologin")
    assert {"dialout", "gxpgate-admin"} <= set(member_groups(root))
    assert "dialout:x:20:gxpgate" in (root / "etc/group").read_text(), "the system's dialout"

    config_dir = root / "etc/gxpgate"
    assert (_mode(config_dir), config_dir.stat().st_uid, config_dir.stat().st_gid) == (
        0o750, 0, account.gid
    )  # fmt: skip
    key = config_dir / "signing.key"
    assert (_mode(key), key.stat().st_uid, key.stat().st_gid) == (0o600, account.uid, account.gid)
    assert describe(load_private_key(key).public_key()) in first.stdout
    config = config_dir / "gxpgate.toml"
    assert (_mode(config), config.stat().st_uid, config.stat().st_gid) == (0o640, 0, account.gid)
    assert config.read_text() == starting_config(DEFAULT_CONFIG)
    assert load_config(config).config.signing.key_file == Path("/etc/gxpgate/signing.key")
    state = root / "var/lib/gxpgate"
    assert (_mode(state), state.stat().st_uid) == (0o755, account.uid)

    out = first.stdout
    assert "EDIT IT before starting the service" in out
    # The starting config suits the unit: its key is the credential, it writes only its state.
    warnings = [line for line in out.splitlines() if "WARNING" in line]
    assert not [w for w in warnings if "the service could not run" not in w], warnings
    for step in ("systemctl daemon-reload", "systemctl enable --now gxpgate",
                 "journalctl -u gxpgate -f", f"{GXPGATE} status"):  # fmt: skip
        assert step in out, step

    before = _snapshot(root)
    second = _install("--root", str(root))
    assert second.returncode == 0, second.stdout + second.stderr
    assert _snapshot(root) == before
    lines = second.stdout.splitlines()
    assert not [line for line in lines if line.split()[:1] in (["created"], ["updated"])]
    assert sum(line.split()[:1] == ["unchanged"] for line in lines) == 3
    for thing in ("user gxpgate", str(key), str(config)):
        assert any(line.split()[:1] == ["exists"] and thing in line for line in lines), thing
    assert "still the example" in second.stdout, "an unedited example is still called one"
    assert describe(load_private_key(key).public_key()) in second.stdout


def test_dry_run_changes_nothing(as_root: None, tmp_path: Path) -> None:
    root = tmp_path / "root"
    _base_system(root)
    empty = _snapshot(root)
    dry = _install("--root", str(root), "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert _snapshot(root) == empty
    for thing in ("gxpgate.service", "sysusers.d/gxpgate.conf", "tmpfiles.d/gxpgate.conf",
                  "user gxpgate", "signing.key", "gxpgate.toml"):  # fmt: skip
        assert any("would create" in line and thing in line for line in dry.stdout.splitlines())
    assert "systemd-sysusers" in dry.stdout
    assert "systemd-tmpfiles" in dry.stdout

    assert _install("--root", str(root)).returncode == 0
    before = _snapshot(root)
    again = _install("--root", str(root), "--dry-run")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "would" not in again.stdout.replace("would run", "")
    assert _snapshot(root) == before


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """An empty staging root an unprivileged user may look into (pytest's tmp_path is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="gxpgate-root-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root)


def test_refuses_when_not_root(shared_root: Path) -> None:
    if _nobody_can_run_gxpgate():
        refused = _install("--root", str(shared_root), nobody=True)
    else:
        refused = subprocess.run(
            [sys.executable, "-c", _AS_NOBODY, "service", "install", "--root", str(shared_root)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "must run as root" in refused.stderr
    assert "sudo gxpgate service install" in refused.stderr
    assert "--dry-run" in refused.stderr
    assert list(shared_root.iterdir()) == []


def test_dry_run_works_as_an_unprivileged_user(shared_root: Path) -> None:
    if not _nobody_can_run_gxpgate():
        pytest.skip(f"user nobody cannot run {GXPGATE} (its folder or Python is not readable)")
    dry = _install("--root", str(shared_root), "--dry-run", nobody=True)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would create" in dry.stdout
    assert list(shared_root.iterdir()) == []


def test_invalid_config_exits_2_naming_file_and_field(as_root: None, tmp_path: Path) -> None:
    root = tmp_path / "root"
    config = root / "etc/gxpgate/gxpgate.toml"
    config.parent.mkdir(parents=True)
    text = starting_config(DEFAULT_CONFIG).replace('id = "gw-basel-dc1"', 'id = "Basel DC1"')
    config.write_text(text)
    result = _install("--root", str(root))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{config}: gateway.id:" in result.stderr
    assert config.read_text() == text, "an existing config is never rewritten"


def test_what_the_sandbox_would_break_is_named(as_root: None, tmp_path: Path) -> None:
    root = tmp_path / "root"
    config = root / "etc/gxpgate/site.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        '[gateway]\nid = "gw-1"\nsite = "Site"\n'
        '[signing]\nkey_file = "/etc/gxpgate/gw-1.key"\n'
        '[buffer]\npath = "/srv/gxpgate/buffer.db"\n'
        '[zones.cold]\nprofile = "refrigerated"\n'
        '[devices.drop]\ntype = "csv_drop"\nfolder = "/home/qa/drop"\nzone = "cold"\n'
        'time_column = "t"\npoints.temperature = { column = "T", unit = "Cel" }\n'
    )
    result = _install("--root", str(root), "--config", "/etc/gxpgate/site.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in result.stdout.splitlines() if "WARNING" in line]
    assert any("signing.key_file is /etc/gxpgate/gw-1.key" in w for w in warnings), warnings
    assert any("ReadWritePaths=/srv/gxpgate" in w for w in warnings), warnings
    assert any("devices.drop.folder: /home/qa/drop is under /home" in w for w in warnings)
    unit = (root / "etc/systemd/system/gxpgate.service").read_text()
    assert "run --config /etc/gxpgate/site.toml\n" in unit


def test_wheel_ships_the_unit_files_all_under_one_namespace(tmp_path: Path) -> None:
    """``pip install .`` builds a wheel: the unit files must be in it and found from it, and
    everything it installs is under ``gxpgate/`` (no top-level ``agent``, ``config``, … to
    collide with another distribution's)."""
    source = tmp_path / "src"
    shutil.copytree(
        ROOT, source, symlinks=True,
        ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                      ".*_cache", ".hypothesis"),
    )  # fmt: skip
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q",
         "-w", str(tmp_path / "wheel")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if built.returncode != 0:
        _require(f"cannot build the wheel (is the package index reachable?): {built.stderr[-800:]}")
    (wheel,) = (tmp_path / "wheel").glob("gxpgate-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for name in ("gxpgate.service", "gxpgate.sysusers", "gxpgate.tmpfiles"):
            shipped = archive.read(f"gxpgate/agent/systemd_units/{name}").decode()
            assert shipped == (ROOT / "systemd" / name).read_text(), name
        top = {n.split("/")[0] for n in archive.namelist()}
        assert {n for n in top if not n.endswith(".dist-info")} == {"gxpgate"}
        for module in (
            "agent/recording/recorder.py",
            "drivers/modbus_tcp.py",
            "buffer/outbox.py",
            "config/example.toml",
            "simulators/modbus_sim.py",
        ):
            assert f"gxpgate/{module}" in archive.namelist(), module

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    probe = subprocess.run(
        [sys.executable, "-c",
         "import gxpgate.agent.service.install as s; print(s.__file__); "
         "import importlib.util as u; assert u.find_spec('agent') is None; "
         "print(s.unit_file_text('gxpgate.service'), end='')"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    where, _, text = probe.stdout.partition("\n")
    assert where.startswith(str(target)), "the wheel's copy must be the one imported"
    assert text == (ROOT / "systemd" / "gxpgate.service").read_text()


def test_empty_staging_root_gets_no_passwd_of_its_own(as_root: None, tmp_path: Path) -> None:
    """An image staged before it has a base system: the sysusers.d snippet only, no passwd,
    group or shadow holding gxpgate alone, no dialout with a gid of systemd-sysusers' choosing;
    the key and config exist (root's) for systemd-tmpfiles to hand over at first boot."""
    root = tmp_path / "root"
    root.mkdir()
    result = _install("--root", str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("passwd", "group", "shadow", "gshadow"):
        assert not (root / "etc" / name).exists(), name
    assert (root / "etc/sysusers.d/gxpgate.conf").read_text() == unit_file_text("gxpgate.sysusers")
    assert "deferred" in result.stdout
    assert "first boot" in result.stdout
    key = root / "etc/gxpgate/signing.key"
    assert (_mode(key), key.stat().st_uid) == (0o600, 0)
    assert describe(load_private_key(key).public_key()) in result.stdout
    tmpfiles = unit_file_text("gxpgate.tmpfiles")
    assert "z /etc/gxpgate/signing.key 0600 gxpgate gxpgate -" in tmpfiles
    assert "z /etc/gxpgate/gxpgate.toml 0640 root gxpgate -" in tmpfiles
    again = _install("--root", str(root))
    assert again.returncode == 0, again.stdout + again.stderr
    assert not (root / "etc/passwd").exists()


@pytest.mark.parametrize("buffer", ["/tmp/gx/buffer.db", "/home/qa/buffer.db"])
def test_a_written_path_the_sandbox_hides_is_pointed_at_the_state_dir(
    as_root: None, tmp_path: Path, buffer: str
) -> None:
    """/etc is read-only under ProtectSystem=strict: never suggested for what the service
    writes."""
    root = tmp_path / "root"
    _base_system(root)
    config = root / "etc/gxpgate/gxpgate.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        '[gateway]\nid = "gw-1"\nsite = "Site"\n'
        '[signing]\nkey_file = "/etc/gxpgate/signing.key"\n'
        f'[buffer]\npath = "{buffer}"\n'
        '[zones.cold]\nprofile = "refrigerated"\n'
    )
    result = _install("--root", str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in result.stdout.splitlines() if "buffer.path" in line]
    assert warnings, result.stdout
    assert all("/var/lib/gxpgate" in w and "/etc/gxpgate" not in w for w in warnings), warnings


@pytest.mark.parametrize("config", ["/tmp/site/gxpgate.toml", "/home/qa/gxpgate.toml"])
def test_a_config_the_sandbox_hides_is_warned_about(
    as_root: None, tmp_path: Path, config: str
) -> None:
    root = tmp_path / "root"
    _base_system(root)
    result = _install("--root", str(root), "--config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in result.stdout.splitlines() if "WARNING" in line]
    assert any(f"the config {config} is under" in w for w in warnings), warnings
