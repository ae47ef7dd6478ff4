"""One Cassandra node of the local stack: its files, its configuration, its process and its readiness."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .common import MAX_NODES, ROOT, STACK_DIR, Endpoints
from .secure import ADMIN_ROLE, KEYSTORE, STORE_PASSWORD, admin_password, client_tls, secret
from .service import LocalService

__all__ = [
    "CASSANDRA",
    "CASSANDRA_SECURE",
    "cassandra_node",
    "cassandra_release_version",
    "cluster_yaml",
    "every_node",
    "node_answers",
    "node_home",
    "secure_yaml",
    "start_cassandra",
]

log = logging.getLogger(__name__)

CASSANDRA_DIR = STACK_DIR / "cassandra"
CASSANDRA_LIB = CASSANDRA_DIR / "lib"

CASSANDRA = LocalService(
    "cassandra",
    STACK_DIR / "cassandra.pid",
    CASSANDRA_DIR / "cassandra.out",
    "CassandraDaemon",
    start_timeout=240.0,
)
CASSANDRA_SECURE = LocalService(
    "cassandra-secure",
    STACK_DIR / "cassandra-secure.pid",
    STACK_DIR / "cassandra-secure" / "cassandra.out",
    "cassandra-secure/conf/",
    start_timeout=240.0,
)


def cassandra_node(k: int, nodes: int, secure: bool = False) -> LocalService:
    """Node k of the local Cassandra: the single node (.stack/cassandra.pid), node k of a local
    cluster (.stack/cassandra-k.pid, its files under .stack/cassandra-k/), or the secured node
    (.stack/cassandra-secure.pid)."""
    if secure:
        return CASSANDRA_SECURE
    if nodes == 1:
        return CASSANDRA
    home = STACK_DIR / f"cassandra-{k}"
    return LocalService(
        f"cassandra-{k}", STACK_DIR / f"cassandra-{k}.pid", home / "cassandra.out", f"cassandra-{k}/conf/", 240.0
    )


def every_node() -> list[LocalService]:
    """Every node this project may have started: the single node, the cluster's, the secured one."""
    return [CASSANDRA, *(cassandra_node(k, MAX_NODES) for k in range(1, MAX_NODES + 1)), CASSANDRA_SECURE]


def node_home(k: int, nodes: int, secure: bool = False) -> Path:
    if secure:
        return STACK_DIR / "cassandra-secure"
    return CASSANDRA_DIR if nodes == 1 else STACK_DIR / f"cassandra-{k}"


# --- configuration --------------------------------------------------------------------------


def cluster_yaml(yaml: str, address: str) -> str:
    """The single node's configuration, made a node of the local cluster at `address`.

    Every node has three replicas beside it: commit-log durability comes from the other two
    replicas (LOCAL_QUORUM writes), so the cluster uses Cassandra's default periodic sync, as
    production clusters do; tests/cluster kills a node mid-stream with it and loses nothing.
    """
    yaml = yaml.replace("listen_address: 127.0.0.1", f"listen_address: {address}")
    yaml = yaml.replace("rpc_address: 127.0.0.1", f"rpc_address: {address}")
    yaml = yaml.replace(
        "commitlog_sync: group\ncommitlog_sync_group_window: 10ms",
        "commitlog_sync: periodic\ncommitlog_sync_period: 10000ms",
    )
    # Three nodes share two cores: fewer threads each.
    return yaml.replace("concurrent_writes: 256", "concurrent_writes: 64").replace(
        "native_transport_max_threads: 256", "native_transport_max_threads: 64"
    )


def secure_yaml(yaml: str) -> str:
    """Passwords, roles and permissions checked; client connections only over TLS."""
    yaml = yaml.replace("authenticator: AllowAllAuthenticator", "authenticator: PasswordAuthenticator")
    yaml = yaml.replace(
        "authorizer: AllowAllAuthorizer", "authorizer: CassandraAuthorizer\nrole_manager: CassandraRoleManager"
    )
    return yaml + (
        "\nclient_encryption_options:\n"
        "  enabled: true\n"
        "  optional: false\n"  # a plaintext client is refused
        f"  keystore: {KEYSTORE}\n"
        f"  keystore_password: {secret(STORE_PASSWORD)}\n"
        "  store_type: PKCS12\n"
        "  require_client_auth: false\n"
    )


def start_cassandra(endpoints: Endpoints, k: int = 1) -> int:
    """Start node k (of `endpoints.nodes`) from the Maven jars, with its own config and files."""
    if not (CASSANDRA_LIB / ".resolved").exists():
        raise SystemExit(
            f"Cassandra's jars are missing in {CASSANDRA_LIB.relative_to(ROOT)}; "
            "`make stack` resolves them with Maven (see stack/pom.xml)"
        )
    home, address = node_home(k, endpoints.nodes, endpoints.secure), endpoints.node_address(k)
    conf = home / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (home / "data").mkdir(exist_ok=True)
    (home / "triggers").mkdir(exist_ok=True)
    yaml = (ROOT / "stack" / "cassandra.yaml").read_text()
    yaml = yaml.replace("@STACK_DIR@/cassandra/", f"{home}/").replace(
        "native_transport_port: 9042", f"native_transport_port: {endpoints.cassandra_port}"
    )
    if endpoints.nodes > 1:
        yaml = cluster_yaml(yaml, address)
    if endpoints.secure:
        yaml = secure_yaml(yaml)
    (conf / "cassandra.yaml").write_text(yaml)
    (conf / "cassandra.yaml").chmod(0o600)  # it holds the keystore's password when secured
    (conf / "logback.xml").write_text((ROOT / "stack" / "logback.xml").read_text())
    jvm_options = [
        line.strip()
        for line in (ROOT / "stack" / "jvm.options").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    if endpoints.nodes > 1:  # three nodes beside everything else on 2 cores / 24 GiB
        jvm_options = [{"-Xms512m": "-Xms256m", "-Xmx1g": "-Xmx512m"}.get(o, o) for o in jvm_options]
        # A joining node gives the seed this long to answer its first gossip round (1 s was
        # sometimes too short on two busy cores: "Unable to contact any seeds").
        jvm_options = [o.replace("ring_delay_ms=1000", "ring_delay_ms=10000") for o in jvm_options]
    argv = [
        "java",
        *jvm_options,
        f"-Dcassandra.config=file://{conf / 'cassandra.yaml'}",
        f"-Dcassandra.storagedir={home / 'data'}",
        f"-Dcassandra.logdir={home}",
        f"-Dcassandra.triggers_dir={home / 'triggers'}",
        f"-Dlogback.configurationFile={conf / 'logback.xml'}",
        "-cp",
        f"{CASSANDRA_LIB}/*",
        "org.apache.cassandra.service.CassandraDaemon",
    ]
    if endpoints.secure:  # the default superuser is created half a second in, not ten
        argv.insert(-1, "-Dcassandra.superuser_setup_delay_ms=500")
    return cassandra_node(k, endpoints.nodes, endpoints.secure).spawn(argv, cwd=home)


# --- readiness: a real query, not an open port ----------------------------------------------


def cassandra_release_version(endpoints: Endpoints, timeout: float = 5.0, host: str | None = None) -> str | None:
    """The node's release_version if Cassandra answers a CQL query, else None."""
    # Imported here so `status` and `down` work before the virtualenv has the driver.
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy

    if endpoints.secure:  # log in as the administrator, over TLS
        auth = PlainTextAuthProvider(ADMIN_ROLE, admin_password())
    else:
        username = os.environ.get("CASSANDRA_USERNAME")
        auth = PlainTextAuthProvider(username, os.environ.get("CASSANDRA_PASSWORD", "")) if username else None
    cluster = Cluster(
        [host or endpoints.cassandra_host],
        port=endpoints.cassandra_port,
        auth_provider=auth,
        ssl_context=client_tls() if endpoints.secure else None,
        execution_profiles={
            EXEC_PROFILE_DEFAULT: ExecutionProfile(
                load_balancing_policy=WhiteListRoundRobinPolicy([host or endpoints.cassandra_host])
            )
        },
        protocol_version=5,
        connect_timeout=timeout,
        control_connection_timeout=timeout,
    )
    try:
        session = cluster.connect()
        row = session.execute("SELECT release_version FROM system.local", timeout=timeout).one()
        return str(row.release_version)
    except Exception as exc:  # a probe: any failure at all means "not ready yet"
        log.debug("Cassandra not answering yet: %s", exc)
        return None
    finally:
        cluster.shutdown()


def node_answers(endpoints: Endpoints, address: str) -> bool:
    return cassandra_release_version(endpoints, host=address) is not None
