"""What every part of the local stack shares: its paths, and where the services are expected (`Endpoints`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MAX_NODES", "ROOT", "STACK_DIR", "Endpoints", "is_loopback"]

ROOT = Path(__file__).resolve().parent.parent
STACK_DIR = ROOT / ".stack"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_NODES = 3  # a local cluster on one machine: three nodes of 512 MiB heap each


def is_loopback(host: str) -> bool:
    """A local address: the whole 127.0.0.0/8 range is loopback on Linux (node k on 127.0.0.k)."""
    return host in LOOPBACK or host.startswith("127.")


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

    def node_addresses(self) -> list[str]:
        """Every node's address, node 1 first."""
        return [self.node_address(k) for k in range(1, self.nodes + 1)]
