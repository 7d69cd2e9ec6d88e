"""The systemd unit (systemd/gxpgate.service): it passes ``systemd-analyze verify``, its exposure
stays at or below 2.0 (and is the figure the unit and the README state), it keeps what the
product needs, and the product runs under the unit's seccomp filters.

These need ``systemd-analyze`` (Debian's ``systemd`` package). Without it they skip, unless
``GXPGATE_REQUIRE_SYSTEMD=1`` (set by ``.ci/run``, which installs the package): then they fail.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from gxpgate.agent.evidence import KeyFileError, generate_key_file, key_path_for, load_private_key
from gxpgate.agent.service.install import DEFAULT_CONFIG, render_unit, unit_file_text

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "gxpgate.service"
GXPGATE = Path(sys.executable).parent / "gxpgate"
MAX_EXPOSURE = 2.0


def _require(what: str) -> None:
    message = f"{what}; install Debian's systemd package (apt-get install systemd)"
    if os.environ.get("GXPGATE_REQUIRE_SYSTEMD"):
        pytest.fail(f"{message} — GXPGATE_REQUIRE_SYSTEMD is set, so this must not skip")
    pytest.skip(message)


@pytest.fixture(scope="module")
def analyze() -> str:
    found = shutil.which("systemd-analyze") or (
        "/usr/bin/systemd-analyze" if Path("/usr/bin/systemd-analyze").is_file() else None
    )
    if found is None:
        _require("systemd-analyze not found")
    return found


def _rendered(tmp_path: Path) -> Path:
    unit = tmp_path / "gxpgate.service"
    unit.write_text(render_unit(UNIT.read_text(), str(GXPGATE), DEFAULT_CONFIG))
    return unit


def _verify(analyze: str, unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )


def test_packaged_unit_files_are_the_checked_in_ones() -> None:
    for name in ("gxpgate.service", "gxpgate.sysusers", "gxpgate.tmpfiles"):
        assert unit_file_text(name) == (ROOT / "systemd" / name).read_text(), name


def test_rendered_unit_passes_verify_without_a_warning(tmp_path: Path, analyze: str) -> None:
    # verify resolves ExecStart (hence the venv's gxpgate) but needs no user gxpgate.
    result = _verify(analyze, _rendered(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_verify_reports_a_misspelt_option(tmp_path: Path, analyze: str) -> None:
    """The check above is worth something: verify only warns about unknown keys."""
    unit = _rendered(tmp_path)
    unit.write_text(unit.read_text().replace("ProtectSystem=", "ProtectSytem="))
    result = _verify(analyze, unit)
    assert "Unknown key 'ProtectSytem'" in result.stdout + result.stderr


def test_an_unusual_install_path_is_quoted_as_systemd_reads_it(
    tmp_path: Path, analyze: str
) -> None:
    """verify resolves the command: a path with a space, % and $ must come out unchanged."""
    odd = tmp_path / "opt 100% $HOME" / "bin" / "gxpgate"
    odd.parent.mkdir(parents=True)
    odd.write_text("#!/bin/sh\n")
    odd.chmod(0o755)
    unit = tmp_path / "gxpgate.service"
    unit.write_text(render_unit(UNIT.read_text(), str(odd), Path("/etc/gxpgate/site a.toml")))
    result = _verify(analyze, unit)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def _exposure(analyze: str, unit: Path) -> float:
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout[-2000:]
    return float(found.group(1))


def test_exposure_is_at_most_2_0_and_is_the_documented_figure(tmp_path: Path, analyze: str) -> None:
    exposure = _exposure(analyze, UNIT)
    assert exposure <= MAX_EXPOSURE
    assert _exposure(analyze, _rendered(tmp_path)) == exposure
    assert f"rates this unit {exposure}" in UNIT.read_text(), "update the unit's header"
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Run it as a service", 1)[1].split("\n## ", 1)[0]
    assert f"**{exposure}**" in section, "update the figure in README 'Run it as a service'"


def _service_settings(text: str) -> list[tuple[str, str]]:
    settings, section = [], ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.append((key, value))
    return settings


def test_unit_keeps_what_the_product_needs() -> None:
    settings = _service_settings(UNIT.read_text())
    values = {key: value for key, value in settings}
    assert values["Type"] == "notify"
    assert values["NotifyAccess"] == "main"
    assert values["WatchdogSec"]
    assert values["ExecStartPre"].endswith(f"config validate {DEFAULT_CONFIG}")
    assert values["User"] == "gxpgate"
    assert "dialout" in values["SupplementaryGroups"].split()
    assert values["StateDirectory"] == values["ConfigurationDirectory"] == "gxpgate"
    assert values["LoadCredential"] == "signing.key:/etc/gxpgate/signing.key"
    # Serial ports stay reachable: no PrivateDevices=, a closed policy listing them.
    assert values.get("PrivateDevices", "no") == "no"
    assert values["DevicePolicy"] == "closed"
    allowed = {value for key, value in settings if key == "DeviceAllow"}
    assert {"char-ttyS rw", "char-ttyUSB rw", "char-ttyACM rw"} <= allowed
    assert set(values["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}


# -- the unit's seccomp filters, applied to the real product ---------------------------------

# Installs seccomp filters as systemd 252 derives them from the unit (SystemCallFilter= with
# @default, SystemCallErrorNumber=, MemoryDenyWriteExecute=, RestrictAddressFamilies=, native
# architecture only, no new privileges), then execs the command. Filters with a default of
# "allow" go first: once the allow list is loaded, seccomp() itself may be refused.
_LAUNCHER = r"""
import ctypes, json, os, sys
policy, command = json.loads(sys.argv[1]), sys.argv[2:]
lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]
lib.seccomp_rule_add_array.argtypes = [
    ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Cmp)]
