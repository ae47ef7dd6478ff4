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

import logging
import os
import shutil
import signal
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

log = logging.getLogger("localstack")


@dataclass(frozen=True)
class Endpoints:
    """Where the services are expected, from the same variables the pipeline reads."""

    cassandra_host: str
    cassandra_port: int
    pubsub_host: str
    pubsub_port: int
    project: str

    @classmethod
    def from_env(cls, environ: os._Environ[str] | dict[str, str]) -> Endpoints:
        cassandra_host = environ.get("CASSANDRA_HOSTS", "127.0.0.1").split(",")[0].strip()
        pubsub = environ.get("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085")
        pubsub_host, _, pubsub_port = pubsub.rpartition(":")
        return cls(
            cassandra_host=cassandra_host,
            cassandra_port=int(environ.get("CASSANDRA_PORT", "9042")),
            pubsub_host=pubsub_host,
            pubsub_port=int(pubsub_port),
            project=environ.get("GOOGLE_CLOUD_PROJECT", "ecom-local"),
        )

    def exports(self) -> str:
        return "\n".join(
            [
                f"export PUBSUB_EMULATOR_HOST={self.pubsub_host}:{self.pubsub_port}",
                f"export GOOGLE_CLOUD_PROJECT={self.project}",
                f"export CASSANDRA_HOSTS={self.cassandra_host}",
                f"export CASSANDRA_PORT={self.cassandra_port}",
            ]
        )


# --- readiness probes: a real query, not an open port ---------------------------------------


def cassandra_release_version(endpoints: Endpoints, timeout: float = 5.0) -> str | None:
    """The node's release_version if Cassandra answers a CQL query, else None."""
    # Imported here so `status` and `down` work before the virtualenv has the driver.
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    username = os.environ.get("CASSANDRA_USERNAME")
    auth = PlainTextAuthProvider(username, os.environ.get("CASSANDRA_PASSWORD", "")) if username else None
    cluster = Cluster(
        [endpoints.cassandra_host],
        port=endpoints.cassandra_port,
        auth_provider=auth,
        execution_profiles={EXEC_PROFILE_DEFAULT: ExecutionProfile(load_balancing_policy=RoundRobinPolicy())},
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
        """The recorded pid if that process is alive and is still ours, else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            return None
        return pid if self.cmdline_marker in cmdline else None

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
PUBSUB = LocalService(
    "pubsub-emulator",
    STACK_DIR / "pubsub.pid",
    STACK_DIR / "pubsub" / "emulator.log",
    "pubsub-emulator",
    start_timeout=90.0,
)


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


def start_cassandra(endpoints: Endpoints) -> int:
    if not (CASSANDRA_LIB / ".resolved").exists():
        raise SystemExit(
            f"Cassandra's jars are missing in {CASSANDRA_LIB.relative_to(ROOT)}; "
            "`make stack` resolves them with Maven (see stack/pom.xml)"
        )
    conf = CASSANDRA_DIR / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (CASSANDRA_DIR / "data").mkdir(exist_ok=True)
    template = (ROOT / "stack" / "cassandra.yaml").read_text()
    yaml = template.replace("@STACK_DIR@", str(STACK_DIR)).replace(
        "native_transport_port: 9042", f"native_transport_port: {endpoints.cassandra_port}"
    )
    (conf / "cassandra.yaml").write_text(yaml)
    (conf / "logback.xml").write_text((ROOT / "stack" / "logback.xml").read_text())
    jvm_options = [
        line.strip()
        for line in (ROOT / "stack" / "jvm.options").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    argv = [
        "java",
        *jvm_options,
        f"-Dcassandra.config=file://{conf / 'cassandra.yaml'}",
        f"-Dcassandra.storagedir={CASSANDRA_DIR / 'data'}",
        f"-Dcassandra.logdir={CASSANDRA_DIR}",
        f"-Dcassandra.triggers_dir={CASSANDRA_DIR / 'triggers'}",
        f"-Dlogback.configurationFile={conf / 'logback.xml'}",
        "-cp",
        f"{CASSANDRA_LIB}/*",
        "org.apache.cassandra.service.CassandraDaemon",
    ]
    (CASSANDRA_DIR / "triggers").mkdir(exist_ok=True)
    return CASSANDRA.spawn(argv, cwd=CASSANDRA_DIR)


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
    if host not in LOOPBACK:
        raise SystemExit(f"{service.name} at {host} does not answer, and it is not a local address to start it on")
    pid = service.pid()
    if pid is None:
        pid = start(endpoints)
        log.info("started %s (pid %s), log in %s", service.name, pid, service.log_file.relative_to(ROOT))
    else:
        log.info("%s (pid %s) is starting, waiting for it", service.name, pid)
    deadline = time.monotonic() + service.start_timeout
    while time.monotonic() < deadline:
        # By process group, not service.pid(): just after the fork the child's command line
        # is still Python's, before it execs java.
        if not _group_alive(pid):
            raise SystemExit(f"{service.name} exited during start-up; last lines of its log:\n{service.log_tail()}")
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
    if not emulator_answers(endpoints) and endpoints.pubsub_host in LOOPBACK and PUBSUB.pid() is None:
        start_pubsub(endpoints)
    ensure(
        CASSANDRA,
        endpoints.cassandra_host,
        lambda: cassandra_release_version(endpoints) is not None,
        start_cassandra,
        endpoints,
    )
    ensure(PUBSUB, endpoints.pubsub_host, lambda: emulator_answers(endpoints), start_pubsub, endpoints)
    log.info("stack ready in %.1f s; for other terminals:", time.monotonic() - started)
    print(endpoints.exports())


def down() -> None:
    for service in (PROMETHEUS, PUBSUB, CASSANDRA):
        service.stop()


def status(endpoints: Endpoints) -> int:
    version = cassandra_release_version(endpoints)
    emulator = emulator_answers(endpoints)
    for service, detail in (
        (CASSANDRA, f"release {version}" if version else "not answering"),
        (PUBSUB, "answering" if emulator else "not answering"),
    ):
        pid = service.pid()
        owner = f"pid {pid} (started by this project)" if pid else "no process of this project"
        print(f"{service.name:16} {detail:20} {owner}")
    return 0 if version and emulator else 1


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
