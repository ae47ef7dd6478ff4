"""The local services are real and `make setup` converges: issue 2's smoke tests."""

from __future__ import annotations

import subprocess
import uuid

from cassandra.cluster import Session
from google.cloud import pubsub_v1

from ecom_pipeline.admin import pipeline_subscriptions
from ecom_pipeline.config import MAX_DELIVERY_ATTEMPTS, PubSubSettings

from .conftest import PYTHON, ROOT
from .test_hardening import refusal

EXPECTED_COLUMNS = {
    "order_id": "bigint",
    "customer_id": "bigint",
    "item": "text",
    "quantity": "bigint",
    "price": "double",
    "shipping_address": "text",
    "order_status": "text",
    "creation_date": "text",
    "payment_id": "bigint",
    "payment_method": "text",
    "card_last_four": "text",
    "payment_status": "text",
    "payment_datetime": "text",
}


def test_cassandra_is_a_real_cassandra_5_and_round_trips_a_row(cql: Session) -> None:
    version = cql.execute("SELECT release_version FROM system.local").one().release_version
    assert version.startswith("5."), version
    cql.execute("CREATE TABLE IF NOT EXISTS smoke (k text PRIMARY KEY, v int)")
    key = uuid.uuid4().hex
    cql.execute("INSERT INTO smoke (k, v) VALUES (%s, %s)", (key, 42))
    assert cql.execute("SELECT v FROM smoke WHERE k = %s", (key,)).one().v == 42


def test_emulator_round_trips_a_message(stack_env: dict[str, str]) -> None:
    settings = PubSubSettings.from_env(stack_env)
    name = f"smoke-{uuid.uuid4().hex[:10]}"
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    publisher.create_topic(name=settings.topic_path(name))
    subscriber.create_subscription(name=settings.subscription_path(name), topic=settings.topic_path(name))
    try:
        publisher.publish(settings.topic_path(name), b"hello", kind="smoke").result(timeout=30)
        response = subscriber.pull(subscription=settings.subscription_path(name), max_messages=10, timeout=30)
        [received] = response.received_messages
        assert (received.message.data, received.message.attributes["kind"]) == (b"hello", "smoke")
        subscriber.acknowledge(subscription=settings.subscription_path(name), ack_ids=[received.ack_id])
    finally:
        subscriber.delete_subscription(subscription=settings.subscription_path(name))
        publisher.delete_topic(topic=settings.topic_path(name))
        subscriber.close()


def test_setup_twice_leaves_exactly_the_designed_topics_subscriptions_and_columns(
    stack_env: dict[str, str], cql: Session
) -> None:
    for _ in range(2):
        subprocess.run([PYTHON, "-m", "ecom_pipeline.admin", "setup"], cwd=ROOT, env=stack_env, check=True, timeout=120)

    settings = PubSubSettings.from_env(stack_env)
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    project = f"projects/{settings.project}"
    topics = {t.name.rsplit("/", 1)[1] for t in publisher.list_topics(project=project)}
    subscriptions = {s.name.rsplit("/", 1)[1]: s for s in subscriber.list_subscriptions(project=project)}
    designed = {"orders_data", "payments_data", "dlq_orders_data", "dlq_payments_data"}
    # Tests running beside this one add uuid-suffixed topics; the designed names are exact.
    assert designed <= topics
    assert {t for t in topics if "-" not in t} == designed
    assert {s for s in subscriptions if s.count("-") == 1} == {f"{t}-sub" for t in designed}
    for spec in pipeline_subscriptions():
        subscription = subscriptions[spec.name]
        assert subscription.topic.endswith(f"/topics/{spec.topic}")
        if spec.dead_letter_topic:
            assert subscription.dead_letter_policy.dead_letter_topic.endswith(f"/topics/{spec.dead_letter_topic}")
            assert subscription.dead_letter_policy.max_delivery_attempts == MAX_DELIVERY_ATTEMPTS

    columns = cql.execute(
        "SELECT column_name, type, kind FROM system_schema.columns WHERE keyspace_name = %s AND table_name = %s",
        (stack_env["CASSANDRA_KEYSPACE"], "orders_payments_facts"),
    )
    rows = {row.column_name: (row.type, row.kind) for row in columns}
    assert {name: kind_type[0] for name, kind_type in rows.items()} == EXPECTED_COLUMNS
    assert rows["order_id"][1] == "partition_key"
    subscriber.close()


def test_setup_refuses_more_replicas_than_the_data_centre_has_nodes(run_script, cql: Session) -> None:
    keyspace = f"rf_check_{uuid.uuid4().hex[:8]}"
    env = {"CASSANDRA_KEYSPACE": keyspace, "CASSANDRA_REPLICATION_FACTOR": "2"}
    try:
        line = refusal(run_script("-m", "ecom_pipeline.admin", "setup", env=env), timeout=120)
        assert "CASSANDRA_REPLICATION_FACTOR=2 is more than the 1 nodes in datacenter1" in line
        replication = cql.execute(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
        ).one()
        assert replication is not None and replication.replication["replication_factor"] == "1"  # schema.cql's
    finally:
        cql.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