ALLOW, EQ, GE, MASKED_EQ = 0x7FFF0000, 4, 5, 7
def errno_action(number): return 0x00050000 | number
def rule(ctx, action, name, *cmps):
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr == -1:
        return  # a name this libseccomp does not know: systemd skips those too
    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), (Cmp * len(cmps))(*cmps))
    if rc:
        raise OSError(-rc, f"seccomp_rule_add_array({name})")
def load(ctx):
    rc = lib.seccomp_load(ctx)
    if rc:
        raise OSError(-rc, "seccomp_load")
if policy["mdwe"]:
    ctx = lib.seccomp_init(ALLOW)
    for name, mask in (("mmap", 0x6), ("mmap2", 0x6), ("mprotect", 0x4),
                       ("pkey_mprotect", 0x4), ("shmat", 0o100000)):
        rule(ctx, errno_action(1), name, Cmp(2, MASKED_EQ, mask, mask))
    load(ctx)
if policy["families"] is not None:
    ctx = lib.seccomp_init(ALLOW)
    for family in range(policy["af_max"]):
        if family not in policy["families"]:
            rule(ctx, errno_action(97), "socket", Cmp(0, EQ, family, 0))
    rule(ctx, errno_action(97), "socket", Cmp(0, GE, policy["af_max"], 0))
    load(ctx)
ctx = lib.seccomp_init(errno_action(policy["errno"]))
for name in policy["allow"]:
    rule(ctx, ALLOW, name)
load(ctx)
os.execvp(command[0], command)
"""


def _expand(analyze: str, names: list[str], cache: dict[str, set[str]]) -> set[str]:
    calls: set[str] = set()
    for name in names:
        if not name.startswith("@"):
            calls.add(name)
            continue
        if name not in cache:
            listing = subprocess.run(
                [analyze, "syscall-filter", "--no-pager", name],
                capture_output=True, text=True, timeout=30, check=True,
            ).stdout.splitlines()  # fmt: skip
            members = [
                m.strip() for m in listing[1:] if m.strip() and not m.strip().startswith("#")
            ]
            cache[name] = _expand(analyze, members, cache)
        calls |= cache[name]
    return calls


def _seccomp_policy(analyze: str, unit_text: str) -> dict[str, object]:
    settings = _service_settings(unit_text)
    cache: dict[str, set[str]] = {}
    allow: set[str] | None = None
    for key, value in settings:
        if key != "SystemCallFilter":
            continue
        deny = value.startswith("~")
        names = _expand(analyze, value.lstrip("~").split(), cache)
        if allow is None:
            assert not deny, "this emulation handles an allow list first, as the unit has"
            allow = _expand(analyze, ["@default"], cache) | names
        elif deny:
            allow -= names
        else:
            allow |= names
    assert allow is not None, "the unit has no SystemCallFilter="
    values = dict(settings)
    families = values.get("RestrictAddressFamilies")
    return {
        "allow": sorted(allow),
        "errno": getattr(errno, values.get("SystemCallErrorNumber", "EPERM")),
        "mdwe": values.get("MemoryDenyWriteExecute") == "yes",
        "families": None if families is None else [getattr(socket, f) for f in families.split()],
        "af_max": 46,
    }


@pytest.fixture(scope="module")
def sandboxed(analyze: str) -> list[str]:
    """The command prefix that runs a command under the unit's seccomp filters."""
    import ctypes.util

    if ctypes.util.find_library("seccomp") is None:
        _require("libseccomp not found")
    policy = _seccomp_policy(analyze, UNIT.read_text())
    return [sys.executable, "-c", _LAUNCHER, json.dumps(policy)]


