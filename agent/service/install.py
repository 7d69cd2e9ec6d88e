"""Installing gxpgate as a systemd service (``gxpgate service install``).

Where things go — an administrator's install, not a distribution package's, hence ``/etc``:

- ``/etc/systemd/system/gxpgate.service``: the unit from ``systemd/``, its ExecStartPre= and
  ExecStart= rendered with the absolute path of the gxpgate that runs this (a virtualenv's);
- ``/etc/sysusers.d/gxpgate.conf``: user ``gxpgate`` in groups dialout and gxpgate-admin,
  applied now with ``systemd-sysusers``;
- ``/etc/tmpfiles.d/gxpgate.conf``: ``/etc/gxpgate`` root:gxpgate 0750, applied now with
  ``systemd-tmpfiles --create``;
- ``/etc/gxpgate/signing.key``: created when absent, 0600, owned by gxpgate (the unit's
  ``LoadCredential=`` source);
- ``/etc/gxpgate/gxpgate.toml``: the commented example when absent, 0640 root:gxpgate;
- ``/var/lib/gxpgate``: 0755 gxpgate (the unit's ``StateDirectory=`` keeps it so).

Idempotent: a second run changes nothing and says what exists. The key and the config are
never overwritten. The unit and the snippets belong to gxpgate and are rewritten when they
differ (an upgrade); local changes go into drop-ins (``systemctl edit gxpgate``).

With a root other than ``/`` everything is staged under it, like ``DESTDIR``: the tools get
``--root``, and the service user is looked up in the root's own ``/etc/passwd``. The unit's
paths stay those the service will see (``/etc/gxpgate/…``), not the staging ones.

Every step is reported through ``echo`` as it is taken (or, in a dry run, would be); nothing
here exits or decides exit codes. Errors are :class:`InstallError`, whose message says what to
do.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from pydantic import BaseModel

from gxpgate.config import GatewayConfig, example_config_text

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_EXECUTABLE",
    "KEY_PATH",
    "Account",
    "InstallError",
    "Installer",
    "config_path_warnings",
    "config_warnings",
    "executable_problems",
    "group_exists",
    "hidden_by_sandbox",
    "member_groups",
    "render_unit",
    "running_executable",
    "service_account",
    "starting_config",
    "unit_file_text",
    "unit_quote",
]

SERVICE_USER = "gxpgate"
SERIAL_GROUP = "dialout"
"""The system's group of the serial ports: a member, never created by gxpgate."""
DEFAULT_EXECUTABLE = "/opt/gxpgate/bin/gxpgate"
"""The ExecStart path of the checked-in unit: gxpgate in a virtualenv at /opt/gxpgate."""
DEFAULT_CONFIG = Path("/etc/gxpgate/gxpgate.toml")
CONFIG_DIR = Path("/etc/gxpgate")
KEY_PATH = CONFIG_DIR / "signing.key"
"""The unit's ``LoadCredential=signing.key:`` source."""
STATE_DIR = Path("/var/lib/gxpgate")
RUNTIME_DIR = Path("/run/gxpgate")

UNIT_DEST = Path("/etc/systemd/system/gxpgate.service")
SYSUSERS_DEST = Path("/etc/sysusers.d/gxpgate.conf")
TMPFILES_DEST = Path("/etc/tmpfiles.d/gxpgate.conf")

# What the unit's sandbox hides (ProtectHome=yes, PrivateTmp=yes) and where it may write.
_HIDDEN = (Path("/home"), Path("/root"), Path("/run/user"), Path("/tmp"), Path("/var/tmp"))
_WRITABLE = (STATE_DIR, RUNTIME_DIR)
_PLAIN_ARG = re.compile(r"[A-Za-z0-9_./:+@,=-]+")


class InstallError(Exception):
    """A step cannot be taken; the message says why and what to do."""


def unit_file_text(name: str) -> str:
    """A file of ``systemd/`` as shipped with this gxpgate (package data of ``agent``)."""
    return files("gxpgate.agent").joinpath("systemd_units", name).read_text(encoding="utf-8")


