"""The local stack's command line: start, stop and inspect Apache Cassandra 5 and Google's Pub/Sub emulator.

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
import sys
import time

from . import cluster, compose
from .common import ROOT, STACK_DIR, Endpoints
from .emulator import PUBSUB, emulator_answers, ensure_emulator, start_early
from .node import cassandra_node, cassandra_release_version
from .prometheus import PROMETHEUS, PROMETHEUS_ADDRESS, observe
from .secure import CA_CERT, PIPELINE_PASSWORD, PIPELINE_ROLE, ensure_key_material, ensure_passwords
from .service import LocalService

__all__ = ["down", "exports", "main", "status", "up"]

log = logging.getLogger(__name__)
COMMANDS = {"up", "down", "status", "observe"}


def exports(endpoints: Endpoints) -> str:
    """The variables another terminal needs to reach this stack, as shell `export` lines."""
    lines = [
        f"export PUBSUB_EMULATOR_HOST={endpoints.pubsub_host}:{endpoints.pubsub_port}",
        f"export GOOGLE_CLOUD_PROJECT={endpoints.project}",
        f"export CASSANDRA_HOSTS={','.join(endpoints.node_addresses())}",
        f"export CASSANDRA_PORT={endpoints.cassandra_port}",
    ]
    if endpoints.secure:  # the pipeline's own role; the passwords stay in their files
        lines += [
            f"export CASSANDRA_SSL_CA_CERT={CA_CERT.relative_to(ROOT)}",
            f"export CASSANDRA_USERNAME={PIPELINE_ROLE}",
            f'export CASSANDRA_PASSWORD="$(cat {PIPELINE_PASSWORD.relative_to(ROOT)})"',
        ]
    return "\n".join(lines)


def up(endpoints: Endpoints) -> None:
    STACK_DIR.mkdir(exist_ok=True)
    started = time.monotonic()
    cluster.refuse_another_shape(endpoints)
    if endpoints.secure:
        ensure_key_material()
        ensure_passwords()
    # The emulator starts in a few seconds; bring it up first so both boot in parallel.
    start_early(endpoints)
    cluster.start(endpoints)
    ensure_emulator(endpoints)
    log.info("stack ready in %.1f s; for other terminals:", time.monotonic() - started)
    print(exports(endpoints))


def down() -> None:
    for service in (PROMETHEUS, PUBSUB):
        service.stop()
    cluster.stop()


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
    """The same commands with STACK=docker (observe shows the containers, as status does)."""
    if command == "up":
        compose.up(endpoints)
        print(exports(endpoints))
        return 0
    if command == "down":
        return compose.down()
    return compose.status()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="stack: %(message)s")
    logging.getLogger("cassandra").setLevel(logging.CRITICAL)  # probes fail while booting, by design
    if len(argv) != 2 or argv[1] not in COMMANDS:
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
        print(f"Prometheus: http://{PROMETHEUS_ADDRESS}/")
        return 0
    return status(endpoints)