_PROBE = r"""
import ctypes, mmap, os, socket, sys
def refused(action):
    try:
        action()
    except OSError as exc:
        return exc.errno
    return 0
print("wx_mmap", refused(lambda: mmap.mmap(-1, 4096, prot=7)))
print("netlink", refused(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)))
print("inet6", refused(lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()))
# glibc asks netlink which address families are configured; refused, it assumes both.
print("resolve", refused(lambda: socket.getaddrinfo("localhost", 1883, flags=socket.AI_ADDRCONFIG)))
print("setaffinity", refused(lambda: os.sched_setaffinity(0, os.sched_getaffinity(0))))
print("chown", refused(lambda: os.chown(sys.argv[1], -1, os.getgid())))
libc = ctypes.CDLL(None, use_errno=True)
timex = ctypes.create_string_buffer(512)
print("adjtimex_read", 0 if libc.adjtimex(timex) >= 0 else ctypes.get_errno())
"""


def test_sandbox_enforces_the_units_filters(sandboxed: list[str], tmp_path: Path) -> None:
    """The emulation bites where the unit does (so the demo below proves something) and lets
    through what the product needs."""
    target = tmp_path / "socket-stand-in"
    target.touch()
    result = subprocess.run(
        [*sandboxed, sys.executable, "-c", _PROBE, str(target)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    seen = dict(line.split() for line in result.stdout.splitlines())
    assert seen == {
        "wx_mmap": "1",  # EPERM: MemoryDenyWriteExecute=
        "netlink": "97",  # EAFNOSUPPORT: RestrictAddressFamilies=
        "inet6": "0",
        "resolve": "0",
        "setaffinity": "1",  # EPERM: ~@resources
        "chown": "0",  # handing the control socket to the admin group
        "adjtimex_read": "0",  # the NTP state
    }


def test_demo_runs_under_the_units_seccomp_filters(sandboxed: list[str], tmp_path: Path) -> None:
    """Drivers, simulators, the HTTP uplink, the signatures (cryptography, pynacl), orjson,
    pydantic-core, ctypes for adjtimex: nothing needs a refused call or W+X memory."""
    result = subprocess.run(
        [*sandboxed, str(GXPGATE), "demo", "--seconds", "8", "--workdir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "verification: PASSED" in result.stdout, result.stdout[-3000:]
    assert "Operation not permitted" not in result.stdout + result.stderr


# -- the signing key as a systemd credential --------------------------------------------------


def _acl_user_read(path: Path, uid: int) -> None:
    """What systemd's write_credential() does where the file system has ACLs: the file is
    0400 and the service's user gets read access by an ACL entry (system.posix_acl_access,
    version 2; entries sorted by tag: user_obj, user, group_obj, mask, other)."""
    undefined = 0xFFFFFFFF
    entries = [(0x01, 4, undefined), (0x02, 4, uid), (0x04, 0, undefined),
               (0x10, 4, undefined), (0x20, 0, undefined)]  # fmt: skip
    value = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
    try:
        os.setxattr(path, "system.posix_acl_access", value)
    except OSError as exc:
        pytest.skip(f"no POSIX ACLs on {path.parent}: {exc.strerror}")


def test_signing_key_credential_as_systemd_writes_it_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    key = creds / "signing.key"
    expected = generate_key_file(key).public_key()
    key.chmod(0o400)
    _acl_user_read(key, 65534)
    assert stat.S_IMODE(key.stat().st_mode) == 0o440  # the ACL mask shows as group bits
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    found = key_path_for(Path("/etc/gxpgate/signing.key"))
    assert found == key
    assert load_private_key(found).public_key() == expected
    # Anywhere else the same modes are refused: the relaxation is for systemd's copy only.
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(KeyFileError, match="mode 0440 lets other users read"):
        load_private_key(key)


def test_signing_key_credential_without_acls_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the file system has no ACLs (ramfs, systemd 252's first choice) systemd makes
    the copy 0400 and owned by the service's user instead."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    key = creds / "signing.key"
    generate_key_file(key)
    key.chmod(0o400)
    if os.geteuid() == 0:
        os.chown(key, 65534, 65534)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert load_private_key(key_path_for(Path("/etc/gxpgate/signing.key")))
