"""The secured node's key material and passwords (CASSANDRA_SECURE=1): a local CA and the node's
certificate made with keytool, generated secrets, the superuser's password change, a client's TLS."""

from __future__ import annotations

import logging
import secrets
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .common import ROOT, STACK_DIR, Endpoints

__all__ = [
    "ADMIN_PASSWORD",
    "ADMIN_ROLE",
    "CA_CERT",
    "KEYSTORE",
    "PIPELINE_PASSWORD",
    "PIPELINE_ROLE",
    "SECURE_DIR",
    "STORE_PASSWORD",
    "admin_password",
    "change_default_password",
    "client_tls",
    "ensure_key_material",
    "ensure_passwords",
    "secret",
]

# Key material and passwords generated at start, never committed (.stack/).
SECURE_DIR = STACK_DIR / "secure"
CA_CERT = SECURE_DIR / "ca.pem"
KEYSTORE = SECURE_DIR / "node.p12"
STORE_PASSWORD = SECURE_DIR / "store-password"
ADMIN_PASSWORD = SECURE_DIR / "admin-password"
PIPELINE_PASSWORD = SECURE_DIR / "pipeline-password"
_ADMIN_PASSWORD_SET = SECURE_DIR / "admin-password-set"
ADMIN_ROLE = "cassandra"  # Cassandra's default superuser; its default password is changed at start
PIPELINE_ROLE = "ecom_pipeline"  # SELECT and MODIFY on the fact table only (make setup)

log = logging.getLogger(__name__)


def secret(path: Path) -> str:
    """The secret in `path`, generated (and readable by this user only) the first time."""
    if not path.exists():
        SECURE_DIR.mkdir(parents=True, exist_ok=True)
        SECURE_DIR.chmod(0o700)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def ensure_passwords() -> None:
    """The superuser's and the pipeline role's passwords, generated once (make setup gives the role its own)."""
    secret(ADMIN_PASSWORD)
    secret(PIPELINE_PASSWORD)


def _keytool(*args: str) -> None:
    """keytool with the store password read from its file (never on a command line: ps shows those)."""
    subprocess.run(
        ["keytool", *args, "-storepass:file", str(STORE_PASSWORD)], cwd=SECURE_DIR, check=True, capture_output=True
    )


def ensure_key_material() -> None:
    """A CA and the node's certificate (SAN IP:127.0.0.1) signed by it, made once with the JDK's
    keytool under .stack/secure/: ca.pem for the clients, node.p12 (PKCS12) for Cassandra."""
    if KEYSTORE.exists() and CA_CERT.exists():
        return
    secret(STORE_PASSWORD)
    for stale in ("ca.p12", "node.p12", "node.csr", "node.pem", "ca.pem"):
        (SECURE_DIR / stale).unlink(missing_ok=True)
    common = ["-keyalg", "RSA", "-keysize", "2048", "-validity", "365", "-storetype", "PKCS12"]
    _keytool(
        "-genkeypair",
        "-alias",
        "ca",
        "-dname",
        "CN=ecom-pipeline local CA",
        "-ext",
        "bc:c",
        "-keystore",
        "ca.p12",
        *common,
    )
    _keytool("-exportcert", "-rfc", "-alias", "ca", "-keystore", "ca.p12", "-file", "ca.pem")
    _keytool(
        "-genkeypair",
        "-alias",
        "node",
        "-dname",
        "CN=127.0.0.1",
        "-ext",
        "san=ip:127.0.0.1",
        "-keystore",
        "node.p12",
        *common,
    )
    _keytool("-certreq", "-alias", "node", "-keystore", "node.p12", "-file", "node.csr")
    _keytool(
        "-gencert",
        "-alias",
        "ca",
        "-keystore",
        "ca.p12",
        "-infile",
        "node.csr",
        "-outfile",
        "node.pem",
        "-rfc",
        "-ext",
        "san=ip:127.0.0.1",
        "-validity",
        "365",
    )
    _keytool("-importcert", "-noprompt", "-alias", "ca", "-file", "ca.pem", "-keystore", "node.p12")
    _keytool("-importcert", "-alias", "node", "-file", "node.pem", "-keystore", "node.p12")
    for generated in SECURE_DIR.iterdir():
        generated.chmod(0o600)
    log.info("generated a CA and the node's certificate in %s", SECURE_DIR.relative_to(ROOT))


def client_tls() -> ssl.SSLContext:
    """A client's TLS: the local CA, hostname (IP) checked."""
    context = ssl.create_default_context(cafile=str(CA_CERT))
    context.check_hostname = True
    return context


def admin_password() -> str:
    """The superuser's password: the generated one once it is set, Cassandra's default before."""
    return secret(ADMIN_PASSWORD) if _ADMIN_PASSWORD_SET.exists() else "cassandra"


def change_default_password(endpoints: Endpoints, logs_in: Callable[[], bool]) -> None:
    """Replace the default superuser's well-known password by the generated one (once);
    `logs_in`: whether the superuser logs in with `admin_password()` now."""
    if _ADMIN_PASSWORD_SET.exists():
        return
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import Cluster

    cluster = Cluster(
        [endpoints.cassandra_host],
        port=endpoints.cassandra_port,
        protocol_version=5,
        auth_provider=PlainTextAuthProvider(ADMIN_ROLE, "cassandra"),
        ssl_context=client_tls(),
    )
    try:
        cluster.connect().execute(f"ALTER ROLE {ADMIN_ROLE} WITH PASSWORD = %s", (secret(ADMIN_PASSWORD),))
    finally:
        cluster.shutdown()
    _ADMIN_PASSWORD_SET.touch()
    # The node caches credentials for a few seconds: wait until the new password logs in.
    deadline = time.monotonic() + 60
    while not logs_in():
        if time.monotonic() > deadline:
            raise SystemExit("the new superuser password was not accepted within 60 s")
        time.sleep(1.0)
    log.info("the default superuser's password is replaced by %s", ADMIN_PASSWORD.relative_to(ROOT))
