"""The metrics endpoint and its probes on running scripts, and a real Prometheus scraping one (issue 12)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cassandra.cluster import Session
from prometheus_client.parser import text_string_to_metric_families

from stack.node import CASSANDRA
from stack.prometheus import PROMETHEUS_ADDRESS

from .conftest import PYTHON, ROOT, Script, Topics, consumer_args, final_counts, wait_for
from .test_pipeline import ORDERS, ORDERS_DLQ, order, rows_in

PROMETHEUS_TARGET_PORT = 9101  # the order consumer's port in monitoring/prometheus.yml


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    """The status and body of GET http://127.0.0.1:port/path; (0, reason) if nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except (urllib.error.URLError, OSError) as error:
        return 0, str(error)


def samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    status, body = get(port, "/metrics")
    if status != 200:
        return {}
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def messages_total(port: int, subscription: str, outcome: str) -> float | None:
    labels = (("outcome", outcome), ("script", "order_data_consumer"), ("subscription", subscription))
    return samples(port).get(("ecom_pipeline_messages_total", labels))


def publish_mix(topics: Topics, first_id: int, valid: int, invalid: int) -> None:
    topics.publish_json(ORDERS, [order(first_id + i) for i in range(valid)])
    for i in range(invalid):
        topics.publish(ORDERS, f"not json {i}".encode())


def test_the_metrics_count_exactly_what_was_published(run_script, topics: Topics, first_id: int) -> None:
    port = free_port()
    consumer = run_script("order_data_consumer.py", *consumer_args(topics, ORDERS, ORDERS_DLQ, "--metrics-port", port))
    publish_mix(topics, first_id, valid=7, invalid=3)
    sub = topics.sub(ORDERS)
    wait_for(lambda: messages_total(port, sub, "received") == 10, 60, "10 messages received, by /metrics")
    wait_for(lambda: messages_total(port, sub, "applied") == 7, 30, "7 applied, by /metrics")
    found = samples(port)
    labels = (("script", "order_data_consumer"), ("subscription", sub))
    assert found[("ecom_pipeline_messages_total", (("outcome", "dead_lettered"), *labels))] == 3
    assert found[("ecom_pipeline_messages_total", (("outcome", "nacked"), *labels))] == 0
    reason = (("reason", "invalid_json"), *labels)
    assert found[("ecom_pipeline_dead_letters_total", reason)] == 3
    assert found[("ecom_pipeline_end_to_end_seconds_count", ())] == 7
    # One write call per batch the consumer took: how the 10 messages were split into pulls is
    # the emulator's choice, so at least one call, and never more than the 7 valid orders.
    assert 1 <= found[("ecom_pipeline_write_seconds_count", ())] <= 7
    in_flight = ("ecom_pipeline_in_flight_messages", ())
    wait_for(lambda: samples(port).get(in_flight) == 0, 10, "nothing in flight")  # set at each round
    assert found[("ecom_pipeline_last_applied_timestamp_seconds", ())] > 0
    assert ("process_cpu_seconds_total", ()) in found
    assert get(port, "/healthz")[0] == 200 and get(port, "/readyz")[0] == 200

    consumer.stop(signal.SIGTERM)
    assert consumer.wait(30) == 0
    counts = final_counts(consumer.output())  # the log line agrees with the counters
    assert (counts["received"], counts["applied"], counts["dead_lettered"]) == (10, 7, 3)


def test_readyz_is_503_while_cassandra_is_paused_and_200_again_after(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    port = free_port()
    consumer = run_script(
        "order_data_consumer.py",
        *consumer_args(topics, ORDERS, ORDERS_DLQ, "--metrics-port", port),
        env={"CASSANDRA_REQUEST_TIMEOUT": "2"},
    )
    wait_for(lambda: get(port, "/readyz")[0] == 200, 60, "ready")
    cassandra = CASSANDRA.pid()
    assert cassandra is not None, "this test pauses the project's own Cassandra (make stack), none is running"
    os.kill(cassandra, signal.SIGSTOP)
    try:
        topics.publish_json(ORDERS, [order(first_id)])
        wait_for(lambda: get(port, "/readyz")[0] == 503, 60, "/readyz to say 503 while Cassandra is paused")
        assert get(port, "/healthz")[0] == 200  # retrying is not being stuck
    finally:
        os.kill(cassandra, signal.SIGCONT)
    wait_for(lambda: get(port, "/readyz")[0] == 200, 120, "/readyz to say 200 once Cassandra is back")
    wait_for(lambda: rows_in(cql, first_id, 1), 60, "the order written after the pause")
    consumer.stop(signal.SIGTERM)
    assert consumer.wait(30) == 0


def test_with_two_workers_the_endpoint_reports_their_sum(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    port, total = free_port(), 600
    args = consumer_args(topics, ORDERS, ORDERS_DLQ, "--workers", 2, "--batch-size", 50, "--metrics-port", port)
    consumer = run_script("order_data_consumer.py", *args)
    topics.publish_json(ORDERS, [order(first_id + i) for i in range(total)])
    sub = topics.sub(ORDERS)
    wait_for(lambda: sum(len(rows_in(cql, s, 300)) for s in (first_id, first_id + 300)) == total, 120, "every row")
    # At least once: a redelivered order is applied (and counted) again; the check that matters
    # is below, /metrics equal to the combined summary of both workers.
    wait_for(lambda: (messages_total(port, sub, "applied") or 0) >= total, 30, f"{total} applied, by /metrics")
    applied = messages_total(port, sub, "applied")
    received = messages_total(port, sub, "received")
    consumer.stop(signal.SIGTERM)
    assert consumer.wait(60) == 0, consumer.output()
    combined = final_counts(consumer.output(), "final: 2 workers: ")
    assert (applied, received) == (combined["applied"], combined["received"])  # the sum of both workers
    assert "[worker-1]" in consumer.output() and "[worker-2]" in consumer.output()


def worker_pids(parent: int) -> list[int]:
    """The `--workers` processes of a consumer: its children started by multiprocessing's spawn
    (not its resource tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def test_with_two_workers_the_liveness_probe_fails_once_a_worker_is_gone(run_script, topics: Topics) -> None:
    port = free_port()
    args = consumer_args(topics, ORDERS, ORDERS_DLQ, "--workers", 2, "--metrics-port", port)
    consumer = run_script("order_data_consumer.py", *args)
    wait_for(lambda: consumer.output().count("consuming") == 2, 120, "both workers consuming")
    assert get(port, "/healthz")[0] == 200
    pids = worker_pids(consumer.process.pid)
    assert len(pids) == 2, pids
    os.kill(pids[0], signal.SIGKILL)
    wait_for(lambda: get(port, "/healthz")[0] == 503, 30, "/healthz to say 503 with a worker gone")
    consumer.stop(signal.SIGTERM)
    assert consumer.wait(60) == 1, consumer.output()  # a worker did not exit cleanly


@pytest.fixture(scope="module")
def prometheus(stack_env: dict[str, str]) -> Iterator[str]:
    """The project's Prometheus (`make observe`), started or reused; its address."""
    subprocess.run([PYTHON, str(ROOT / "stack" / "localstack.py"), "observe"], env=stack_env, check=True, timeout=120)
    yield PROMETHEUS_ADDRESS


def prometheus_value(address: str, query: str) -> float | None:
    url = f"http://{address}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as response:
        result = json.load(response)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_a_real_prometheus_scrapes_exactly_what_was_published(
    run_script, topics: Topics, first_id: int, prometheus: str
) -> None:
    port = PROMETHEUS_TARGET_PORT
    assert get(port, "/metrics")[0] == 0, f"port {port} (a scrape target of monitoring/prometheus.yml) is busy"
    consumer: Script = run_script(
        "order_data_consumer.py", *consumer_args(topics, ORDERS, ORDERS_DLQ, "--metrics-port", port)
    )
    publish_mix(topics, first_id, valid=12, invalid=5)
    sub = topics.sub(ORDERS)
    applied = f'sum(ecom_pipeline_messages_total{{outcome="applied", subscription="{sub}"}})'
    dead = f'sum(ecom_pipeline_dead_letters_total{{reason="invalid_json", subscription="{sub}"}})'
    wait_for(lambda: prometheus_value(prometheus, applied) == 12, 90, "Prometheus to see 12 applied")
    wait_for(lambda: prometheus_value(prometheus, dead) == 5, 30, "Prometheus to see 5 dead letters")
    consumer.stop(signal.SIGTERM)
    assert consumer.wait(30) == 0
