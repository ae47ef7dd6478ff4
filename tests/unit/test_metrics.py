"""The metrics the consumer keeps, against its own summary counts, and the two probes. No service."""

from __future__ import annotations

import re
import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from ecom_pipeline import cli
from ecom_pipeline.app import Kind
from ecom_pipeline.consumer import Consumer
from ecom_pipeline.metrics import ConsumerMetrics
from ecom_pipeline.policy import Applied, DeadLetter, Defer, Fail, Outcome, Retry
from ecom_pipeline.probes import Health
from tests.unit.test_consumer import (
    FakeDeadLetters,
    FakeSubscription,
    ScriptedHandler,
    dead_letter_for,
    messages,
    settings,
)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    assert found is not None, (name, labels)
    return found


def test_the_counters_agree_exactly_with_the_summary_line():
    registry = CollectorRegistry()
    metrics = ConsumerMetrics(registry, "order_data_consumer", "orders_data-sub")
    batch = messages(6)
    subscription = FakeSubscription(to_pull=list(batch))
    outcomes: list[Outcome] = [
        Applied(),
        Applied(),
        DeadLetter("invalid_json", "x"),
        Fail("boom"),
        Defer(60),
        Retry("down"),
    ]
    consumer = Consumer(
        subscription,
        ScriptedHandler(outcomes),
        FakeDeadLetters(),
        settings(),
        threading.Event(),
        dead_letter_for,
        lease_tick=0.05,
        metrics=metrics,
    )
    stats = consumer.run()
    labels = {"script": "order_data_consumer", "subscription": "orders_data-sub"}
    counted = {
        outcome: value(registry, "ecom_pipeline_messages_total", outcome=outcome, **labels)
        for outcome in ("received", "applied", "dead_lettered", "retried", "nacked", "deferred")
    }
    assert counted == {
        "received": stats.received,
        "applied": stats.applied,
        "dead_lettered": sum(stats.dead_lettered.values()),
        "retried": stats.retried,
        "nacked": stats.nacked,
        "deferred": stats.deferred,
    }
    assert counted == {"received": 6, "applied": 3, "dead_lettered": 1, "retried": 1, "nacked": 1, "deferred": 1}
    assert value(registry, "ecom_pipeline_dead_letters_total", reason="invalid_json", **labels) == 1
    assert value(registry, "ecom_pipeline_end_to_end_seconds_count") == 3
    assert value(registry, "ecom_pipeline_last_applied_timestamp_seconds") == pytest.approx(time.time(), abs=60)
    assert value(registry, "ecom_pipeline_in_flight_messages") == 0


def test_every_outcome_series_exists_from_the_start_at_zero():
    registry = CollectorRegistry()
    ConsumerMetrics(registry, "s", "sub")
    for outcome in ("received", "applied", "dead_lettered", "retried", "nacked", "deferred"):
        assert value(registry, "ecom_pipeline_messages_total", script="s", subscription="sub", outcome=outcome) == 0


def test_liveness_ends_after_the_window_without_a_round():
    health = Health(liveness_window=0.05)
    assert health.alive()
    health.last_round -= 1
    assert not health.alive()
    health.round()
    assert health.alive()


def test_readiness_needs_both_services_and_a_connected_node():
    up = [True]
    health = Health(liveness_window=10, cassandra_up=lambda: up[0])
    assert not health.ready()
    health.set_ready(pubsub=True)
    assert not health.ready()
    health.set_ready(cassandra=True)
    assert health.ready()
    up[0] = False
    assert not health.ready()
    up[0] = True
    health.set_ready(cassandra=False)  # a write failed transiently
    assert not health.ready()


@pytest.mark.parametrize(
    ("flag", "environ", "port"),
    [(9100, {"METRICS_PORT": "9200"}, 9100), (None, {"METRICS_PORT": " 9200 "}, 9200), (None, {}, None)],
)
def test_the_metrics_port_is_the_flag_else_metrics_port(flag, environ, port):
    assert cli.metrics_port(flag, environ) == port


@pytest.mark.parametrize("text", ["0", "70000", "http", "-1", "9100.5"])
def test_a_bad_metrics_port_variable_names_itself(text):
    with pytest.raises(ValueError, match="METRICS_PORT must be a port from 1 to 65535"):
        cli.metrics_port(None, {"METRICS_PORT": text})


@pytest.mark.parametrize("kind", ["missing", "a file", "empty"])
def test_a_multiprocess_dir_that_is_not_a_directory_names_itself(tmp_path, kind):
    """prometheus_client's own variable, inherited or mistyped: one line that names it, instead
    of its FileNotFoundError for a counter file when the first series is made (or, set but
    empty, its files written into the working directory)."""
    path = tmp_path / "metrics"
    if kind == "a file":
        path.write_text("")
    value = "" if kind == "empty" else str(path)
    with pytest.raises(ValueError, match=f"PROMETHEUS_MULTIPROC_DIR={re.escape(value)} is not a directory"):
        cli.metrics_port(9100, {"PROMETHEUS_MULTIPROC_DIR": value})


def test_a_multiprocess_dir_matters_only_with_metrics(tmp_path):
    assert cli.metrics_port(None, {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing")}) is None
    assert cli.metrics_port(9100, {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}) == 9100


def test_zero_is_not_a_metrics_port(capsys):
    with pytest.raises(SystemExit):
        cli.consumer_parser(None, Kind.ORDERS).parse_args(["--metrics-port", "0"])
    assert "--metrics-port: must be an integer between 1 and 65535" in capsys.readouterr().err
