"""Restarts never push a valid message into a dead-letter topic.

Pub/Sub counts every hand-back (ModifyAckDeadline 0) and every lease that runs out as a delivery
attempt, and the input subscriptions' dead-letter policy moves a message once it has had that
many. These tests restart the consumers again and again while Cassandra browns out (paused while
they hold messages), the way a rolling deploy during an outage or a crash loop does, and check
that every valid message ends applied and no dead-letter topic holds one. (One SIGTERM to a
`--workers` process group: test_guarantees.py.)
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from cassandra.cluster import NoHostAvailable, Session
from cassandra.concurrent import execute_concurrent_with_args

from ecom_pipeline.config import MAX_DELIVERY_ATTEMPTS
from stack.node import CASSANDRA

from .conftest import Script, Topics, applied_so_far, consumer_args, final_counts, wait_for
from .test_guarantees import count_rows
from .test_pipeline import ORDERS, ORDERS_DLQ, PAYMENTS, PAYMENTS_DLQ, order, payment

RESTARTS = 10
# A request to a paused node fails after 1 s, so the consumer is seen retrying at once.
BROWN_OUT_ENV = {"CASSANDRA_REQUEST_TIMEOUT": "1"}


def cassandra_pid() -> int:
    pid = CASSANDRA.pid()  # the recorded pid, only if that process is alive and is our Cassandra
    assert pid is not None, "this test pauses the project's own Cassandra (make stack), none is running"
    return pid


@contextmanager
def paused(pid: int) -> Iterator[None]:
    """Cassandra stopped (SIGSTOP) for the block: connections stay open, nothing answers."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def rows_present(cql: Session, first_id: int, total: int, paid: bool) -> int:
    try:
        return count_rows(cql, first_id, total, paid=paid)
    except NoHostAvailable:  # this test's own session reconnects after a pause too
        return -1


def restart_during_brown_out(start: Callable[[], Script], stop: Callable[[Script], None], pid: int) -> None:
    """Start a consumer; once it consumes, pause Cassandra; once the consumer holds messages it
    cannot write, stop it (`stop`); resume Cassandra."""
    consumer = start()
    wait_for(lambda: "consuming" in consumer.output(), 60, "the consumer to start consuming", interval=0.01)
    with paused(pid):
        wait_for(lambda: "transient failure" in consumer.output(), 30, "the consumer to hold unwritable messages")
        stop(consumer)


@pytest.mark.parametrize("kind", ["orders", "payments"])
def test_restarts_during_a_cassandra_brown_out_dead_letter_no_valid_message(
    kind: str, run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    total = 1500
    if kind == "orders":
        script, source, dlq, paid = "order_data_consumer.py", ORDERS, ORDERS_DLQ, False
        topics.publish_json(ORDERS, [order(first_id + i) for i in range(total)])
    else:
        script, source, dlq, paid = "ingest_in_fact_table.py", PAYMENTS, PAYMENTS_DLQ, True
        insert = cql.prepare("INSERT INTO orders_payments_facts (order_id, item) VALUES (?, 'lamp')")
        execute_concurrent_with_args(cql, insert, [(first_id + i,) for i in range(total)], concurrency=64)
        topics.publish_json(PAYMENTS, [payment(first_id + i) for i in range(total)])
    pid = cassandra_pid()
    args = consumer_args(topics, source, dlq, "--batch-size", 100, "--stop-grace", 2)

    def start() -> Script:
        return run_script(script, *args, env=BROWN_OUT_ENV)

    def stop(consumer: Script) -> None:
        consumer.stop(signal.SIGTERM)
        assert consumer.wait(60) == 0, consumer.output()

    for _ in range(RESTARTS):
        restart_during_brown_out(start, stop, pid)

    last = run_script(script, *args, "--exit-after-idle", 5)
    assert last.wait(300) == 0, last.output()
    wait_for(lambda: rows_present(cql, first_id, total, paid) == total, 60, f"all {total} rows")
    assert final_counts(last.output())["dead_lettered"] == 0
    assert topics.is_empty(dlq), "a valid message was moved to the dead-letter topic"


def test_a_crash_loop_loses_nothing_and_dead_letters_nothing(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    """SIGKILL every few seconds: nothing is handed back, what a killed consumer held comes back
    when its lease (10 s) lapses, with one more delivery attempt, to one of the next consumers.

    The official emulator stops redelivering a message whose lease has lapsed on a subscription
    with a retry policy (checked here: after the third lapse, nothing for 8 minutes with a 1-2 s
    backoff; real Pub/Sub redelivers within the policy's maximum backoff), so this test's
    subscription has the dead-letter policy at 100 attempts but no retry policy, and the loop
    keeps Cassandra up and lets the messages flow, rather than pinning them."""
    without_retry_policy(topics, ORDERS, ORDERS_DLQ)
    total = 10_000
    topics.publish_json(ORDERS, [order(first_id + i) for i in range(total)])
    args = consumer_args(topics, ORDERS, ORDERS_DLQ, "--batch-size", 50, "--batches-in-flight", 1, "--ack-deadline", 10)

    def crash_after_some_progress() -> None:
        # The victim's own progress line (every 0.1 s) says when it has applied 100: counting the
        # table instead takes long enough for a consumer to drain thousands first.
        victim = run_script("order_data_consumer.py", *args, "--stats-interval", 0.1)
        wait_for(lambda: applied_so_far(victim.output()) >= 100, 60, "the consumer to apply 100", interval=0.01)
        victim.stop(signal.SIGKILL)
        victim.process.wait()

    for _ in range(RESTARTS):
        crash_after_some_progress()
    assert count_rows(cql, first_id, total) < total, "the stream was drained before the crash loop ended"
    last = run_script("order_data_consumer.py", *args, "--exit-after-idle", 25)
    assert last.wait(600) == 0, last.output()
    assert count_rows(cql, first_id, total) == total
    assert topics.is_empty(ORDERS_DLQ), "a valid message was moved to the dead-letter topic"


def without_retry_policy(topics: Topics, topic: str, dead_letter_topic: str) -> None:
    """Make `topic`'s subscription again with the dead-letter policy at its maximum and no retry
    policy (see the crash-loop test for why)."""
    path = topics.settings.subscription_path(topics.sub(topic))
    topics.subscriber.delete_subscription(subscription=path)
    topics.subscriber.create_subscription(
        request={
            "name": path,
            "topic": topics.settings.topic_path(topics.name(topic)),
            "ack_deadline_seconds": 10,
            "dead_letter_policy": {
                "dead_letter_topic": topics.settings.topic_path(topics.name(dead_letter_topic)),
                "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS,
            },
        }
    )
