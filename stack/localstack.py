"""Start, stop and inspect the local stack: Apache Cassandra 5 and Google's Pub/Sub emulator.

Usage: python stack/localstack.py up|down|status|observe   (observe: Prometheus, see monitoring/)

Both services run as plain processes on 127.0.0.1 (no Docker), each in its own process group,
with their files under `.stack/` and their pids in `.stack/cassandra.pid` and `.stack/pubsub.pid`.
`up` reuses whatever already answers on the configured address, starts only what is missing, and
returns once Cassandra answers a CQL query and the emulator answers an API call. `down` stops only
the process groups recorded in the pid files. With STACK=docker, the same commands drive
docker-compose-cassandra.yml instead.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STACK_DIR = ROOT / ".stack"
CASSANDRA_DIR = STACK_DIR / "cassandra"
CASSANDRA_LIB = CASSANDRA_DIR / "lib"
COMPOSE_FILE = ROOT / "docker-compose-cassandra.yml"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_NODES = 3  # a local cluster on one machine: three nodes of 512 MiB heap each
# CASSANDRA_SECURE=1: key material and passwords generated at start, never committed (.stack/).
SECURE_DIR = STACK_DIR / "secure"
CA_CERT = SECURE_DIR / "ca.pem"
STORE_PASSWORD = SECURE_DIR / "store-password"
ADMIN_PASSWORD = SECURE_DIR / "admin-password"
PIPELINE_PASSWORD = SECURE_DIR / "pipeline-password"
ADMIN_ROLE = "cassandra"  # Cassandra's default superuser; its default password is changed at start
PIPELINE_ROLE = "ecom_pipeline"  # SELECT and MODIFY on the fact table only (make setup)


def is_loopback(host: str) -> bool:
    """A local address: the whole 127.0.0.0/8 range is loopback on Linux (node k on 127.0.0.k)."""
    return host in LOOPBACK or host.startswith("127.")


log = logging.getLogger("localstack")


def _digits(text: str) -> bool:
    """ASCII digits only (`str.isdigit` also takes other scripts' digits, which int() reads)."""
    return text.isascii() and text.isdigit()


@dataclass(frozen=True)
class Endpoints:
    """Where the services are expected, from the same variables the pipeline reads."""

    cassandra_host: str
    cassandra_port: int
    pubsub_host: str
    pubsub_port: int
    project: str
    nodes: int = 1  # CASSANDRA_NODES: 1, or a local cluster with node k on 127.0.0.k
    secure: bool = False  # CASSANDRA_SECURE=1: passwords, roles and client TLS required (one node)

    @classmethod
    def from_env(cls, environ: os._Environ[str] | dict[str, str]) -> Endpoints:
        cassandra_host = environ.get("CASSANDRA_HOSTS", "127.0.0.1").split(",")[0].strip()
        pubsub = environ.get("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085").strip()
        pubsub_host, _, pubsub_port = pubsub.rpartition(":")
        if not pubsub_host or not _digits(pubsub_port):
            raise SystemExit(f"PUBSUB_EMULATOR_HOST must be host:port (e.g. 127.0.0.1:8085), not {pubsub!r}")
        cassandra_port = environ.get("CASSANDRA_PORT", "9042").strip()
        if not _digits(cassandra_port):
            raise SystemExit(f"CASSANDRA_PORT must be a port number, not {cassandra_port!r}")
        nodes = environ.get("CASSANDRA_NODES", "1").strip() or "1"
        if not _digits(nodes) or not 1 <= int(nodes) <= MAX_NODES:
            raise SystemExit(f"CASSANDRA_NODES must be a number of nodes from 1 to {MAX_NODES}, not {nodes!r}")
        secure = environ.get("CASSANDRA_SECURE", "").strip()
        if secure not in ("", "0", "1"):
            raise SystemExit(f"CASSANDRA_SECURE must be 1 (a secured node) or 0, not {secure!r}")
        if secure == "1" and nodes != "1":
            raise SystemExit("CASSANDRA_SECURE=1 starts one secured node; leave CASSANDRA_NODES unset")
        return cls(
            cassandra_host=cassandra_host,
            cassandra_port=int(cassandra_port),
            pubsub_host=pubsub_host,
            pubsub_port=int(pubsub_port),
            project=environ.get("GOOGLE_CLOUD_PROJECT", "ecom-local"),
            nodes=int(nodes),
            secure=secure == "1",
        )

    def node_address(self, k: int) -> str:
        """Node k's address: the configured host for one node, 127.0.0.k in a local cluster."""
        return self.cassandra_host if self.nodes == 1 else f"127.0.0.{k}"

    def exports(self) -> str:
        hosts = ",".join(self.node_address(k) for k in range(1, self.nodes + 1))
        lines = [
            f"export PUBSUB_EMULATOR_HOST={self.pubsub_host}:{self.pubsub_port}",
            f"export GOOGLE_CLOUD_PROJECT={self.project}",
            f"export CASSANDRA_HOSTS={hosts}",
            f"export CASSANDRA_PORT={self.cassandra_port}",
        ]
        if self.secure:  # the pipeline's own role; the passwords stay in their files
            lines += [
                f"export CASSANDRA_SSL_CA_CERT={CA_CERT.relative_to(ROOT)}",
                f"export CASSANDRA_USERNAME={PIPELINE_ROLE}",
                f'export CASSANDRA_PASSWORD="$(cat {PIPELINE_PASSWORD.relative_to(ROOT)})"',
            ]
        return "\n".join(lines)


# --- readiness probes: a real query, not an open port ---------------------------------------


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


def emulator_answers(endpoints: Endpoints, timeout: float = 3.0) -> bool:
    """True if the Pub/Sub emulator answers a REST call (list topics)."""
    url = f"http://{endpoints.pubsub_host}:{endpoints.pubsub_port}/v1/projects/{endpoints.project}/topics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# --- processes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalService:
    name: str
    pid_file: Path
    log_file: Path
    cmdline_marker: str  # a word in the process's command line, guards against a recycled pid
    start_timeout: float

    def pid(self) -> int | None:
        """The recorded pid if that process is alive and is still ours, else None: its command
        line has the marker, it runs in this checkout (another checkout's node has the same
        marker, and a stale pid file may name it), and it leads its process group, as `spawn`
        made it do."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            cwd = Path(f"/proc/{pid}/cwd").resolve(strict=True)
            leads = os.getpgid(pid) == pid
        except (OSError, ValueError):
            return None
        return pid if self.cmdline_marker in cmdline and cwd.is_relative_to(ROOT) and leads else None

    def spawn(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> int:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            # A new session makes the service the leader of its own process group, so `down`
            # can stop it and every child it forks (gcloud leaves a java child behind otherwise).
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        self.pid_file.write_text(f"{process.pid}\n")
        return process.pid

    def stop(self, grace: float = 30.0) -> None:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        log.info("stopping %s (process group %s)", self.name, pid)
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.3)
        if _group_alive(pid):
            log.warning("%s did not stop within %.0f s, killing it", self.name, grace)
            os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # A zombie leader still counts for killpg; look at its state.
    try:
        state = Path(f"/proc/{pgid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z" or _other_members(pgid)
    except OSError:
        return _other_members(pgid)


def _other_members(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().split(")")[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


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
PUBSUB = LocalService(
    "pubsub-emulator",
    STACK_DIR / "pubsub.pid",
    STACK_DIR / "pubsub" / "emulator.log",
    "pubsub-emulator",
    start_timeout=90.0,
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


def node_home(k: int, nodes: int, secure: bool = False) -> Path:
    if secure:
        return STACK_DIR / "cassandra-secure"
    return CASSANDRA_DIR if nodes == 1 else STACK_DIR / f"cassandra-{k}"


def running_stack() -> set[str]:
    """Which of the project's Cassandras run now: "one node", "3 nodes", "a secured node"."""
    found = set()
    if CASSANDRA.pid() is not None:
        found.add(stack_name(1, secure=False))
    if any(cassandra_node(k, MAX_NODES).pid() is not None for k in range(1, MAX_NODES + 1)):
        found.add(stack_name(MAX_NODES, secure=False))
    if CASSANDRA_SECURE.pid() is not None:
        found.add(stack_name(1, secure=True))
    return found


def stack_name(nodes: int, secure: bool) -> str:
    return "a secured node" if secure else "one node" if nodes == 1 else f"{nodes} nodes"


PROMETHEUS = LocalService(
    "prometheus",
    STACK_DIR / "prometheus.pid",
    STACK_DIR / "prometheus" / "prometheus.log",
    "monitoring/prometheus.yml",
    start_timeout=60.0,
)
PROMETHEUS_ADDRESS = "127.0.0.1:9090"


def prometheus_answers(timeout: float = 3.0) -> bool:
    """True if a Prometheus answers its readiness endpoint on PROMETHEUS_ADDRESS."""
    try:
        with urllib.request.urlopen(f"http://{PROMETHEUS_ADDRESS}/-/ready", timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_prometheus(endpoints: Endpoints) -> int:
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("Prometheus is not installed: `apt-get install prometheus` (Debian's package)")
    data = STACK_DIR / "prometheus" / "data"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        f"--config.file={ROOT / 'monitoring' / 'prometheus.yml'}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address={PROMETHEUS_ADDRESS}",
        "--storage.tsdb.retention.time=2d",
    ]
    return PROMETHEUS.spawn(argv, cwd=ROOT)


def observe(endpoints: Endpoints) -> None:
    """Start (or reuse) Prometheus with monitoring/prometheus.yml; print where it is."""
    STACK_DIR.mkdir(exist_ok=True)
    ensure(PROMETHEUS, "127.0.0.1", prometheus_answers, start_prometheus, endpoints)
    print(f"Prometheus: http://{PROMETHEUS_ADDRESS}/")


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


# --- the secured node (CASSANDRA_SECURE=1) -------------------------------------------------


def _secret(path: Path) -> str:
    """The secret in `path`, generated (and readable by this user only) the first time."""
    if not path.exists():
        SECURE_DIR.mkdir(parents=True, exist_ok=True)
        SECURE_DIR.chmod(0o700)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def _keytool(*args: str) -> None:
    """keytool with the store password read from its file (never on a command line: ps shows those)."""
    subprocess.run(
        ["keytool", *args, "-storepass:file", str(STORE_PASSWORD)], cwd=SECURE_DIR, check=True, capture_output=True
    )


def ensure_key_material() -> None:
    """A CA and the node's certificate (SAN IP:127.0.0.1) signed by it, made once with the JDK's
    keytool under .stack/secure/: ca.pem for the clients, node.p12 (PKCS12) for Cassandra."""
    if (SECURE_DIR / "node.p12").exists() and CA_CERT.exists():
        return
    _secret(STORE_PASSWORD)
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
        f"  keystore: {SECURE_DIR / 'node.p12'}\n"
        f"  keystore_password: {_secret(STORE_PASSWORD)}\n"
        "  store_type: PKCS12\n"
        "  require_client_auth: false\n"
    )