def unit_quote(arg: str, *, command: bool = False) -> str:
    """``arg`` as one word of an Exec line: ``%`` (specifiers) doubled, and ``$`` (variables)
    too except in the command itself, which systemd does not expand; double quotes around
    anything but plain path characters."""
    escaped = arg.replace("%", "%%") if command else arg.replace("%", "%%").replace("$", "$$")
    if _PLAIN_ARG.fullmatch(arg):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(template: str, executable: str, config: Path) -> str:
    """The unit with its Exec lines pointing at ``executable`` and ``config``."""
    lines = []
    rendered = 0
    for line in template.splitlines(keepends=True):
        if line.startswith(("ExecStartPre=", "ExecStart=")):
            key, _, command = line.rstrip("\n").partition("=")
            words = command.split()
            if not words or words[0] != DEFAULT_EXECUTABLE or str(DEFAULT_CONFIG) not in words:
                raise InstallError(f"unexpected {key}= line in the shipped unit: {line.strip()}")
            words = [
                unit_quote(executable, command=True) if word == DEFAULT_EXECUTABLE
                else unit_quote(str(config)) if word == str(DEFAULT_CONFIG)
                else word
                for word in words
            ]  # fmt: skip
            line = f"{key}={' '.join(words)}\n"
            rendered += 1
        lines.append(line)
    if rendered != 2:
        raise InstallError("the shipped unit lacks its ExecStartPre= and ExecStart= lines")
    return "".join(lines)


def running_executable(argv0: str, python: str) -> Path:
    """The gxpgate command that is running: the console script itself, or the one beside the
    interpreter (``python -m gxpgate`` in a virtualenv), or the one on ``PATH``."""
    candidates = [Path(argv0), Path(python).parent / "gxpgate"]
    found = shutil.which("gxpgate")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.name == "gxpgate" and candidate.is_file() and os.access(candidate, os.X_OK):
            return Path(os.path.abspath(candidate))
    raise InstallError(
        "cannot tell where the gxpgate command is; run this as /path/to/venv/bin/gxpgate"
    )


def hidden_by_sandbox(path: Path) -> Path | None:
    """The folder hiding ``path`` from the service (ProtectHome=, PrivateTmp=), if any."""
    for hidden in _HIDDEN:
        if path == hidden or hidden in path.parents:
            return hidden
    return None


def _interpreter(script: Path) -> Path | None:
    try:
        with script.open("rb") as handle:
            first = handle.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode("utf-8", "replace").split()
    return Path(words[0]) if words else None


def executable_problems(executable: Path) -> list[str]:
    """Why the service could not run ``executable``: it, or the Python it starts, lies where
    the unit's sandbox hides it (ProtectHome=yes, PrivateTmp=yes)."""
    paths = [executable, Path(os.path.realpath(executable))]
    interpreter = _interpreter(executable)
    if interpreter is not None:
        paths += [interpreter, Path(os.path.realpath(interpreter))]
    hidden = [f"{path} (under {hidden_by_sandbox(path)})" for path in dict.fromkeys(paths)
              if hidden_by_sandbox(path) is not None]  # fmt: skip
    if not hidden:
        return []
    return [
        f"the service could not run gxpgate: {', '.join(hidden)} is hidden from it "
        "(ProtectHome=yes, PrivateTmp=yes); install gxpgate elsewhere, e.g. "
        "python3 -m venv /opt/gxpgate && /opt/gxpgate/bin/pip install ... && "
        "sudo /opt/gxpgate/bin/gxpgate service install"
    ]


def _config_paths(model: object, where: tuple[str, ...] = ()) -> Iterator[tuple[str, Path]]:
    """Every path a config names, with its field path."""
    if isinstance(model, Path):
        yield ".".join(where), model
    elif isinstance(model, BaseModel):
        for name in type(model).model_fields:
            yield from _config_paths(getattr(model, name), (*where, name))
    elif isinstance(model, dict):
        for key, value in model.items():
            yield from _config_paths(value, (*where, str(key)))
    elif isinstance(model, list | tuple):
        for index, value in enumerate(model):
            yield from _config_paths(value, (*where, str(index)))


