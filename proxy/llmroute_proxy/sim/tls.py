"""A certificate authority of our own, so simulators can serve HTTPS the sidecar must verify.

`LocalCA.create()` makes a fresh CA (EC P-256, valid for a day); `server_context` issues it a
server certificate for loopback names and returns the `ssl.SSLContext` a simulator serves with.
Clients trust `cert_pem` (or the file `write_cert` puts it in) and nothing else.

Needs the `cryptography` package (the `test` extra): the sidecar itself never imports this.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NAMES = ("127.0.0.1", "localhost")
VALIDITY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class LocalCA:
    name: str
    cert_pem: str
    """The CA certificate, PEM: what a client trusts."""
    _key: ec.EllipticCurvePrivateKey = field(repr=False)
    _cert: x509.Certificate = field(repr=False)

    @classmethod
    def create(cls, name: str = "llmroute test CA") -> LocalCA:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                               critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        return cls(name, cert.public_bytes(serialization.Encoding.PEM).decode(), key, cert)

    def issue(self, hosts: Sequence[str] = LOOPBACK_NAMES) -> tuple[str, str]:
        """A server certificate for `hosts` (IP addresses or DNS names): (cert PEM, key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
                .issuer_name(self._cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
                .add_extension(x509.SubjectAlternativeName([_general_name(host) for host in hosts]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                               critical=False)
                .sign(self._key, hashes.SHA256()))
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()

    def server_context(self, directory: Path, hosts: Sequence[str] = LOOPBACK_NAMES) -> ssl.SSLContext:
        """A server-side context with a fresh certificate for `hosts` (its files go in `directory`)."""
        cert_pem, key_pem = self.issue(hosts)
        directory.mkdir(parents=True, exist_ok=True)
        cert_file, key_file = directory / "server.pem", directory / "server.key"
        cert_file.write_text(cert_pem)
        key_file.write_text(key_pem)
        key_file.chmod(0o600)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        return context

    def write_cert(self, path: Path) -> Path:
        path.write_text(self.cert_pem)
        return path


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)