def client_tls() -> ssl.SSLContext:
    """A client's TLS: the local CA, hostname (IP) checked."""
    context = ssl.create_default_context(cafile=str(CA_CERT))
    context.check_hostname = True
    return context


def admin_password() -> str:
    """The superuser's password: the generated one once it is set, Cassandra's default before."""
    return _secret(ADMIN_PASSWORD) if (SECURE_DIR / "admin-password-set").exists() else "cassandra"


def change_default_password(endpoints: Endpoints) -> None:
    """Replace the default superuser's well-known password by the generated one (once)."""
    if (SECURE_DIR / "admin-password-set").exists():
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
        cluster.connect().execute(f"ALTER ROLE {ADMIN_ROLE} WITH PASSWORD = %s", (_secret(ADMIN_PASSWORD),))
    finally:
        cluster.shutdown()
    (SECURE_DIR / "admin-password-set").touch()
    # The node caches credentials for a few seconds: wait until the new password logs in.
    deadline = time.monotonic() + 60
    while cassandra_release_version(endpoints) is None:
        if time.monotonic() > deadline:
            raise SystemExit("the new superuser password was not accepted within 60 s")
        time.sleep(1.0)
    log.info("the default superuser's password is replaced by %s", ADMIN_PASSWORD.relative_to(ROOT))


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


