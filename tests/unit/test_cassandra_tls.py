"""A node certificate the client refuses (issue 22): fatal with one line naming the variable to
fix, never waited for. The shapes are the driver's own: its TLS handshake against a listener in
this process, with certificates made for the test run (no Cassandra, no file kept)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cassandra.cluster import NoHostAvailable
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ecom_pipeline import cassandra_io
from ecom_pipeline.config import CassandraSettings, TlsSettings
from ecom_pipeline.errors import FatalStoreError, TransientStoreError
from tests.unit.pki import certificate


def verify_failed(reason: str, address: str = "127.0.0.1") -> PermissionError:
    """What the driver keeps per node when the handshake's certificate check fails: it catches
    the ssl.SSLCertVerificationError and raises socket.error(1, ...), which Python makes a
    PermissionError (errno 1 is EPERM), with OpenSSL's words after "Last error:"."""
    return PermissionError(
        1,
        f"Tried connecting to [('{address}', 9042)]. Last error: [SSL: CERTIFICATE_VERIFY_FAILED] "
        f"certificate verify failed: {reason} (_ssl.c:1006)",
    )


FOREIGN_CA = NoHostAvailable(
    "Unable to connect to any servers",
    {
        "127.0.0.1:9042": verify_failed("unable to get local issuer certificate"),
        "127.0.0.2:9042": verify_failed("unable to get local issuer certificate", "127.0.0.2"),
    },
)
WRONG_ADDRESS = NoHostAvailable(
    "Unable to connect to any servers",
    {"127.0.0.1:9042": verify_failed("IP address mismatch, certificate is not valid for '127.0.0.1'.")},
)


def test_a_certificate_that_every_node_fails_is_fatal_in_one_line_naming_the_ca_variable():
    translated = cassandra_io.translate_error(FOREIGN_CA)
    assert type(translated) is FatalStoreError
    message = str(translated)
    assert "CASSANDRA_SSL_CA_CERT" in message and message.count("unable to get local issuer certificate") == 1
    assert "\n" not in message and "Tried connecting" not in message and "_ssl.c" not in message
    assert translated.__cause__ is FOREIGN_CA


def test_a_certificate_that_names_another_address_is_fatal_and_names_the_hosts_variable():
    translated = cassandra_io.translate_error(WRONG_ADDRESS)
    assert type(translated) is FatalStoreError
    assert "CASSANDRA_HOSTS" in str(translated) and "IP address mismatch" in str(translated)


def test_the_standard_librarys_own_verification_error_is_fatal_too():
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    translated = cassandra_io.translate_error(NoHostAvailable("x", {"127.0.0.1:9042": error}))
    assert type(translated) is FatalStoreError and "CASSANDRA_SSL_CA_CERT" in str(translated)


def test_a_node_that_fails_the_check_while_another_is_down_is_an_outage():
    """Only a certificate that every node fails is a setting to fix; a node down may be the one
    with the right certificate."""
    mixed = NoHostAvailable(
        "x",
        {
            "127.0.0.1:9042": verify_failed("unable to get local issuer certificate"),
            "127.0.0.2:9042": ConnectionRefusedError(111, "refused"),
        },
    )
    assert type(cassandra_io.translate_error(mixed)) is TransientStoreError


def test_other_permission_errors_are_not_certificate_failures():
    refused = NoHostAvailable("x", {"127.0.0.1:9042": PermissionError(1, "Operation not permitted")})
    assert type(cassandra_io.translate_error(refused)) is TransientStoreError


# --- the real driver against a TLS listener ------------------------------------------------------


def _tls_listener(directory: Path, node_address: str) -> Iterator[int]:
    """A TLS server on 127.0.0.1 presenting a certificate for `node_address` signed by
    `directory`/ca.pem; it completes handshakes and nothing more. Yields its port."""
    ca_key, node_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    (directory / "ca.pem").write_bytes(certificate("test-ca", ca_key, "test-ca", ca_key))
    (directory / "node.pem").write_bytes(certificate("node", node_key, "test-ca", ca_key, node_address))
    (directory / "node.key").write_bytes(
        node_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    foreign_key = ec.generate_private_key(ec.SECP256R1())
    (directory / "foreign-ca.pem").write_bytes(certificate("foreign-ca", foreign_key, "foreign-ca", foreign_key))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(directory / "node.pem", directory / "node.key")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                with contextlib.suppress(OSError):  # the client refused our certificate, as expected
                    server.wrap_socket(connection, server_side=True).close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@pytest.fixture
def node_for_127_0_0_1(tmp_path: Path) -> Iterator[int]:
    yield from _tls_listener(tmp_path, "127.0.0.1")


@pytest.fixture
def node_for_127_0_0_2(tmp_path: Path) -> Iterator[int]:
    yield from _tls_listener(tmp_path, "127.0.0.2")


def _connect(port: int, ca: Path) -> None:
    settings = CassandraSettings(port=port, tls=TlsSettings(ca), request_timeout=5)
    cluster, _session = cassandra_io.connect_session(settings, None)
    cluster.shutdown()


def test_the_driver_fails_a_node_signed_by_another_ca_with_one_fatal_line(node_for_127_0_0_1, tmp_path):
    with pytest.raises(FatalStoreError) as raised:
        _connect(node_for_127_0_0_1, tmp_path / "foreign-ca.pem")
    message = str(raised.value)
    assert "CASSANDRA_SSL_CA_CERT" in message and "unable to get local issuer certificate" in message
    assert "\n" not in message
    [per_node] = raised.value.__cause__.errors.values()  # type: ignore[union-attr]  # NoHostAvailable's
    assert isinstance(per_node, PermissionError)  # the shape the literal tests above rebuild


def test_the_driver_fails_a_node_whose_certificate_names_another_address(node_for_127_0_0_2, tmp_path):
    with pytest.raises(FatalStoreError, match="CASSANDRA_HOSTS"):
        _connect(node_for_127_0_0_2, tmp_path / "ca.pem")
