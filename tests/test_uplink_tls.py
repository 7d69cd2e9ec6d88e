"""TLS verification is on by default; a CA file and a client certificate (mTLS) work."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gxpgate.simulators.modbus_sim import ModbusSimulator
from gxpgate.simulators.quality_service import QualityServiceSimulator

from .running import GW, Running, until


def _cert(tmp: Path, name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
          *, ca: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    (tmp / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


def _server_context(tmp: Path, client_ca: Path | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp / "server.pem", tmp / "server.key")
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return context


def test_tls_verified_by_default_then_ca_file_and_mtls(
    tmp_path: Path, write_config, signing_key
) -> None:
    ca = _cert(tmp_path, "ca", None, ca=True)
    _cert(tmp_path, "server", ca)
    _cert(tmp_path, "client", ca)
    public = signing_key[1].public_key()

    async def main() -> None:
        async with ModbusSimulator() as sim:
            context = _server_context(tmp_path, client_ca=tmp_path / "ca.pem")
            with QualityServiceSimulator(tmp_path / "qs.db", [public], ssl_context=context) as qs:
                assert qs.url.startswith("https://")
                # 1. Default: the service's certificate is not trusted → nothing delivered.
                config = write_config(sim.port, qs.url)
                async with Running(config) as agent:
                    await until(lambda: agent.forwarder.stats.last_error is not None)
                    assert "CERTIFICATE_VERIFY_FAILED" in agent.forwarder.stats.last_error
                    chain = agent.outbox.chain
                assert qs.acked_through(GW, chain) == 0

                # 2. CA file but no client certificate: the service requires one → refused.
                text = config.read_text().replace(
                    "[uplink]\n", f'[uplink]\nca_file = "{tmp_path / "ca.pem"}"\n'
                )
                config.write_text(text)
                async with Running(config) as agent:
                    await until(lambda: agent.forwarder.stats.last_error is not None)
                assert qs.acked_through(GW, chain) == 0

                # 3. CA file and client certificate: delivered, all of it.
                config.write_text(
                    text.replace(
                        "[uplink]\n",
                        f'[uplink]\nclient_cert_file = "{tmp_path / "client.pem"}"\n'
                        f'client_key_file = "{tmp_path / "client.key"}"\n',
                    )
                )
                async with Running(config) as agent:
                    await until(lambda: qs.acked_through(GW, chain) >= agent.outbox.last_seq - 3)
                assert qs.verification_report(GW, chain)["ok"]

    asyncio.run(main())