def emulator_launcher() -> Path:
    try:
        sdk_root = subprocess.run(
            ["gcloud", "info", "--format=value(installation.sdk_root)"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"the Google Cloud CLI (gcloud) is needed for the Pub/Sub emulator: {exc}") from exc
    launcher = Path(sdk_root) / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
    if not launcher.exists():
        raise SystemExit(
            f"the Pub/Sub emulator is not installed ({launcher} is missing): "
            "`gcloud components install pubsub-emulator` or the google-cloud-cli-pubsub-emulator package"
        )
    return launcher


def start_pubsub(endpoints: Endpoints) -> int:
    argv = [str(emulator_launcher()), f"--host={endpoints.pubsub_host}", f"--port={endpoints.pubsub_port}"]
    env = dict(os.environ, JAVA_OPTS="-Xms128m -Xmx1g")
    return PUBSUB.spawn(argv, cwd=STACK_DIR, env=env)


def ensure(
    service: LocalService,
    host: str,
    answers: Callable[[], object],
    start: Callable[[Endpoints], int],
    endpoints: Endpoints,
) -> None:
    """Reuse the service if it answers, wait for it if ours is starting, else start it."""
    if answers():
        pid = service.pid()
        if pid is None:
            log.info("%s answers on %s, reusing it", service.name, host)
        else:
            log.info("%s is ready (pid %s, started by this project)", service.name, pid)
        return
    if not is_loopback(host):
        raise SystemExit(f"{service.name} at {host} does not answer, and it is not a local address to start it on")
    pid = service.pid()
    if pid is None:
        pid = start(endpoints)
        log.info("started %s (pid %s), log in %s", service.name, pid, service.log_file.relative_to(ROOT))
    else:
        log.info("%s (pid %s) is starting, waiting for it", service.name, pid)
    deadline = time.monotonic() + service.start_timeout
    restarted = False
    while time.monotonic() < deadline:
        # By process group, not service.pid(): just after the fork the child's command line
        # is still Python's, before it execs java.
        if not _group_alive(pid):
            if restarted:
                raise SystemExit(f"{service.name} exited during start-up; last lines of its log:\n{service.log_tail()}")
            # Once: a joining node can miss its seed on two busy cores, and then just exits.
            log.warning("%s exited during start-up; starting it once more", service.name)
            pid, restarted = start(endpoints), True
            continue
        if answers():
            log.info("%s is ready", service.name)
            return
        time.sleep(1.0)
    raise SystemExit(
        f"{service.name} did not answer within {service.start_timeout:.0f} s; "
        f"last lines of its log:\n{service.log_tail()}"
    )


def up(endpoints: Endpoints) -> None:
    STACK_DIR.mkdir(exist_ok=True)
    started = time.monotonic()
    # The emulator starts in a few seconds; bring it up first so both boot in parallel.
    wanted = stack_name(endpoints.nodes, endpoints.secure)
    other = running_stack() - {wanted}
    if other:
        raise SystemExit(
            f"this project's Cassandra runs as {', '.join(sorted(other))}, and {wanted} was asked for "
            "(CASSANDRA_NODES, CASSANDRA_SECURE): `make stack-down` first, then `make stack` with what you want"
        )
    if endpoints.secure:
        ensure_key_material()
        _secret(ADMIN_PASSWORD)
        _secret(PIPELINE_PASSWORD)  # for make setup to give the pipeline's role
    if not emulator_answers(endpoints) and is_loopback(endpoints.pubsub_host) and PUBSUB.pid() is None:
        start_pubsub(endpoints)
    # One after another: a node joins the ring through the nodes already up.
    for k in range(1, endpoints.nodes + 1):
        address = endpoints.node_address(k)
        answers = functools.partial(node_answers, endpoints, address)
        service = cassandra_node(k, endpoints.nodes, endpoints.secure)
        ensure(service, address, answers, functools.partial(start_cassandra, k=k), endpoints)
    if endpoints.nodes > 1:
        wait_for_ring(endpoints)
    if endpoints.secure:
        change_default_password(endpoints)
    ensure(PUBSUB, endpoints.pubsub_host, lambda: emulator_answers(endpoints), start_pubsub, endpoints)
    log.info("stack ready in %.1f s; for other terminals:", time.monotonic() - started)
    print(endpoints.exports())


def node_answers(endpoints: Endpoints, address: str) -> bool:
    return cassandra_release_version(endpoints, host=address) is not None


def wait_for_ring(endpoints: Endpoints, timeout: float = 120.0) -> None:
    """Until every node answers and knows every node as a NORMAL member of the ring (or SystemExit)."""
    deadline = time.monotonic() + timeout
    addresses = [endpoints.node_address(k) for k in range(1, endpoints.nodes + 1)]
    while True:
        views = {address: ring_view(endpoints, address) for address in addresses}
        if all(view == set(addresses) for view in views.values()):
            log.info("ring of %d nodes: every node answers and knows every node as NORMAL", endpoints.nodes)
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the ring did not settle within {timeout:.0f} s: {views}")
        time.sleep(2.0)


def ring_view(endpoints: Endpoints, address: str) -> set[str]:
    """The nodes the node at `address` knows as NORMAL members of the ring, by gossip (itself
    included); empty when it does not answer."""
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy

    profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([address]))
    cluster = Cluster(
        [address],
        port=endpoints.cassandra_port,
        protocol_version=5,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=5,
    )
    try:
        rows = cluster.connect().execute("SELECT address, status_with_port FROM system_views.gossip_info", timeout=5)
        return {str(row.address) for row in rows if str(row.status_with_port).startswith("NORMAL")}
    except Exception as exc:  # a probe: any failure means "not yet"
        log.debug("ring view of %s: %s", address, exc)
        return set()
    finally:
        cluster.shutdown()


