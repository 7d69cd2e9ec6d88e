"""A real MQTT broker for tests, on a free loopback port: the ``mqtt_broker`` fixture.

Which broker: ``mosquitto`` (the Debian package; ``.ci/run`` installs it) when it is on ``PATH``
or at ``/usr/sbin/mosquitto``, else the pure-Python ``amqtt`` broker from the ``test`` extra, run
as ``python -m amqtt.scripts.broker_script``. ``GXPGATE_TEST_BROKER=mosquitto`` or ``=amqtt``
forces one (``auto``, the default, chooses as above); a forced broker that is missing fails the
test rather than skipping it.

Each broker is a subprocess with a generated config: one listener on ``127.0.0.1:PORT``,
anonymous clients, no persistence. So :meth:`Broker.restart` (stop, start on the same port) gives
a broker that has lost its retained messages and sessions, as a real one without persistence
does. :meth:`Broker.pause` / :meth:`Broker.resume` (SIGSTOP / SIGCONT) freeze it with its sockets
open: packets are accepted by the kernel but nothing is acknowledged.

``mqtt_tls_broker`` is the same with a TLS listener whose certificate (for IP 127.0.0.1) is signed
by a throw-away CA: ``.tls.ca_file`` is that CA, trusted by nothing else; ``.tls.client_cert_file``
and ``.tls.client_key_file`` are a client certificate signed by it.

``mqtt_broker_factory`` starts brokers with options: ``persistence`` (sessions and queued
messages survive :meth:`Broker.restart`, as with ``persistence true`` in production),
``require_client_cert``, ``users`` (user name → password; anonymous clients are then refused)
and ``extra`` config lines (``max_packet_size``, ``acl_file``, …);
:meth:`Broker.reload` (SIGHUP) makes mosquitto re-read them. These are mosquitto features:
amqtt keeps no queued messages across a restart and speaks MQTT 3.1.1 only, so a test that
needs them calls :func:`require_mosquitto`, which skips it with the reason where only amqtt is
installed, and fails it in CI (``CI`` set) or when ``GXPGATE_TEST_BROKER=mosquitto``.

Readiness is an MQTT handshake (CONNECT, CONNACK), never a sleep. The fixture starts no threads;
:func:`retained_messages` drives a paho client in the calling thread.

Registered for every test module by ``pytest_plugins = ["tests.broker"]`` in ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.util
import ipaddress
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

__all__ = [
    "Broker",
    "BrokerKind",
    "TlsFiles",
    "make_tls_files",
    "mqtt_broker",
    "mqtt_broker_factory",
    "mqtt_tls_broker",
    "require_mosquitto",
    "retained",
    "retained_messages",
]

BrokerKind = Literal["mosquitto", "amqtt"]

ENV = "GXPGATE_TEST_BROKER"
_READY_SECS = 15.0
_STOP_SECS = 5.0


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path
    client_cert_file: Path | None = None
    client_key_file: Path | None = None


class Broker:
    """One broker subprocess on a fixed loopback port; restartable on the same port."""

    host = "127.0.0.1"

    def __init__(
        self,
        kind: BrokerKind,
        workdir: Path,
        port: int,
        tls: TlsFiles | None = None,
        *,
        persistence: bool = False,
        require_client_cert: bool = False,
        users: dict[str, str] | None = None,
        extra: str = "",
    ) -> None:
        if kind != "mosquitto" and (persistence or extra or users):
            raise ValueError("persistence, users and extra config lines are for mosquitto")
        if require_client_cert and tls is None:
            raise ValueError("require_client_cert needs tls")
        self.kind: BrokerKind = kind
        self.port = port
        self.tls = tls
        self.persistence = persistence
        self.require_client_cert = require_client_cert
        self.users = dict(users or {})
        self.extra = extra
        self.workdir = workdir
        self.log_path = workdir / f"{kind}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._config = self._write_config()

    @property
    def running(self) -> bool:
        return self._proc is not None

    def start(self) -> None:
        """Start the broker and return once it answers an MQTT CONNECT."""
        if self._proc is not None:
            raise RuntimeError("broker already running")
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        self._wait_ready()

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and reap it. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # in case it is paused
            proc.terminate()
            try:
                proc.wait(_STOP_SECS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(_STOP_SECS)

    def restart(self) -> None:
        """Stop and start again on the same port. Retained messages, sessions and the messages
        queued for them are gone, unless the broker was made with ``persistence``."""
        self.stop()
        self.start()

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads its config, e.g. an ``acl_file`` the test rewrote."""
        assert self._proc is not None, "broker not running"
        self._proc.send_signal(signal.SIGHUP)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open, nothing is acknowledged."""
        assert self._proc is not None, "broker not running"
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None, "broker not running"
        self._proc.send_signal(signal.SIGCONT)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"Broker(kind={self.kind!r}, port={self.port}, running={self.running})"

    def _write_config(self) -> Path:
        tls = self.tls
        if self.kind == "mosquitto":
            path = self.workdir / "mosquitto.conf"
            tls_lines = f"certfile {tls.cert_file}\nkeyfile {tls.key_file}\n" if tls else ""
            if tls and self.require_client_cert:
                tls_lines += f"cafile {tls.ca_file}\nrequire_certificate true\n"
            persistence = (
                f"persistence true\npersistence_location {self.workdir}/\n"
                if self.persistence
                else "persistence false\n"
            )
            access = "allow_anonymous true\n"
            if self.users:
                access = f"allow_anonymous false\npassword_file {self._password_file()}\n"
            path.write_text(
                f"listener {self.port} {self.host}\n"
                f"{tls_lines}"
                # As root it would switch to the user "mosquitto", who cannot read the tmp dir.
                f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
                f"{access}"
                f"{persistence}"
                f"{self.extra}\n"
                "log_dest stderr\n"
                "log_type error\nlog_type warning\nlog_type notice\n",
                encoding="utf-8",
            )
        else:
            path = self.workdir / "amqtt.yaml"
            listener: dict[str, Any] = {"type": "tcp", "bind": f"{self.host}:{self.port}"}
            if tls:
                listener |= {
                    "ssl": True,
                    "certfile": str(tls.cert_file),
                    "keyfile": str(tls.key_file),
                }
                if self.require_client_cert:  # amqtt verifies a certificate but needs none
                    listener["cafile"] = str(tls.ca_file)
            config = {  # JSON is YAML
                "listeners": {"default": listener},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            }
            path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        return path

    def _password_file(self) -> Path:
        path = self.workdir / "passwords"
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        path.write_text("", encoding="utf-8")
        for user, password in self.users.items():
            subprocess.run([tool, "-b", str(path), user, password], check=True)
        return path

    def _command(self) -> list[str]:
        if self.kind == "mosquitto":
            return [_mosquitto_path() or "mosquitto", "-c", str(self._config)]
        return [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(self._config)]

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + _READY_SECS
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(f"{self.kind} exited with {code}:\n{self.log_text()}")
            try:
                # With users, the anonymous probe is refused: that CONNACK is the answer too.
                tls = self.tls if self.require_client_cert else _without_client_cert(self.tls)
                if _mqtt_handshake(self.host, self.port, tls, refused_ok=bool(self.users)):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.kind} not ready in {_READY_SECS}s:\n{self.log_text()}")
            time.sleep(0.02)


def _without_client_cert(tls: TlsFiles | None) -> TlsFiles | None:
    # A broker that asks for a certificate without trusting our CA (amqtt) would refuse it.
    return None if tls is None else TlsFiles(tls.ca_file, tls.cert_file, tls.key_file)


def _mqtt_handshake(
    host: str, port: int, tls: TlsFiles | None, *, refused_ok: bool = False
) -> bool:
    """CONNECT (MQTT 3.1.1, clean session) and expect a CONNACK accepting it (or, with
    ``refused_ok``, refusing an anonymous client: code 5, not authorised); then DISCONNECT."""
    client_id = f"probe-{uuid.uuid4().hex[:12]}".encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(client_id).to_bytes(2, "big") + client_id
    sock = socket.create_connection((host, port), timeout=2.0)
    if tls is not None:
        try:
            context = ssl.create_default_context(cafile=tls.ca_file)
            if tls.client_cert_file is not None:
                context.load_cert_chain(tls.client_cert_file, tls.client_key_file)
            sock = context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
    with sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        connack = b""
        while len(connack) < 4:
            chunk = sock.recv(4 - len(connack))
            if not chunk:
                return False
            connack += chunk
        with contextlib.suppress(OSError):  # a broker that refused may have closed already
            sock.sendall(b"\xe0\x00")
    return connack[0] == 0x20 and connack[3] in ((0, 5) if refused_ok else (0,))


def _mosquitto_path() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def choose_kind() -> BrokerKind:
    wanted = os.environ.get(ENV, "auto").strip().lower() or "auto"
    has_amqtt = importlib.util.find_spec("amqtt") is not None
    if wanted == "mosquitto":
        if _mosquitto_path() is None:
            pytest.fail(
                f"{ENV}=mosquitto but mosquitto is not installed (apt-get install mosquitto)"
            )
        return "mosquitto"
    if wanted == "amqtt":
        if not has_amqtt:
            pytest.fail(f"{ENV}=amqtt but amqtt is not installed (pip install -e '.[test]')")
        return "amqtt"
    if wanted != "auto":
        pytest.fail(f"{ENV}={wanted!r}: expected mosquitto, amqtt or auto")
    if _mosquitto_path() is not None:
        return "mosquitto"
    if has_amqtt:
        return "amqtt"
    pytest.fail("no MQTT broker: apt-get install mosquitto, or pip install -e '.[test]' (amqtt)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def make_tls_files(directory: Path) -> TlsFiles:
    """A throw-away CA, a server certificate for IP 127.0.0.1 and a client certificate, both
    signed by it (PEM files)."""
    now = dt.datetime.now(dt.UTC)

    def issue(
        name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None
    ) -> tuple[x509.Name, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"gxpgate test {name}")])
        issuer_name, issuer_key = issuer or (subject, key)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), True)
        )
        if issuer is not None:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        cert = builder.sign(issuer_key, hashes.SHA256())
        (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        (directory / f"{name}.key").write_bytes(key_pem)
        return subject, key

    ca = issue("ca", None)
    issue("server", ca)
    issue("client", ca)
    return TlsFiles(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "client.pem",
        directory / "client.key",
    )


def _run(broker: Broker) -> Iterator[Broker]:
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A fresh broker per test; ``.host``, ``.port``, ``.kind``, ``.restart()``."""
    yield from _run(Broker(choose_kind(), tmp_path_factory.mktemp("mqtt-broker"), free_port()))