def config_warnings(config: GatewayConfig, root: Path = Path("/")) -> list[str]:
    """What in a valid config will not work under the unit: paths the sandbox hides or does not
    let the service write, and a key other than the one the unit hands over."""
    from gxpgate.agent.alarms.service import control_socket_path
    from gxpgate.drivers.filedrop_model import CsvDropDevice

    def seen(path: Path) -> Path:  # the path as the service sees it, not the staging one
        return (
            Path("/") / path.relative_to(root)
            if root != Path("/") and path.is_relative_to(root)
            else path
        )

    warnings = []
    key_file = seen(config.signing.key_file)
    if key_file != KEY_PATH:
        warnings.append(
            f"signing.key_file is {key_file}, but the unit hands {KEY_PATH} to the service as "
            "its credential signing.key, which replaces any key_file of that name; set "
            f'key_file = "{KEY_PATH}" so that the service and gxpgate run by hand use one key'
        )
    written = [("buffer.path", config.buffer.path.parent)]
    written.append(("alarms.control_socket", control_socket_path(config).parent))
    for dev_id, dev in config.devices.items():
        if isinstance(dev, CsvDropDevice):
            written.append((f"devices.{dev_id}.folder", dev.folder))
    written_fields = {field for field, _ in written}
    for field, path in _config_paths(config):
        hidden = hidden_by_sandbox(seen(path))
        if hidden is not None:
            # Only the state directory is writable under ProtectSystem=strict: /etc/gxpgate
            # suits what the service only reads, never what it writes.
            where = STATE_DIR if field in written_fields else f"{CONFIG_DIR} or {STATE_DIR}"
            warnings.append(
                f"{field}: {seen(path)} is under {hidden}, which the service cannot see; "
                f"move it, e.g. under {where}"
            )
    reported = set()
    for field, folder in written:
        folder = seen(folder)
        if folder in reported:
            continue
        reported.add(folder)
        if hidden_by_sandbox(folder) is None and not any(
            folder == allowed or allowed in folder.parents for allowed in _WRITABLE
        ):
            warnings.append(
                f"{field}: the service must write to {folder}, but may write only under "
                f"{STATE_DIR} and {RUNTIME_DIR}; allow it with `systemctl edit gxpgate`: "
                f"[Service] ReadWritePaths={folder}"
            )
    return warnings


def config_path_warnings(config_path: Path) -> list[str]:
    """The config the unit's Exec lines name must be visible to the service."""
    hidden = hidden_by_sandbox(config_path)
    if hidden is None:
        return []
    return [
        f"the config {config_path} is under {hidden}, which the service cannot see "
        f"(ProtectHome=yes, PrivateTmp=yes): it would fail at its first start; put it in "
        f"{CONFIG_DIR} (--config {DEFAULT_CONFIG}, the default)"
    ]


def group_exists(root: Path, name: str) -> bool:
    """Whether ``root``'s group database has ``name``: NSS for the real root, else
    root/etc/group."""
    if root == Path("/"):
        try:
            grp.getgrnam(name)
        except KeyError:
            return False
        return True
    try:
        lines = (root / "etc/group").read_text(encoding="utf-8").splitlines()
    except OSError:
        return False
    return any(line.split(":", 1)[0] == name for line in lines)


def starting_config(config_path: Path) -> str:
    """The commented example, headed by what must happen before the service is started."""
    return (
        f"# {config_path}: written by `gxpgate service install` from `gxpgate config example`.\n"
        "#\n"
        "# EDIT THIS FILE BEFORE STARTING THE SERVICE. Every value below is an example: the\n"
        "# gateway id, the zones, the devices (192.0.2.x are documentation addresses; the serial\n"
        "# ports may be something else on this machine), the quality service and the alarm\n"
        "# outputs. Keep what this site has, delete the rest, then:\n"
        f"#   sudo -u {SERVICE_USER} gxpgate config validate {config_path}\n"
        f"#   sudo systemctl enable --now {SERVICE_USER}\n"
        "#\n" + example_config_text()
    )


