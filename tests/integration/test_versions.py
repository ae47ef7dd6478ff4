"""Whole versions: two writes to one row never merge into a row nobody published.

Pub/Sub stamps one publish time per Publish request, so two versions of an order (or two
payments of one order) published together carry the same time. The documented rule
(docs/guarantees.md, "One version wins, whole") names the winner: the later publish time, to the
millisecond; on a tie, the greater message id modulo 1,000. Each test publishes versions, lets
the real consumers write them, and checks every row equals, in every column, the version that
rule names.

The oracle reads each message's publish time from a witness subscription of its own on the same
topic, so it does not rely on the pipeline's reading of it.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent_with_args
from google.cloud import pubsub_v1

from .conftest import Topics, consumer_args, wait_for
from .test_pipeline import ORDERS, ORDERS_DLQ, PAYMENTS, PAYMENTS_DLQ, order, payment, rows_in

PAIRS = 40
ORDER_COLUMNS = ("customer_id", "item", "quantity", "price", "shipping_address", "order_status", "creation_date")
PAYMENT_COLUMNS = ("payment_id", "payment_method", "card_last_four", "payment_status", "payment_datetime")


def order_versions(order_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two versions whose values sort against their order, so a cell-by-cell merge shows."""
    return (
        order(order_id, item="Zebra rug", order_status="Pending", price=10.0, quantity=1),
        order(order_id, item="Apple crate", order_status="Shipped", price=20.0, quantity=2),
    )


def payment_versions(order_id: int, index: int) -> tuple[dict[str, Any], dict[str, Any]]:
    return (
        payment(
            order_id,
            payment_id=1000 + index,
            payment_method="paypal",
            card_last_four="9999",
            payment_status="completed",
        ),
        payment(
            order_id,
            payment_id=2000 + index,
            payment_method="credit_card",
            card_last_four="0042",
            payment_status="failed",
        ),
    )


@dataclass
class Published:
    record: dict[str, Any]
    message_id: str


class Witness:
    """A subscription of the test's own on a topic: what Pub/Sub says it published, and when."""

    def __init__(self, topics: Topics, topic: str) -> None:
        self.topics = topics
        self.path = topics.settings.subscription_path(f"{topics.name(topic)}-witness-{uuid.uuid4().hex[:6]}")
        topics.subscriber.create_subscription(name=self.path, topic=topics.settings.topic_path(topics.name(topic)))

    def publish_times_ms(self, expected: int) -> dict[str, int]:
        """Message id -> publish time in whole milliseconds, for `expected` messages."""
        times: dict[str, int] = {}

        def pull() -> bool:
            response = self.topics.subscriber.pull(subscription=self.path, max_messages=1000, timeout=10)
            raw = type(response).pb(response).received_messages
            for received in raw:
                stamp = received.message.publish_time
                times[received.message.message_id] = stamp.seconds * 1000 + stamp.nanos // 1_000_000
            if raw:
                self.topics.subscriber.acknowledge(subscription=self.path, ack_ids=[m.ack_id for m in raw])
            return len(times) >= expected

        wait_for(pull, 60, f"{expected} messages on the witness subscription", interval=0)
        return times


def publish_together(topics: Topics, topic: str, records: Sequence[dict[str, Any]]) -> list[Published]:
    """One Publish request: every message gets the same publish time."""
    messages = [pubsub_v1.types.PubsubMessage(data=json.dumps(r).encode()) for r in records]
    response = topics.raw_publisher.publish(
        topic=topics.settings.topic_path(topics.name(topic)), messages=messages, timeout=30
    )
    return [Published(r, message_id) for r, message_id in zip(records, response.message_ids, strict=True)]


def rule_winner(versions: Sequence[Published], publish_ms: dict[str, int]) -> Published:
    """docs/guarantees.md's rule, written on its own: the later millisecond, then the greater id mod 1000."""
    return max(versions, key=lambda v: (publish_ms[v.message_id], int(v.message_id) % 1000))


def assert_whole(cql: Session, first_id: int, winners: dict[int, Published], columns: Sequence[str]) -> None:
    rows = rows_in(cql, first_id, len(winners))
    mixed = {
        order_id: {c: getattr(rows[order_id], c) for c in columns}
        for order_id, winner in winners.items()
        if any(getattr(rows[order_id], c) != winner.record[c] for c in columns)
    }
    assert mixed == {}, (
        f"{len(mixed)} of {len(winners)} rows are not the winning version, e.g. {next(iter(mixed.items()), None)}"
    )


def publish_payment_pairs(topics: Topics, first_id: int) -> tuple[Witness, list[Published]]:
    """Two payments for each of PAIRS orders, all in one Publish request, watched by a witness."""
    witness = Witness(topics, PAYMENTS)
    pairs = [version for i in range(PAIRS) for version in payment_versions(first_id + i, i)]
    return witness, publish_together(topics, PAYMENTS, pairs)


def assert_pairs_whole(cql: Session, first_id: int, witness: Witness, published: list[Published]) -> None:
    """Each order's row holds, whole, the rule's winner of the pair published for it."""
    times = witness.publish_times_ms(len(published))
    winners = {first_id + i: rule_winner(published[2 * i : 2 * i + 2], times) for i in range(PAIRS)}
    assert_whole(cql, first_id, winners, PAYMENT_COLUMNS)


def run_to_idle(run_script, topics: Topics, source: str, dead: str, *extra: object) -> None:
    script = "order_data_consumer.py" if source == ORDERS else "ingest_in_fact_table.py"
    consumer = run_script(script, *consumer_args(topics, source, dead, "--exit-after-idle", 3, *extra))
    assert consumer.wait(180) == 0, consumer.output()