def require_mosquitto(why: str) -> None:
    """Skip (with ``why``) where only amqtt is available; fail instead in CI or when
    ``GXPGATE_TEST_BROKER=mosquitto`` (then :func:`choose_kind` has already failed)."""
    if choose_kind() == "mosquitto":
        return
    message = f"needs mosquitto, not amqtt: {why}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must install mosquitto)")
    pytest.skip(message)


@pytest.fixture
def mqtt_broker_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``make(tls=False, **options)`` starts a :class:`Broker` (options as its constructor's) on
    a free port; every broker made is stopped at the end of the test."""
    made: list[Broker] = []

    def make(*, tls: bool = False, **options: Any) -> Broker:
        workdir = tmp_path_factory.mktemp("mqtt-broker")
        files = make_tls_files(workdir) if tls else None
        broker = Broker(choose_kind(), workdir, free_port(), files, **options)
        made.append(broker)
        broker.start()
        return broker

    try:
        yield make
    finally:
        for broker in made:
            broker.stop()


@pytest.fixture
def mqtt_tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """Like ``mqtt_broker``, TLS only; ``.tls.ca_file`` is the CA that signed its certificate."""
    workdir = tmp_path_factory.mktemp("mqtt-tls-broker")
    tls = make_tls_files(workdir)
    yield from _run(Broker(choose_kind(), workdir, free_port(), tls))


def retained_messages(broker: Broker, topic_filter: str, timeout: float = 5.0) -> dict[str, bytes]:
    """What a subscriber connecting now is sent as retained under ``topic_filter``.

    Subscribes to the filter and to a private sentinel topic, and after the SUBACK publishes to
    the sentinel: the broker sends a subscription's retained messages before it handles the
    next packet, so the sentinel's return marks the end of them. No threads: paho is driven
    from this one.
    """
    sentinel = f"gxpgate-test/sentinel/{uuid.uuid4().hex}"
    found: dict[str, bytes] = {}
    done = False

    def on_connect(client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        assert not reason.is_failure, f"probe refused: {reason}"
        client.subscribe([(topic_filter, 1), (sentinel, 1)])

    def on_subscribe(client: paho.Client, _u: Any, _mid: int, _r: Any, _p: Any) -> None:
        client.publish(sentinel, b"end", qos=1)

    def on_message(_c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        nonlocal done
        if message.topic == sentinel:
            done = True
        elif message.retain:
            found[message.topic] = bytes(message.payload)

    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:12]}", clean_session=True
    )
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    deadline = time.monotonic() + timeout
    client.connect(broker.host, broker.port, keepalive=10)
    try:
        while not done:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no end of retained messages from {broker} in {timeout}s")
            client.loop(timeout=0.05)
    finally:
        client.disconnect()
    return found


async def retained(broker: Broker, topic_filter: str, timeout: float = 5.0) -> dict[str, bytes]:  # noqa: ASYNC109
    """:func:`retained_messages` off the event loop (the caller's paho thread keeps running)."""
    return await asyncio.to_thread(retained_messages, broker, topic_filter, timeout)