@dataclass(frozen=True)
class Account:
    uid: int
    gid: int


def service_account(root: Path) -> Account | None:
    """The service user in ``root``: from NSS for the real root, else from root/etc/passwd."""
    if root == Path("/"):
        try:
            entry = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            return None
        return Account(entry.pw_uid, entry.pw_gid)
    try:
        lines = (root / "etc/passwd").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == SERVICE_USER:
            return Account(int(fields[2]), int(fields[3]))
    return None


def _stat(path: Path) -> tuple[int, int, int] | bool | None:
    """Mode and owner of ``path``; False when absent, None when this user may not look (a dry
    run without root)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    except PermissionError:
        return None
    return info.st_mode, info.st_uid, info.st_gid


def member_groups(root: Path) -> list[str]:
    """The supplementary groups of the service user in ``root``'s /etc/group."""
    try:
        lines = (root / "etc/group").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [
        fields[0]
        for fields in (line.split(":") for line in lines)
        if len(fields) >= 4 and SERVICE_USER in fields[3].split(",")
    ]


@dataclass
class Installer:
    """The steps of ``gxpgate service install``; see the module docstring."""

    root: Path
    executable: Path
    config: Path
    """The config as the service sees it (absolute; inside ``root``)."""
    dry_run: bool
    echo: Callable[[str], None]

    config_is_example: bool = False
    """The config is (or would be) the unedited example: it must be edited before a start."""

    deferred: bool = False
    """Staged on a root without a base system: the user, its groups and ownership are left to
    systemd-sysusers and systemd-tmpfiles at that system's first boot."""

    def at(self, path: Path) -> Path:
        """Where ``path`` (as the service sees it) lies on this machine."""
        return self.root / path.relative_to("/")

    @property
    def staged(self) -> bool:
        return self.root != Path("/")

    def _say(self, state: str, what: str) -> None:
        self.echo(f"  {state:<10} {what}")

    # -- files --------------------------------------------------------------------------------

    def install_units(self) -> None:
        unit = render_unit(unit_file_text("gxpgate.service"), str(self.executable), self.config)
        self._install(UNIT_DEST, unit, f"(ExecStart={self.executable} run --config {self.config})")
        self._install(SYSUSERS_DEST, unit_file_text("gxpgate.sysusers"))
        self._install(TMPFILES_DEST, unit_file_text("gxpgate.tmpfiles"))

    def _install(self, dest: Path, text: str, note: str = "") -> None:
        target = self.at(dest)
        try:
            current = target.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        except PermissionError:
            if not self.dry_run:
                raise InstallError(f"cannot read {target}: permission denied") from None
            self._say("unknown", f"{target} (this user may not look; run with sudo)")
            return
        except OSError as exc:
            raise InstallError(f"cannot read {target}: {exc.strerror}") from None
        state = "create" if current is None else "unchanged" if current == text else "update"
        label = f"{target} {note}".rstrip()
        if state == "unchanged":
            self._say("unchanged", label)
            return
        if self.dry_run:
            self._say(f"would {state}", label)
            return
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.tmp")
            temporary.write_text(text, encoding="utf-8")
            temporary.chmod(0o644)
            os.replace(temporary, target)
        except OSError as exc:
            raise InstallError(f"cannot write {target}: {exc.strerror}") from None
        self._say("created" if state == "create" else "updated", label)

    # -- user and directories -----------------------------------------------------------------

    def _tool(self, name: str, *args: str) -> list[str]:
        path = shutil.which(name) or next(
            (str(p) for p in (Path("/usr/bin") / name, Path("/bin") / name) if p.is_file()), None
        )
        if path is None:
            raise InstallError(
                f"{name} not found: this command installs a systemd service and needs systemd's "
                "tools (apt-get install systemd)"
            )
        root = [f"--root={self.root}"] if self.staged else []
        return [path, *root, *args]

    def _run(self, command: list[str]) -> str:
        """Run a systemd tool; what it printed (it prints only what it changed)."""
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        output = (result.stderr + result.stdout).strip()
        if result.returncode != 0:
            raise InstallError(f"{' '.join(command)} failed (exit {result.returncode}): {output}")
        return output

    def create_user(self) -> Account | None:
        """The service user and its groups, by applying the sysusers.d snippet."""
        # By base name, so that systemd-sysusers applies the snippet found in its own search
        # path under the root (an /etc override included), as at boot.
        command = self._tool("systemd-sysusers", SYSUSERS_DEST.name)
        before = service_account(self.root)
        if before is None and not group_exists(self.root, SERIAL_GROUP):
            if not self.staged:
                raise InstallError(
                    f"this system has no group {SERIAL_GROUP}, which owns the serial ports and "
                    f"which the unit names (SupplementaryGroups={SERIAL_GROUP}); gxpgate never "
                    "creates it with a number of its own: create the system's serial-port group "
                    f"first (or set the unit's group with `systemctl edit gxpgate`)"
                )
            # An empty staging root (an image being built) has no base system yet: running
            # systemd-sysusers there would write a passwd, group and shadow holding only
            # gxpgate's entries, and create dialout with a gid of its choosing. The snippet
            # does the job at that system's first boot, against its real databases.
            self.deferred = True
            self._say(
                "deferred",
                f"user {SERVICE_USER}: {self.at(Path('/etc/group'))} has no group "
                f"{SERIAL_GROUP} (no base system yet); systemd-sysusers applies "
                f"{SYSUSERS_DEST} at first boot",
            )
            return None
        if self.dry_run:
            state = "exists" if before else "would create"
            self._say(state, f"user {SERVICE_USER} (would run {' '.join(command)})")
            return before
        changes = self._run(command)
        account = service_account(self.root)
        if account is None:
            raise InstallError(
                f"systemd-sysusers ran, yet there is no user {SERVICE_USER} in "
                f"{self.at(Path('/etc/passwd'))}; check {self.at(SYSUSERS_DEST)}"
            )
        groups = ", ".join(member_groups(self.root)) or "none"
        state = "created" if before is None else "updated" if changes else "exists"
        self._say(state, f"user {SERVICE_USER} (uid {account.uid}; groups {groups})")
        for line in changes.splitlines():
            self._say("", f"systemd-sysusers: {line}")
        return account

    def create_directories(self, account: Account | None) -> None:
        """/etc/gxpgate by applying the tmpfiles.d snippet; /var/lib/gxpgate."""
        config_dir = self.at(CONFIG_DIR)
        label = f"{config_dir} (0750 root:{SERVICE_USER})"
        command = self._tool("systemd-tmpfiles", "--create", TMPFILES_DEST.name)
        before = _stat(config_dir)
        if self.deferred:
            # systemd-tmpfiles cannot resolve group gxpgate yet; at first boot it gives the
            # folder (and the key and config in it, its z lines) to the service's user.
            note = f"(0750 root; group {SERVICE_USER} set by systemd-tmpfiles at first boot)"
            if before:
                self._say("exists", f"{config_dir}")
            elif self.dry_run:
                self._say("would create", f"{config_dir} {note}")
            else:
                try:
                    config_dir.mkdir(parents=True, mode=0o750)
                    config_dir.chmod(0o750)
                except OSError as exc:
                    raise InstallError(f"cannot create {config_dir}: {exc.strerror}") from None
                self._say("created", f"{config_dir} {note}")
            self._say("deferred", f"{self.at(STATE_DIR)} (the unit's StateDirectory= creates it)")
            return
        if self.dry_run:
            state = "exists" if before else "unknown" if before is None else "would create"
            self._say(state, f"{label} (would run {' '.join(command)})")
        else:
            self._run(command)
            after = _stat(config_dir)
            state = "created" if not before else "exists" if before == after else "fixed"
            self._say(state, label)
        state_dir = self.at(STATE_DIR)
        # StateDirectory= creates it at every start; created now as well so that the agent can
        # also be run by hand as the service user before the first start.
        if _stat(state_dir) is not False:
            self._say("exists", f"{state_dir}")
            return
        if self.dry_run or account is None:
            self._say("would create", f"{state_dir} (0755 {SERVICE_USER})")
            return
        try:
            state_dir.mkdir(parents=True)
            state_dir.chmod(0o755)
            os.chown(state_dir, account.uid, account.gid)
        except OSError as exc:
            raise InstallError(f"cannot create {state_dir}: {exc.strerror}") from None
        self._say("created", f"{state_dir} (0755 {SERVICE_USER})")

    # -- key and config -----------------------------------------------------------------------

    def create_key(self, account: Account | None) -> Path:
        """The signing key's file on this machine; created (0600, the service user's) if absent.
        An existing key is never touched."""
        from gxpgate.agent.evidence import KeyFileError, generate_key_file

        key = self.at(KEY_PATH)
        existing = _stat(key)
        if existing:
            self._say("exists", f"{key} (kept)")
            return key
        if existing is None:
            self._say("unknown", f"{key} (this user may not look; run with sudo)")
            return key
        owner = f"root until first boot, then {SERVICE_USER}" if self.deferred else SERVICE_USER
        if self.dry_run or (account is None and not self.deferred):
            self._say("would create", f"{key} (Ed25519, 0600 {owner})")
            return key
        try:
            generate_key_file(key)
            if account is not None:
                os.chown(key, account.uid, account.gid)
        except KeyFileError as exc:
            raise InstallError(str(exc)) from None
        except OSError as exc:
            raise InstallError(f"cannot give {key} to {SERVICE_USER}: {exc.strerror}") from None
        self._say("created", f"{key} (Ed25519, 0600 {owner})")
        return key

    def create_config(self, account: Account | None) -> Path:
        """The config's file on this machine; the commented example when absent."""
        path = self.at(self.config)
        existing = _stat(path)
        if existing:
            # Unreadable: a dry run without root; validation says more.
            with contextlib.suppress(OSError, UnicodeDecodeError):
                self.config_is_example = path.read_text("utf-8") == starting_config(self.config)
            self._say("exists", f"{path} (kept{', still the example' * self.config_is_example})")
            return path
        if existing is None:
            self._say("unknown", f"{path} (this user may not look; run with sudo)")
            return path
        if self.dry_run or (account is None and not self.deferred):
            self.config_is_example = True
            self._say("would create", f"{path} (the commented example, 0640 root:{SERVICE_USER})")
            return path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), 0o640)  # whatever the umask
                if account is not None:
                    os.fchown(handle.fileno(), 0, account.gid)
                handle.write(starting_config(self.config))
        except OSError as exc:
            raise InstallError(f"cannot create {path}: {exc.strerror}") from None
        self.config_is_example = True
        group = f"root; group {SERVICE_USER} at first boot" if self.deferred else SERVICE_USER
        self._say("created", f"{path} (the commented example, 0640 root:{group})")
        return path

    # -- systemd ------------------------------------------------------------------------------

    def daemon_reload(self) -> bool:
        """``systemctl daemon-reload`` when installing into the running system; whether done."""
        if self.staged:
            self._say("skipped", f"systemctl daemon-reload (staged under {self.root})")
            return False
        if not Path("/run/systemd/system").is_dir():
            self._say("skipped", "systemctl daemon-reload (systemd is not running here)")
            return False
        command = self._tool("systemctl", "daemon-reload")
        if self.dry_run:
            self._say("would run", " ".join(command))
            return False
        self._run(command)
        self._say("ran", " ".join(command))
        return True
