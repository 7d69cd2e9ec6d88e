"""What must hold before the agent starts, checked the same way by ``gxpgate run`` and by
``gxpgate config validate``: the signing key (present, mode 0600, Ed25519), every credential
and certificate file the config names (a readable file), the buffer's folder (writable), and,
for ``validate`` only, the metrics port (free). Each problem is one line: field path, reason.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from gxpgate.agent.evidence import KeyFileError, key_path_for, load_private_key
from gxpgate.buffer import BufferLock, BufferLocked
from gxpgate.config import GatewayConfig

__all__ = ["Problem", "port_problems", "start_problems"]

Problem = tuple[str, str]
"""(field path, reason)."""


def start_problems(config: GatewayConfig) -> list[Problem]:
    """Everything ``run`` refuses to start without, all of it at once."""
    problems: list[Problem] = []
    try:
        load_private_key(key_path_for(config.signing.key_file))
    except KeyFileError as exc:
        problems.append(("signing.key_file", str(exc)))
    files: list[tuple[str, Path | None]] = []
    if config.uplink is not None:
        files += [(f"uplink.{n}", getattr(config.uplink, n)) for n in config.uplink.file_fields]
    mqtt = config.alarms.mqtt
    if mqtt is not None:
        names = ("ca_file", "cert_file", "key_file", "password_file")
        files += [(f"alarms.mqtt.{n}", getattr(mqtt, n)) for n in names]
    for field, path in files:
        if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
            problems.append((field, f"{path} is not a readable file"))
    folder = _existing_parent(config.buffer.path)
    if not folder.is_dir():
        problems.append(("buffer.path", f"{folder} is not a folder"))
    elif not os.access(folder, os.W_OK | os.X_OK):
        problems.append(("buffer.path", f"{folder} is not writable by this user"))
    return problems


def port_problems(config: GatewayConfig) -> list[Problem]:
    """The metrics port must be free, unless the gxpgate running on this very buffer holds it
    (then validating its config before a reload is the normal case)."""
    metrics = config.metrics
    if not metrics.enabled:
        return []
    with socket.socket(socket.AF_INET6 if ":" in str(metrics.address) else socket.AF_INET) as s:
        try:
            s.bind((str(metrics.address), metrics.port))
            return []
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return [("metrics.port", f"cannot listen on {metrics.address}:{metrics.port}: "
                         f"{exc.strerror}")]  # fmt: skip
    lock = BufferLock(config.buffer.path)
    if lock.path.exists():  # never create the buffer's folder or files just to look
        try:
            with lock:
                pass
        except BufferLocked:
            return []  # the gxpgate running on this buffer holds it
        except OSError:
            pass
    return [(
        "metrics.port",
        f"{metrics.address}:{metrics.port} is in use by another program (choose another port "
        "or stop it)",
    )]  # fmt: skip


def _existing_parent(path: Path) -> Path:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder
