"""TLS: ``rediss://`` against a real redis-server with a TLS port and a certificate of our own.

The certificates are made here (a throw-away CA and a server certificate for 127.0.0.1, with the
``cryptography`` package Keepsake already depends on). The store must verify the server against
the CA it is given, refuse a server it cannot verify, and run its local cache over TLS too.
"""

from __future__ import annotations

import datetime
import ipaddress
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flask_keepsake.errors import StoreUnavailable
from flask_keepsake.stores.base import SessionRecord
from flask_keepsake.stores.redis import RedisStore
from flask_keepsake.testing.servers import RedisServer, free_port

NOW = time.time()


def _write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def make_certificates(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA certificate, and a server certificate and key for 127.0.0.1 signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return (
        _write_pem(directory / f"{name}-ca.pem", ca.public_bytes(pem)),
        _write_pem(directory / f"{name}-server.pem", server.public_bytes(pem)),
        _write_pem(
            directory / f"{name}-server.key",
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        ),
    )


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[RedisServer, int, Path]]:
    """A redis-server with a TLS port (the plain port is for the test's own inspection)."""
    ca, cert, key = make_certificates(tmp_path, "good")
    tls_port = free_port()
    server = RedisServer(
        tmp_path / "redis",
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(cert),
        "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(ca),
        "--tls-auth-clients", "no",
    ).start()  # fmt: skip
    yield server, tls_port, ca
    server.stop()


def record() -> SessionRecord:
    return SessionRecord(
        "a" * 64, "handle-a", {"cart": '"apple"'}, None, NOW, NOW, NOW + 60, NOW + 60
    )


@pytest.mark.parametrize("local_cache", [0, 100], ids=["no-cache", "local-cache"])
def test_rediss_with_the_right_ca(
    tls_server: tuple[RedisServer, int, Path], local_cache: int
) -> None:
    server, port, ca = tls_server
    url = f"rediss://127.0.0.1:{port}/0"
    store = RedisStore.from_url(url, ssl_ca_certs=str(ca), local_cache=local_cache)
    try:
        assert store.describe().startswith(f"rediss://127.0.0.1:{port}/0")
        store.create(record())
        assert store.load("a" * 64, NOW) == record()
        assert store.apply("a" * 64, {"n": "1"}, (), NOW)
        server.admin().hset(b"keepsake:s:" + b"a" * 64, "d:m", "2")  # another client, plain port
        deadline = time.monotonic() + 2
        while (loaded := store.load("a" * 64, NOW)) is not None and "m" not in loaded.data:
            assert time.monotonic() < deadline, "the change never reached the store"
            time.sleep(0.001)
        assert loaded is not None
        assert loaded.data == {"cart": '"apple"', "n": "1", "m": "2"}
    finally:
        store.close()


def test_a_server_the_ca_does_not_vouch_for_is_refused(
    tls_server: tuple[RedisServer, int, Path], tmp_path: Path
) -> None:
    _, port, _ = tls_server
    other_ca, _, _ = make_certificates(tmp_path, "other")
    store = RedisStore.from_url(f"rediss://127.0.0.1:{port}/0", ssl_ca_certs=str(other_ca))
    try:
        with pytest.raises(StoreUnavailable, match="certificate verify failed"):
            store.load("a" * 64, NOW)
    finally:
        store.close()


def test_plain_redis_on_a_tls_port_is_unavailable(
    tls_server: tuple[RedisServer, int, Path],
) -> None:
    _, port, _ = tls_server
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=0.3)
    try:
        with pytest.raises(StoreUnavailable):
            store.load("a" * 64, NOW)
    finally:
        store.close()
