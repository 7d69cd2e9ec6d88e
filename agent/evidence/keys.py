"""The gateway's Ed25519 signing key: creation, loading, and the file checks an auditor expects.

The private key is unencrypted PKCS#8 PEM (CONTRACT §2) and must be mode 0600 or stricter:
a key other local users can read could forge evidence, so a looser mode refuses to load.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gxpgate.agent.evidence.record import key_id, public_key_pem

__all__ = [
    "KeyFileError",
    "generate_key_file",
    "key_path_for",
    "load_private_key",
    "load_public_key",
    "public_key_path_for",
]


class KeyFileError(Exception):
    """A key file is missing, unreadable, too open, or not an Ed25519 key."""


def key_path_for(configured: Path) -> Path:
    """The configured key, or systemd's credential of the same name when there is one."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        candidate = Path(creds) / configured.name
        if candidate.is_file():
            return candidate
    return configured


def generate_key_file(path: Path) -> Ed25519PrivateKey:
    """Create a new key at ``path`` with mode 0600; never overwrites an existing file."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a signing key") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    return key


def _too_open(path: Path) -> int:
    """The mode bits that make ``path`` too open for a signing key. systemd's copy of a
    credential (LoadCredential=) is mode 0400 plus an ACL giving the service's user read access
    wherever the file system has ACLs (tmpfs: systemd >= 254 on kernel >= 6.3, or any version
    without its own mount); stat() then shows the ACL mask as group bits, 0440. That copy lies
    in a read-only directory only the service's user can enter, so there only bits for others
    count."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    return 0o007 if creds and path.parent == Path(creds) else 0o077


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{path}: not a regular file")
        if info.st_mode & _too_open(path):
            mode = stat.S_IMODE(info.st_mode)
            raise KeyFileError(
                f"{path}: mode {mode:04o} lets other users read the signing key; "
                f"run: chmod 600 {path}"
            )
        pem = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(
            f"{path}: no such key file (create one with: gxpgate keys generate --out {path})"
        ) from None
    except PermissionError:
        raise KeyFileError(f"{path}: permission denied") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not an unencrypted PKCS#8 PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from None
    if b"PRIVATE KEY" in pem:
        # A private key must not travel to auditors or services: ask for the public one.
        raise KeyFileError(
            f"{path}: is a private key; give the public key PEM (gxpgate keys generate wrote it "
            f"beside the key as {public_key_path_for(path).name}; gxpgate keys show --key "
            f"{path} prints it)"
        )
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise KeyFileError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 public key")
    return key


def public_key_path_for(key_file: Path) -> Path:
    """Where ``keys generate`` writes the public key PEM: ``signing.key`` → ``signing.pub.pem``."""
    return key_file.with_name(f"{key_file.stem}.pub.pem")


def describe(key: Ed25519PublicKey) -> str:
    """Key id and public key PEM, as ``gxpgate keys`` prints them."""
    return f"key id: {key_id(key)}\n{public_key_pem(key)}"
