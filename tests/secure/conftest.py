"""Fixtures for the security tests on one secured node (`make test-secure`): passwords, roles and
client TLS required. The set-up runs as the administrator; the scripts run as the pipeline's role.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import Cluster, Session

from stack.secure import ADMIN_PASSWORD, ADMIN_ROLE, CA_CERT, PIPELINE_PASSWORD, PIPELINE_ROLE, client_tls
from tests.integration.conftest import (  # the same fixtures, over this stack_env
    PYTHON,
    ROOT,
    STACK_DEFAULTS,
    first_id,
    run_script,
    topics,
)

__all__ = ["first_id", "run_script", "topics"]


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    """The secured node up, set up by the administrator; the environment of the pipeline's role."""
    if os.environ.get("CASSANDRA_SECURE") != "1":
        pytest.fail("run these with `make test-secure` (CASSANDRA_SECURE=1)")
    env = {**STACK_DEFAULTS, **os.environ, "CASSANDRA_SSL_CA_CERT": str(CA_CERT)}
    subprocess.run([PYTHON, str(ROOT / "stack" / "localstack.py"), "up"], env=env, check=True, timeout=400)
    admin = {
        **env,
        "CASSANDRA_USERNAME": ADMIN_ROLE,
        "CASSANDRA_PASSWORD": ADMIN_PASSWORD.read_text().strip(),
        "CASSANDRA_PIPELINE_ROLE": PIPELINE_ROLE,
        "CASSANDRA_PIPELINE_PASSWORD": PIPELINE_PASSWORD.read_text().strip(),
    }
    subprocess.run([PYTHON, "-m", "ecom_pipeline.admin", "setup"], env=admin, cwd=ROOT, check=True, timeout=300)
    os.environ.update({k: env[k] for k in STACK_DEFAULTS})  # for the in-process Pub/Sub clients
    pipeline = {**env, "CASSANDRA_USERNAME": PIPELINE_ROLE, "CASSANDRA_PASSWORD": PIPELINE_PASSWORD.read_text().strip()}
    return pipeline


def login(role: str, password: str) -> tuple[Cluster, Session]:
    cluster = Cluster(
        ["127.0.0.1"], protocol_version=5, auth_provider=PlainTextAuthProvider(role, password), ssl_context=client_tls()
    )
    return cluster, cluster.connect("ecom_store")


@pytest.fixture(scope="session")
def cql(stack_env: dict[str, str]) -> Iterator[Session]:
    """The administrator's session, over TLS, to look at what the pipeline wrote."""
    cluster, session = login(ADMIN_ROLE, ADMIN_PASSWORD.read_text().strip())
    yield session
    cluster.shutdown()


def make_foreign_ca(directory: Path) -> Path:
    """A CA made as the stack makes its own (stack/secure.py: keytool, RSA 2048, bc:c), but
    not the one that signed the node's certificate: its PEM certificate in `directory`. The
    store's password is read from a file, never given on a command line."""
    password = directory / "store-password"
    password.write_text(secrets.token_urlsafe(16))
    common = ["-storetype", "PKCS12", "-keystore", "foreign-ca.p12", "-storepass:file", str(password)]
    key = ["-keyalg", "RSA", "-keysize", "2048", "-validity", "2"]
    for command in (
        ["-genkeypair", "-alias", "ca", "-dname", "CN=not the stack's CA", "-ext", "bc:c", *key],
        ["-exportcert", "-rfc", "-alias", "ca", "-file", "foreign-ca.pem"],
    ):
        subprocess.run(["keytool", *command, *common], cwd=directory, check=True, capture_output=True, timeout=60)
    return directory / "foreign-ca.pem"
