"""Certificates made in the test with `cryptography`: a CA, a server certificate for
127.0.0.1/localhost, client certificates with the identities mTLS maps to principals,
and keys for signing JWTs."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

PEM = serialization.Encoding.PEM


def key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def public_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class Identity:
    """A certificate and its key, as files and as bytes."""

    cert_path: Path
    key_path: Path

    @property
    def cert(self) -> bytes:
        return self.cert_path.read_bytes()

    @property
    def key(self) -> bytes:
        return self.key_path.read_bytes()


class Authority:
    """A CA that signs server and client certificates into `directory`."""

    def __init__(self, directory: Path, name: str = "hotsvc test CA") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self._cert = (
            _builder(subject, subject, self._key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_path = directory / "ca.pem"
        self.ca_path.write_bytes(self._cert.public_bytes(PEM))

    @property
    def ca(self) -> bytes:
        return self.ca_path.read_bytes()

    def issue(
        self, file_name: str, common_name: str, sans: list[x509.GeneralName] | None = None
    ) -> Identity:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = _builder(subject, self._cert.subject, key).add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        identity = Identity(
            self.directory / f"{file_name}.pem", self.directory / f"{file_name}.key"
        )
        identity.cert_path.write_bytes(cert.public_bytes(PEM))
        identity.key_path.write_bytes(key_pem(key))
        identity.key_path.chmod(0o600)
        return identity

    def server(self) -> Identity:
        return self.issue(
            "server",
            "hotsvc",
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        )

    def credentials(self, client: Identity | None = None) -> grpc.ChannelCredentials:
        """What a client trusting this CA connects with, presenting `client` if given."""
        if client is None:
            return grpc.ssl_channel_credentials(self.ca)
        return grpc.ssl_channel_credentials(self.ca, client.key, client.cert)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: CertificateIssuerPrivateKeyTypes
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )
