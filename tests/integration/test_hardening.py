"""The consumer core under hostile input and misconfiguration, against the real services (issue 9).

Attributes and payloads are chosen by whoever publishes; flags and environment variables get
mistyped; services vanish. Each case ends in a dead letter with a reason, or in one clear error
line and an exit status, never in a wedged or silently wrong pipeline.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from cassandra.cluster import Session

from stack.node import CASSANDRA  # our own Cassandra: its pid is checked to be ours

from .conftest import Script, Topics, consumer_args, final_counts, no_google_credentials, wait_for
from .test_pipeline import ORDERS, ORDERS_DLQ, PAYMENTS, PAYMENTS_DLQ, order, rows_in

# The keyword arguments of PublisherClient.publish(topic, data, ordering_key, retry, timeout).
COLLIDING_NAMES = ("ordering_key", "timeout", "retry", "topic", "data")


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if " ERROR " in line]


def refusal(script: Script, timeout: float = 60) -> str:
    """The script exits 1 with exactly one error line and no traceback: that line."""
    assert script.wait(timeout) == 1, script.output()
    output = script.output()
    assert "Traceback" not in output
    [line] = error_lines(output)
    return line


def test_attributes_named_like_publish_keywords_are_dead_lettered_intact_and_the_consumer_carries_on(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    consumer = run_script("order_data_consumer.py", *consumer_args(topics, ORDERS, ORDERS_DLQ))
    hostile = {name: f"value of {name}" for name in COLLIDING_NAMES}
    topics.publish(ORDERS, b"not json, all names", hostile)
    for name in COLLIDING_NAMES:  # and each one alone
        topics.publish(ORDERS, f"not json, {name}".encode(), {name: "x", "origin": "test"})
    topics.publish_json(ORDERS, [order(first_id), order(first_id + 1)])

    wait_for(lambda: len(rows_in(cql, first_id, 2)) == 2, 60, "the two valid orders after the hostile ones")
    dead = {m.message.data: dict(m.message.attributes) for m in topics.drain(ORDERS_DLQ, expected=6)}
    assert len(dead) == 6
    all_names = dead[b"not json, all names"]
    assert {name: all_names[name] for name in COLLIDING_NAMES} == hostile
    assert all_names["error"] == "invalid_json"
    for name in COLLIDING_NAMES:
        attributes = dead[f"not json, {name}".encode()]
        assert (attributes[name], attributes["origin"], attributes["error"]) == ("x", "test", "invalid_json")
    assert consumer.process.poll() is None, consumer.output()
    consumer.stop(signal.SIGTERM)
    assert consumer.wait(30) == 0
    output = consumer.output()
    counts = final_counts(output)
    assert (counts["applied"], counts["dead_lettered"], counts["invalid_json"]) == (2, 6, 6), output


def test_a_mistyped_dead_letter_topic_is_refused_at_start_with_one_line(run_script, topics: Topics) -> None:
    args = ["--subscription", topics.sub(ORDERS), "--dead-letter-topic", "dlq_orders_dta-typo"]
    line = refusal(run_script("order_data_consumer.py", *args))
    assert "dlq_orders_dta-typo" in line and "does not exist" in line


def test_a_missing_subscription_is_refused_at_start_with_one_line(run_script, topics: Topics) -> None:
    args = ["--subscription", "no-such-sub", "--dead-letter-topic", topics.name(ORDERS_DLQ)]
    line = refusal(run_script("order_data_consumer.py", *args))
    assert "no-such-sub" in line and "does not exist" in line


def test_a_consistency_level_the_keyspace_can_never_meet_is_refused_at_start(run_script, topics: Topics) -> None:
    args = consumer_args(topics, ORDERS, ORDERS_DLQ)
    line = refusal(run_script("order_data_consumer.py", *args, env={"CASSANDRA_CONSISTENCY": "THREE"}))
    assert "THREE" in line and "replication factor 1" in line


def test_a_mistyped_local_data_centre_is_refused_at_start_with_one_line(run_script, topics: Topics) -> None:
    args = consumer_args(topics, ORDERS, ORDERS_DLQ)
    line = refusal(run_script("order_data_consumer.py", *args, env={"CASSANDRA_LOCAL_DC": "datacentre1"}))
    assert "CASSANDRA_LOCAL_DC=datacentre1: no node of the cluster is in it" in line


def test_a_dead_letter_topic_deleted_at_run_time_stops_the_consumer_and_hands_the_message_back(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    consumer = run_script("order_data_consumer.py", *consumer_args(topics, ORDERS, ORDERS_DLQ))
    topics.publish_json(ORDERS, [order(first_id)])
    wait_for(lambda: rows_in(cql, first_id, 1), 60, "the consumer to run")
    topics.publisher.delete_topic(topic=topics.settings.topic_path(topics.name(ORDERS_DLQ)))
    topics.publish(ORDERS, b"{broken", {"origin": "test"})

    assert consumer.wait(60) == 1, consumer.output()
    [line] = error_lines(consumer.output())
    assert topics.name(ORDERS_DLQ) in line and "does not exist" in line
    assert "Traceback" not in consumer.output()
    # Handed back, not acked and not held: the next reader gets it at once (ack deadline 10 s).
    [again] = topics.drain(ORDERS, expected=1, timeout=8)
    assert again.message.data == b"{broken"


@pytest.mark.parametrize("attribute", ["source_publish_time", "CloudPubSubDeadLetterSourceTopicPublishTime"])
def test_a_far_future_publish_time_claimed_on_an_input_topic_does_not_pin_the_row(
    run_script, topics: Topics, cql: Session, first_id: int, attribute: str
) -> None:
    topics.publish(
        ORDERS, json.dumps(order(first_id, order_status="pinned")).encode(), {attribute: "2999-01-01T00:00:00+00:00"}
    )
    consumer = run_script("order_data_consumer.py", *consumer_args(topics, ORDERS, ORDERS_DLQ))
    wait_for(lambda: rows_in(cql, first_id, 1), 60, "the first version")
    topics.publish_json(ORDERS, [order(first_id, order_status="shipped")])  # a later version
    wait_for(lambda: rows_in(cql, first_id, 1)[first_id].order_status == "shipped", 60, "the later version to win")
    consumer.stop(signal.SIGTERM)
    assert consumer.wait(30) == 0


def test_a_far_past_publish_time_claimed_on_an_input_topic_does_not_make_the_write_a_no_op(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    topics.publish_json(ORDERS, [order(first_id, order_status="first")])
    consumer = run_script("order_data_consumer.py", *consumer_args(topics, ORDERS, ORDERS_DLQ))
    wait_for(lambda: rows_in(cql, first_id, 1), 60, "the first version")
    topics.publish(
        ORDERS,
        json.dumps(order(first_id, order_status="second")).encode(),
        {"source_publish_time": "1971-01-01T00:00:00+00:00"},
    )
    wait_for(lambda: rows_in(cql, first_id, 1)[first_id].order_status == "second", 60, "the later version to win")
    consumer.stop(signal.SIGTERM)
    assert consumer.wait(30) == 0


@pytest.mark.parametrize(
    "flag, value, words",
    [
        ("--batch-size", "0", "between 1 and 1000"),
        ("--batch-size", "1001", "between 1 and 1000"),
        ("--ack-deadline", "0", "between 10 and 600"),
        ("--ack-deadline", "601", "between 10 and 600"),
        ("--exit-after-idle", "-1", "greater than 0"),
        ("--stats-interval", "0", "greater than 0"),
        ("--workers", "0", "between 1 and 64"),
        ("--batch-size", "ten", "between 1 and 1000"),
    ],
)
def test_out_of_range_flags_are_usage_errors_that_name_the_range(run_script, flag: str, value: str, words: str) -> None:
    consumer = run_script("order_data_consumer.py", flag, value)
    assert consumer.wait(30) == 2
    assert words in consumer.output() and flag in consumer.output()


@pytest.mark.parametrize("script", ["order_data_consumer.py", "ingest_in_fact_table.py", "replay_dlq_payments.py"])
def test_help_shows_every_default(run_script, script: str) -> None:
    helper = run_script(script, "--help")
    assert helper.wait(30) == 0
    text = " ".join(helper.output().split())
    for default in ("(default: 1000)", "(default: 60)", "(default: 5.0)", "(default: 1)", "(default: INFO)"):
        assert default in text, (default, text)


def test_without_emulator_and_without_credentials_one_line_says_what_to_set(
    run_script, topics: Topics, tmp_path: Path
) -> None:
    env = no_google_credentials(tmp_path)
    line = refusal(run_script("order_data_consumer.py", *consumer_args(topics, ORDERS, ORDERS_DLQ), env=env))
    assert "PUBSUB_EMULATOR_HOST" in line and "credentials" in line


def test_a_non_numeric_port_names_the_variable(run_script, topics: Topics) -> None:
    args = consumer_args(topics, ORDERS, ORDERS_DLQ)
    line = refusal(run_script("order_data_consumer.py", *args, env={"CASSANDRA_PORT": "abc"}), timeout=30)
    assert "CASSANDRA_PORT" in line and "abc" in line


def test_a_multiprocess_metrics_dir_that_does_not_exist_names_the_variable(
    run_script, topics: Topics, tmp_path: Path
) -> None:
    missing = tmp_path / "metrics"
    args = consumer_args(topics, ORDERS, ORDERS_DLQ, "--metrics-port", 9100)
    line = refusal(run_script("order_data_consumer.py", *args, env={"PROMETHEUS_MULTIPROC_DIR": str(missing)}))
    assert f"PROMETHEUS_MULTIPROC_DIR={missing} is not a directory" in line


def test_an_unreachable_cassandra_gives_one_line_per_retry_and_sigterm_still_exits_0(
    run_script, topics: Topics
) -> None:
    consumer = run_script(
        "ingest_in_fact_table.py", *consumer_args(topics, PAYMENTS, PAYMENTS_DLQ), env={"CASSANDRA_PORT": "1"}
    )
    wait_for(lambda: consumer.output().count("Cassandra is not reachable") >= 2, 60, "two retry lines")
    consumer.stop(signal.SIGTERM)
    assert consumer.wait(30) == 0
    output = consumer.output()
    assert "Traceback" not in output
    retries = [line for line in output.splitlines() if "Cassandra is not reachable" in line]
    assert all("retrying in" in line and "127.0.0.1:1" in line for line in retries), retries
    assert error_lines(output) == []


def test_a_second_signal_forces_the_exit_while_a_write_hangs_and_nothing_is_lost(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    total = 20_000  # still draining when Cassandra is paused
    topics.publish_json(ORDERS, [order(first_id + i) for i in range(total)])
    args = consumer_args(topics, ORDERS, ORDERS_DLQ, "--batch-size", 100)
    # A progress line every 0.2 s while the loop turns; none while a write hangs (for 60 s).
    slow = {"CASSANDRA_REQUEST_TIMEOUT": "60"}
    consumer = run_script("order_data_consumer.py", *args, "--stats-interval", 0.2, env=slow)
    wait_for(lambda: rows_in(cql, first_id, 1), 60, "the first rows")
    cassandra = CASSANDRA.pid()
    assert cassandra is not None, "this test pauses the project's own Cassandra (make stack), none is running"
    seen = [""]

    def write_hangs() -> bool:
        output, seen[0] = seen[0], consumer.output()
        return output == seen[0]

    os.kill(cassandra, signal.SIGSTOP)  # every write now hangs until the driver's timeout
    try:
        wait_for(write_hangs, 30, "the consumer to be stuck in a write", interval=1.0)
        consumer.stop(signal.SIGINT)
        wait_for(lambda: "SIGINT received" in consumer.output(), 10, "the first signal to be seen")
        consumer.stop(signal.SIGINT)
        assert consumer.wait(30) == 130, consumer.output()
    finally:
        os.kill(cassandra, signal.SIGCONT)
    assert "forced exit" in consumer.output()
    # Whatever it held was handed back: a successor applies every order, none dead-lettered.
    successor = run_script("order_data_consumer.py", *args, "--exit-after-idle", 5)
    assert successor.wait(240) == 0, successor.output()
    assert sum(len(rows_in(cql, start, 500)) for start in range(first_id, first_id + total, 500)) == total
    assert topics.is_empty(ORDERS_DLQ)


@pytest.mark.parametrize(
    ("env", "words"),
    [({"CASSANDRA_PORT": "9"}, "Cassandra"), ({"PUBSUB_EMULATOR_HOST": "127.0.0.1:9"}, "dlq_orders_data-sub")],
)
def test_the_audit_with_a_service_down_says_so_in_one_line(run_script, env: dict[str, str], words: str) -> None:
    line = refusal(run_script("-m", "ecom_pipeline.admin", "audit", "--last-id", "10", env=env))
    assert words in line


@pytest.mark.parametrize("script", ["order_data_producer.py", "payments_data_producer.py"])
def test_a_producer_to_a_missing_topic_stops_with_one_line(run_script, script: str) -> None:
    # No --count: before, it went on failing every publish until Ctrl-C.
    producer = run_script(script, "--topic", "no_such_topic_here", "--rate", 0)
    line = refusal(producer)
    assert "no_such_topic_here" in line and "does not exist" in line
