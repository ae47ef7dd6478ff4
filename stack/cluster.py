"""The local Cassandra as a whole: which of its shapes runs (one node, three nodes, a secured node),
its nodes started one after another, and the wait until they form one ring."""

from __future__ import annotations

import functools
import logging
import time

from .common import MAX_NODES, Endpoints
from .node import CASSANDRA, CASSANDRA_SECURE, cassandra_node, every_node, node_answers, start_cassandra
from .secure import change_default_password
from .service import ensure

__all__ = ["refuse_another_shape", "ring_view", "running_stack", "stack_name", "start", "stop", "wait_for_ring"]

log = logging.getLogger(__name__)


def stack_name(nodes: int, secure: bool) -> str:
    return "a secured node" if secure else "one node" if nodes == 1 else f"{nodes} nodes"


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


def refuse_another_shape(endpoints: Endpoints) -> None:
    """SystemExit if this project's Cassandra runs in another shape than the one asked for."""
    wanted = stack_name(endpoints.nodes, endpoints.secure)
    other = running_stack() - {wanted}
    if other:
        raise SystemExit(
            f"this project's Cassandra runs as {', '.join(sorted(other))}, and {wanted} was asked for "
            "(CASSANDRA_NODES, CASSANDRA_SECURE): `make stack-down` first, then `make stack` with what you want"
        )


def start(endpoints: Endpoints) -> None:
    """Every node answering (reused, waited for or started), in one ring; the secured node's
    default superuser password replaced."""
    # One after another: a node joins the ring through the nodes already up.
    for k in range(1, endpoints.nodes + 1):
        address = endpoints.node_address(k)
        answers = functools.partial(node_answers, endpoints, address)
        service = cassandra_node(k, endpoints.nodes, endpoints.secure)
        ensure(service, address, answers, functools.partial(start_cassandra, k=k), endpoints)
    if endpoints.nodes > 1:
        wait_for_ring(endpoints)
    if endpoints.secure:
        change_default_password(endpoints, functools.partial(node_answers, endpoints, endpoints.cassandra_host))


def stop() -> None:
    """Stop every node this project started, whatever shape it runs in."""
    for node in every_node():
        node.stop()


def wait_for_ring(endpoints: Endpoints, timeout: float = 120.0) -> None:
    """Until every node answers and knows every node as a NORMAL member of the ring (or SystemExit)."""
    deadline = time.monotonic() + timeout
    addresses = endpoints.node_addresses()
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