def down() -> None:
    for service in (PROMETHEUS, PUBSUB, CASSANDRA):
        service.stop()
    for k in range(1, MAX_NODES + 1):
        cassandra_node(k, MAX_NODES).stop()
    CASSANDRA_SECURE.stop()


def status(endpoints: Endpoints) -> int:
    emulator = emulator_answers(endpoints)
    services: list[tuple[LocalService, str]] = []
    healthy = emulator
    for k in range(1, endpoints.nodes + 1):
        version = cassandra_release_version(endpoints, host=endpoints.node_address(k))
        healthy = healthy and version is not None
        detail = f"{endpoints.node_address(k)}: release {version}" if version else f"{endpoints.node_address(k)}: down"
        services.append((cassandra_node(k, endpoints.nodes, endpoints.secure), detail))
    services.append((PUBSUB, "answering" if emulator else "not answering"))
    for service, detail in services:
        pid = service.pid()
        owner = f"pid {pid} (started by this project)" if pid else "no process of this project"
        print(f"{service.name:16} {detail:32} {owner}")
    return 0 if healthy else 1


def docker(command: str, endpoints: Endpoints) -> int:
    compose = ["docker", "compose", "-f", str(COMPOSE_FILE)]
    if command == "up":
        subprocess.run([*compose, "up", "-d"], check=True)
        deadline = time.monotonic() + CASSANDRA.start_timeout
        while time.monotonic() < deadline:
            if cassandra_release_version(endpoints) and emulator_answers(endpoints):
                print(endpoints.exports())
                return 0
            time.sleep(2.0)
        subprocess.run([*compose, "logs", "--tail=40"], check=False)
        raise SystemExit("the Docker stack did not become ready in time")
    if command == "down":
        return subprocess.run([*compose, "down"], check=False).returncode
    return subprocess.run([*compose, "ps"], check=False).returncode


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="stack: %(message)s")
    logging.getLogger("cassandra").setLevel(logging.CRITICAL)  # probes fail while booting, by design
    if len(argv) != 2 or argv[1] not in {"up", "down", "status", "observe"}:
        print(__doc__, file=sys.stderr)
        return 2
    endpoints = Endpoints.from_env(os.environ)
    if os.environ.get("STACK", "local") == "docker":
        return docker(argv[1], endpoints)
    if argv[1] == "up":
        up(endpoints)
        return 0
    if argv[1] == "down":
        down()
        return 0
    if argv[1] == "observe":
        observe(endpoints)
        return 0
    return status(endpoints)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
