"""Certificates the TLS tests make for themselves: a CA, server certificates (good, expired, for another name, from
another CA) and client certificates, written as PEM files in a directory. Nothing here is trusted outside a test."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import harness


@dataclass
class Pair:
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(directory: Path, stem: str, cert: x509.Certificate, key) -> Pair:
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return Pair(cert_path, key_path)


class Authority:
    """A CA that signs what the tests need."""

    def __init__(self, directory: Path, name: str = "Lifeguard Test CA"):
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        stem = name.lower().replace(" ", "-")
        self.pair = _write(directory, stem, self.cert, self.key)

    @property
    def path(self) -> Path:
        return self.pair.cert

    def issue(self, stem: str, common_name: str, dns: list[str] = (), ips: list[str] = (), server: bool = True,
              days: float = 365, valid_from_days: float = -1) -> Pair:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=valid_from_days))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server
                                                  else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return _write(self.directory, stem, builder.sign(self.key, hashes.SHA256()), key)


@dataclass
class TestPKI:
    directory: Path
    ca: Authority
    other_ca: Authority
    server: Pair          # localhost and 127.0.0.1
    expired: Pair         # the same names, expired yesterday
    wrong_name: Pair      # only db.example.com
    untrusted: Pair       # good names, signed by the other CA
    lifeguard: Pair       # Lifeguard's own certificate for its clients (localhost, 127.0.0.1)


def make_pki(directory: Path) -> TestPKI:
    directory.mkdir(parents=True, exist_ok=True)
    ca = Authority(directory)
    other = Authority(directory, "Other Test CA")
    local = dict(dns=["localhost"], ips=[harness.LOOPBACK])
    return TestPKI(
        directory=directory,
        ca=ca,
        other_ca=other,
        server=ca.issue("server", "localhost", **local),
        expired=ca.issue("expired", "localhost", days=-1, valid_from_days=-30, **local),
        wrong_name=ca.issue("wrong-name", "db.example.com", dns=["db.example.com"]),
        untrusted=other.issue("untrusted", "localhost", **local),
        lifeguard=ca.issue("lifeguard", "localhost", **local),
    )


def for_postgres(pair: Pair, directory: Path) -> Pair:
    """Copies of a pair that the postgres user may read (the key mode 0600, owned by postgres when we are root)."""
    directory.mkdir(parents=True, exist_ok=True)
    copy = Pair(directory / pair.cert.name, directory / pair.key.name)
    shutil.copyfile(pair.cert, copy.cert)
    shutil.copyfile(pair.key, copy.key)
    os.chmod(copy.key, 0o600)
    if harness.IS_ROOT:
        for path in (directory, copy.cert, copy.key):
            shutil.chown(path, "postgres", "postgres")
    return copy
