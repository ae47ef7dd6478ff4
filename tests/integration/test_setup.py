"""`admin setup` and `admin requeue` against the real emulator (issues 21 and 22): an existing
input subscription is brought to the dead-letter policy set-up now makes, and dead letters that
Pub/Sub's own policy moved are requeued and applied. Every test uses its own uuid-named topics."""

from __future__ import annotations

import json
import logging
import re
import uuid
from pathlib import Path

import pytest
from cassandra.cluster import Session

from ecom_pipeline.admin import SubscriptionSpec, count_waiting, ensure_subscriptions
from tests.unit.test_admin import free_port

from .conftest import Topics, consumer_args, final_counts, no_google_credentials, wait_for
from .test_hardening import refusal
from .test_pipeline import ORDERS, ORDERS_DLQ, order, rows_in


def test_setup_raises_an_existing_input_subscriptions_attempts_from_5_to_100_and_then_leaves_it(
    topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    settings, subscriber = topics.settings, topics.subscriber
    path = settings.subscription_path(topics.sub(ORDERS))
    dead_letter_topic = settings.topic_path(topics.name(ORDERS_DLQ))
    # The subscription as the set-up before issue 21 made it.
    subscriber.delete_subscription(subscription=path)
    subscriber.create_subscription(
        request={
            "name": path,
            "topic": settings.topic_path(topics.name(ORDERS)),
            "ack_deadline_seconds": 10,
            "dead_letter_policy": {"dead_letter_topic": dead_letter_topic, "max_delivery_attempts": 5},
        }
    )
    spec = SubscriptionSpec(topics.name(ORDERS), topics.name(ORDERS_DLQ), ack_deadline=10)

    with caplog.at_level(logging.INFO, logger="ecom_pipeline.admin"):
        ensure_subscriptions(settings, [spec])
    policy = subscriber.get_subscription(subscription=path).dead_letter_policy
    assert (policy.dead_letter_topic, policy.max_delivery_attempts) == (dead_letter_topic, 100)
    [updated] = [r.getMessage() for r in caplog.records if "dead-letter policy updated" in r.getMessage()]
    assert topics.sub(ORDERS) in updated and "5 to 100" in updated

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ecom_pipeline.admin"):
        ensure_subscriptions(settings, [spec])  # converged: nothing more to change
    assert [r for r in caplog.records if "dead-letter policy updated" in r.getMessage()] == []
    assert subscriber.get_subscription(subscription=path).dead_letter_policy.max_delivery_attempts == 100


def test_setup_with_pub_sub_unreachable_stops_after_its_wait_with_one_line(run_script) -> None:
    """Issue 22: before, the client's own retry of CreateTopic waited 10 minutes in silence, then
    printed a traceback."""
    host = f"127.0.0.1:{free_port()}"
    setup = run_script("-m", "ecom_pipeline.admin", "setup", "--wait", 3, env={"PUBSUB_EMULATOR_HOST": host})
    line = refusal(setup, timeout=60)
    assert f"Pub/Sub did not answer within 3 s (PUBSUB_EMULATOR_HOST={host})" in line


def test_setup_without_credentials_for_real_pub_sub_stops_with_one_line(run_script, tmp_path: Path) -> None:
    env = no_google_credentials(tmp_path)
    line = refusal(run_script("-m", "ecom_pipeline.admin", "setup", "--wait", 3, env=env), timeout=60)
    assert "PUBSUB_EMULATOR_HOST" in line and "credentials" in line


def test_setup_whose_statement_cassandra_refuses_stops_with_one_line(run_script) -> None:
    """The single node has no password authenticator: it refuses CREATE ROLE ... PASSWORD (a real
    refusal of a statement; the secured node refuses the pipeline's role's CREATE KEYSPACE the
    same way, tests/secure). Topics, subscriptions and schema are set up as usual before it."""
    role = {"CASSANDRA_PIPELINE_ROLE": f"setup_check_{uuid.uuid4().hex[:8]}", "CASSANDRA_PIPELINE_PASSWORD": "x"}
    line = refusal(run_script("-m", "ecom_pipeline.admin", "setup", "--wait", 10, env=role), timeout=120)
    assert "doesn't support PASSWORD" in line or "Unauthorized" in line


def test_orders_the_dead_letter_policy_moved_raw_are_requeued_from_the_orders_dlq_and_applied(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    """Issue 21's recovery: valid orders handed back until Pub/Sub's own policy moved them to
    dlq_orders_data (as restarts did with 5 attempts) go back to orders_data with `admin requeue`,
    without the attributes the policy added, and the order consumer applies them."""
    settings, subscriber = topics.settings, topics.subscriber
    five = SubscriptionSpec(
        topics.name(ORDERS),
        topics.name(ORDERS_DLQ),
        ack_deadline=10,
        minimum_backoff=1,
        maximum_backoff=2,
        max_delivery_attempts=5,  # the fewest Pub/Sub allows, so that the policy acts within seconds
    )
    ensure_subscriptions(settings, [five])
    for i in range(3):
        topics.publish(ORDERS, json.dumps(order(first_id + i)).encode(), {"origin": "shop-7"})
    orders_path = settings.subscription_path(topics.sub(ORDERS))

    def handed_back_until_dead_lettered() -> bool:
        pulled = subscriber.pull(subscription=orders_path, max_messages=100, timeout=5).received_messages
        if pulled:
            subscriber.modify_ack_deadline(
                subscription=orders_path, ack_ids=[m.ack_id for m in pulled], ack_deadline_seconds=0
            )
        return count_waiting(settings, topics.sub(ORDERS_DLQ)).count == 3

    wait_for(handed_back_until_dead_lettered, 120, "the policy to move 3 orders to the orders DLQ", interval=0.5)
    dlq_path = settings.subscription_path(topics.sub(ORDERS_DLQ))
    dead = subscriber.pull(subscription=dlq_path, max_messages=10, timeout=10).received_messages
    assert len(dead) == 3 and all(m.message.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5" for m in dead)
    subscriber.modify_ack_deadline(subscription=dlq_path, ack_ids=[m.ack_id for m in dead], ack_deadline_seconds=0)

    requeue = run_script("-m", "ecom_pipeline.admin", "requeue", topics.sub(ORDERS_DLQ), topics.name(ORDERS))
    assert requeue.wait(60) == 0, requeue.output()
    assert re.findall(r"requeued (\d+) messages", requeue.output()) == ["3"]
    assert topics.is_empty(ORDERS_DLQ)
    again = subscriber.pull(subscription=orders_path, max_messages=10, timeout=10).received_messages
    assert sorted(json.loads(m.message.data)["order_id"] for m in again) == [first_id, first_id + 1, first_id + 2]
    assert all(dict(m.message.attributes) == {"origin": "shop-7"} for m in again)
    subscriber.modify_ack_deadline(subscription=orders_path, ack_ids=[m.ack_id for m in again], ack_deadline_seconds=0)

    consumer = run_script("order_data_consumer.py", *consumer_args(topics, ORDERS, ORDERS_DLQ, "--exit-after-idle", 3))
    assert consumer.wait(120) == 0, consumer.output()
    assert final_counts(consumer.output())["applied"] == 3
    assert sorted(rows_in(cql, first_id, 3)) == [first_id, first_id + 1, first_id + 2]
    assert topics.is_empty(ORDERS_DLQ)