@pytest.mark.parametrize("workers", [1, 2])
def test_two_versions_of_an_order_in_one_publish_request_never_mix(
    workers: int, run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    witness = Witness(topics, ORDERS)
    published = publish_together(
        topics, ORDERS, [version for i in range(PAIRS) for version in order_versions(first_id + i)]
    )
    extra: tuple[object, ...] = ("--workers", 2, "--batch-size", 1) if workers == 2 else ()
    run_to_idle(run_script, topics, ORDERS, ORDERS_DLQ, *extra)
    times = witness.publish_times_ms(len(published))
    winners = {first_id + i: rule_winner(published[2 * i : 2 * i + 2], times) for i in range(PAIRS)}
    assert_whole(cql, first_id, winners, ORDER_COLUMNS)


@pytest.mark.parametrize("later_first", [False, True])
def test_two_versions_of_an_order_in_two_requests_resolve_to_the_later_whichever_is_written_first(
    later_first: bool, run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    """The second request's version wins; written in either order (first alone, then the second)."""
    witness = Witness(topics, ORDERS)
    first_versions = [order_versions(first_id + i)[1 if later_first else 0] for i in range(PAIRS)]
    second_versions = [order_versions(first_id + i)[0 if later_first else 1] for i in range(PAIRS)]
    early = publish_together(topics, ORDERS, first_versions)
    late = publish_together(topics, ORDERS, second_versions)
    run_to_idle(run_script, topics, ORDERS, ORDERS_DLQ)
    times = witness.publish_times_ms(2 * PAIRS)
    winners = {first_id + i: rule_winner([early[i], late[i]], times) for i in range(PAIRS)}
    assert_whole(cql, first_id, winners, ORDER_COLUMNS)


def test_two_payments_of_an_order_in_one_publish_request_never_mix(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    insert = cql.prepare("INSERT INTO orders_payments_facts (order_id, item) VALUES (?, 'lamp')")
    execute_concurrent_with_args(cql, insert, [(first_id + i,) for i in range(PAIRS)])
    witness, published = publish_payment_pairs(topics, first_id)
    run_to_idle(run_script, topics, PAYMENTS, PAYMENTS_DLQ)
    assert_pairs_whole(cql, first_id, witness, published)


def test_payments_replayed_from_the_dead_letter_topic_resolve_as_if_applied_at_once(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    """Both payments arrive before their order (dead-lettered), the order comes, the replay
    writes both: the same version wins as on the direct path, by their first publish time."""
    witness, published = publish_payment_pairs(topics, first_id)
    run_to_idle(run_script, topics, PAYMENTS, PAYMENTS_DLQ)  # no order yet: all dead-lettered
    topics.publish_json(ORDERS, [order(first_id + i) for i in range(PAIRS)])
    run_to_idle(run_script, topics, ORDERS, ORDERS_DLQ)
    replay = run_script(
        "replay_dlq_payments.py", *consumer_args(topics, PAYMENTS_DLQ, PAYMENTS_DLQ, "--exit-after-idle", 3)
    )
    assert replay.wait(180) == 0, replay.output()
    assert_pairs_whole(cql, first_id, witness, published)


def test_a_consumer_whose_clock_runs_two_minutes_slow_keeps_the_later_version(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    """The write time must come from Pub/Sub's clock alone: a cap at the host's "now + 60 s"
    would give both versions the same time on a slow host, and let them mix."""
    faketime = shutil.which("faketime")
    assert faketime is not None, "faketime is needed (apt-get install faketime; .ci/run installs it)"
    witness = Witness(topics, ORDERS)
    early = publish_together(topics, ORDERS, [order_versions(first_id + i)[0] for i in range(PAIRS)])
    late = publish_together(topics, ORDERS, [order_versions(first_id + i)[1] for i in range(PAIRS)])
    consumer = run_script(
        "order_data_consumer.py",
        *consumer_args(topics, ORDERS, ORDERS_DLQ, "--exit-after-idle", 3),
        env={"FAKETIME_DONT_FAKE_MONOTONIC": "1"},
        wrap=(faketime, "-f", "-120s"),
    )
    assert consumer.wait(180) == 0, consumer.output()
    times = witness.publish_times_ms(2 * PAIRS)
    winners = {first_id + i: rule_winner([early[i], late[i]], times) for i in range(PAIRS)}
    assert all(w is late[i] for i, w in enumerate(winners.values())), "the second request must be the later"
    assert_whole(cql, first_id, winners, ORDER_COLUMNS)


def test_requeue_never_lets_an_older_dead_lettered_version_overwrite_a_newer_row(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    """A dead-lettered version, requeued, is published again with a new publish time: it must not
    win over a newer version applied meanwhile. One whose row holds nothing newer is requeued."""
    stale_id, fresh_id = first_id, first_id + 1
    older, newer = order_versions(stale_id)
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    reason = {"error": "delivery_attempts_exhausted", "source_publish_time": hour_ago, "source_message_id": "17"}
    topics.publish(ORDERS_DLQ, json.dumps(older).encode(), reason)
    topics.publish(ORDERS_DLQ, json.dumps(order(fresh_id)).encode(), {**reason, "source_message_id": "18"})
    topics.publish_json(ORDERS, [newer])
    run_to_idle(run_script, topics, ORDERS, ORDERS_DLQ)

    requeued = run_script("-m", "ecom_pipeline.admin", "requeue", topics.sub(ORDERS_DLQ), topics.name(ORDERS))
    assert requeued.wait(120) == 0, requeued.output()
    output = requeued.output()
    assert re.search(r"^requeued 1 messages", output, re.M) and re.search(r"^not requeued 1 messages", output, re.M)
    run_to_idle(run_script, topics, ORDERS, ORDERS_DLQ)
    rows = rows_in(cql, first_id, 2)
    assert {c: getattr(rows[stale_id], c) for c in ORDER_COLUMNS} == {c: newer[c] for c in ORDER_COLUMNS}
    assert rows[fresh_id].item == "desk lamp"  # the requeued one, applied
    assert topics.is_empty(ORDERS_DLQ)
