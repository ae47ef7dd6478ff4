"""The parent's probes with `--workers` tell the truth about every worker (issue 24).

A worker that hangs but lives (SIGSTOP) must make the parent's /healthz 503 within its liveness
window, and a Cassandra outage the workers see must make the parent's /readyz 503: a Kubernetes
probe only ever asks the parent.
"""

from __future__ import annotations

import os
import signal

from cassandra.cluster import Session

from stack.node import CASSANDRA

from .conftest import Script, Topics, consumer_args, wait_for
from .test_guarantees import count_rows, spawned
from .test_metrics import free_port, get
from .test_pipeline import ORDERS, ORDERS_DLQ, order
from .test_restarts import paused

# CASSANDRA_REQUEST_TIMEOUT=1: each worker's liveness window is 3 x max(2 s pull, 1 s) = 6 s.
FAST = {"CASSANDRA_REQUEST_TIMEOUT": "1"}


def worker_pids(parent: Script) -> list[int]:
    return spawned(parent.process.pid)


def start_workers(run_script, topics: Topics, port: int) -> Script:
    args = consumer_args(topics, ORDERS, ORDERS_DLQ, "--workers", 2, "--metrics-port", port, "--batch-size", 50)
    consumer = run_script("order_data_consumer.py", *args, env=FAST)
    wait_for(lambda: get(port, "/readyz")[0] == 200, 90, "the parent's /readyz to answer 200")
    wait_for(lambda: len(worker_pids(consumer)) == 2, 30, "two worker processes")
    return consumer


def test_a_stuck_worker_makes_the_parents_healthz_503(run_script, topics: Topics) -> None:
    port = free_port()
    consumer = start_workers(run_script, topics, port)
    assert get(port, "/healthz")[0] == 200
    stuck = worker_pids(consumer)[0]
    os.kill(stuck, signal.SIGSTOP)
    try:
        wait_for(lambda: get(port, "/healthz")[0] == 503, 30, "the parent's /healthz to say 503 for a stuck worker")
    finally:
        os.kill(stuck, signal.SIGCONT)
    wait_for(lambda: get(port, "/healthz")[0] == 200, 30, "/healthz to recover once the worker runs again")
    consumer.stop(signal.SIGTERM)
    assert consumer.wait(60) == 0, consumer.output()


def test_a_cassandra_outage_makes_the_parents_readyz_503(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    pid = CASSANDRA.pid()
    assert pid is not None, "this test pauses the project's own Cassandra (make stack), none is running"
    port = free_port()
    consumer = start_workers(run_script, topics, port)
    with paused(pid):
        topics.publish_json(ORDERS, [order(first_id + i) for i in range(500)])
        wait_for(lambda: get(port, "/readyz")[0] == 503, 60, "the parent's /readyz to say 503 during the outage")
    wait_for(lambda: get(port, "/readyz")[0] == 200, 90, "/readyz to recover once Cassandra answers")
    wait_for(lambda: count_rows(cql, first_id, 500) == 500, 90, "every order written after the outage")
    consumer.stop(signal.SIGTERM)
    assert consumer.wait(60) == 0, consumer.output()
