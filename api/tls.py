"""TLS: the configured certificate, or a self-signed one generated at first start."""
from __future__ import annotations

import datetime
import ipaddress
import logging
import os
from pathlib import Path

from conf.config import Security

log = logging.getLogger(__name__)


def certificate_files(folder: Path, security: Security) -> tuple[str, str]:
    """Return (certificate, private key) paths: configured ones, else a generated pair."""
    if security.certificate and security.private_key:
        return security.certificate, security.private_key
    certificate, key = folder / "cert.pem", folder / "key.pem"
    if not (certificate.is_file() and key.is_file()):
        write_self_signed(certificate, key)
        log.warning("generated a self-signed TLS certificate in %s: browsers will warn until you "
                    "configure security.certificate and security.private_key", folder)
    return str(certificate), str(key)


def write_self_signed(certificate: Path, key: Path, host: str = "localhost") -> None:
    """Write a self-signed certificate for localhost/127.0.0.1 and its key (mode 0600)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(private_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(private_key, hashes.SHA256()))
    certificate.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
