"""STACK=docker: the stack's commands through Docker Compose and docker-compose-cassandra.yml, not processes."""

from __future__ import annotations

import subprocess
import time

from .common import ROOT, Endpoints
from .emulator import emulator_answers
from .node import CASSANDRA, cassandra_release_version

__all__ = ["COMPOSE_FILE", "down", "status", "up"]

COMPOSE_FILE = ROOT / "docker-compose-cassandra.yml"
_COMPOSE = ["docker", "compose", "-f", str(COMPOSE_FILE)]


def up(endpoints: Endpoints) -> None:
    """Both containers started, and answering a real query (or SystemExit, with their logs)."""
    subprocess.run([*_COMPOSE, "up", "-d"], check=True)
    deadline = time.monotonic() + CASSANDRA.start_timeout
    while time.monotonic() < deadline:
        if cassandra_release_version(endpoints) and emulator_answers(endpoints):
            return
        time.sleep(2.0)
    subprocess.run([*_COMPOSE, "logs", "--tail=40"], check=False)
    raise SystemExit("the Docker stack did not become ready in time")


def down() -> int:
    return subprocess.run([*_COMPOSE, "down"], check=False).returncode


def status() -> int:
    return subprocess.run([*_COMPOSE, "ps"], check=False).returncode
