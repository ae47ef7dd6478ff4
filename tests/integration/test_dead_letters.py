"""The dead-letter lifecycle against the real services (issue 10): racing payments healed within
seconds, nothing hidden when the replay stops, no endless cycling, no card numbers, requeueing."""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cassandra.cluster import Session

from ecom_pipeline.admin import count_waiting
from tests.unit.test_mockdata import card_like_numbers

from .conftest import Script, Topics, consumer_args, final_counts, wait_for
from .test_pipeline import ORDERS, ORDERS_DLQ, PAYMENTS, PAYMENTS_DLQ, order, payment

CARD = "4111111111111111"  # Luhn-valid: a test card number


def consume_payments(run_script: Callable[..., Script], topics: Topics) -> Script:
    """Run the payment consumer over what is waiting, until idle; it must exit 0."""
    payments = run_script(
        "ingest_in_fact_table.py", *consumer_args(topics, PAYMENTS, PAYMENTS_DLQ, "--exit-after-idle", 3)
    )
    assert payments.wait(120) == 0, payments.output()
    return payments


# A dead letter the replay cannot apply yet is deferred for at least 5 s (policy.replay_delay;
# 10 minutes for one it can never apply). A replay that exits after less idle time than that
# has it back in its hands only once: it defers it exactly once.
SHORTER_THAN_A_DEFERRAL = 3


def replay_until_idle(run_script: Callable[..., Script], topics: Topics, idle: float) -> Script:
    """Run the replay until nothing new came for `idle` seconds; it must exit 0."""
    replay = run_script(
        "replay_dlq_payments.py", *consumer_args(topics, PAYMENTS_DLQ, PAYMENTS_DLQ, "--exit-after-idle", idle)
    )
    assert replay.wait(120) == 0, replay.output()
    return replay


def test_payments_racing_ahead_of_their_orders_are_applied_soon_after_the_orders(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    scripts = [
        run_script("order_data_consumer.py", *consumer_args(topics, ORDERS, ORDERS_DLQ)),
        run_script("ingest_in_fact_table.py", *consumer_args(topics, PAYMENTS, PAYMENTS_DLQ)),
        run_script("replay_dlq_payments.py", *consumer_args(topics, PAYMENTS_DLQ, PAYMENTS_DLQ)),
    ]
    count = 24
    ahead = random.Random(first_id).choices(range(0, 13), k=count)  # seconds each payment leads its order
    # A publication schedule (not a wait for state): payment k at k/2 s, its order `ahead[k]` s later.
    schedule = sorted(
        [(k / 2, PAYMENTS, payment(first_id + k)) for k in range(count)]
        + [(k / 2 + ahead[k], ORDERS, order(first_id + k)) for k in range(count)],
        key=lambda event: event[0],
    )
    started = time.monotonic()
    order_seen: dict[int, float] = {}
    payment_seen: dict[int, float] = {}

    def publish_on_schedule() -> None:
        for at, topic, record in schedule:
            threading.Event().wait(max(0.0, started + at - time.monotonic()))
            topics.publish_json(topic, [record])

    publisher = threading.Thread(target=publish_on_schedule)
    publisher.start()

    def all_paid() -> bool:
        now = time.monotonic()
        ids = ",".join(str(first_id + k) for k in range(count))
        for row in cql.execute(f"SELECT order_id, payment_id FROM orders_payments_facts WHERE order_id IN ({ids})"):
            order_seen.setdefault(row.order_id, now)
            if row.payment_id is not None:
                payment_seen.setdefault(row.order_id, now)
        return len(payment_seen) == count

    wait_for(all_paid, 180, f"{count} payments applied", interval=0.2)
    publisher.join()
    lags = sorted(payment_seen[i] - order_seen[i] for i in order_seen)
    assert len(lags) == count
    assert lags[-1] <= 60, lags  # a schedule bound (the old replay waited 300 s), not a speed claim
    for script in scripts:
        script.stop()
        assert script.wait(30) == 0, script.output()


def test_after_the_replay_exits_a_still_orphaned_payment_is_visible_again_within_seconds(
    run_script, topics: Topics, first_id: int
) -> None:
    topics.publish_json(PAYMENTS, [payment(first_id)])  # its order never comes
    consume_payments(run_script, topics)
    replay = replay_until_idle(run_script, topics, idle=SHORTER_THAN_A_DEFERRAL)
    counts = final_counts(replay.output())
    assert (counts["received"], counts["deferred"], counts["applied"], counts["dead_lettered"]) == (1, 1, 0, 0)
    [dead] = topics.drain(PAYMENTS_DLQ, expected=1, timeout=15)
    assert json.loads(dead.message.data)["order_id"] == first_id


def test_an_invalid_dead_letter_is_looked_at_once_not_cycled(run_script, topics: Topics, first_id: int) -> None:
    topics.publish_json(PAYMENTS, [payment(first_id, payment_id="seven")])
    consume_payments(run_script, topics)
    replay = replay_until_idle(run_script, topics, idle=8)
    counts = final_counts(replay.output())
    assert (counts["received"], counts["deferred"], counts["applied"], counts["dead_lettered"]) == (1, 1, 0, 0)
    [dead] = topics.drain(PAYMENTS_DLQ, expected=1, timeout=15)
    assert dead.message.attributes["error"] == "invalid_message"
    assert "replay_attempts" not in dead.message.attributes and "replayed_at" not in dead.message.attributes


@pytest.mark.parametrize(
    "first_published",
    [
        # What a renewed copy carries: its first publish time, more than 6 days ago.
        (datetime.now(UTC) - timedelta(days=6, minutes=1)).isoformat(),
        # A publisher's valid ISO-8601 time that has no year in UTC.
        "0001-01-01T00:00:00+14:00",
    ],
    ids=["renewed-copy", "year-0-in-utc"],
)
def test_a_dead_letter_with_an_old_or_odd_first_publish_time_is_deferred_not_cycled(
    run_script, topics: Topics, first_id: int, first_published: str
) -> None:
    attributes = {"error": "order_not_found", "source_publish_time": first_published}
    topics.publish(PAYMENTS_DLQ, json.dumps(payment(first_id)).encode(), attributes)  # its order never comes
    replay = replay_until_idle(run_script, topics, idle=SHORTER_THAN_A_DEFERRAL)
    counts = final_counts(replay.output())
    # Deferred for 5 s (the year-0 case) or 10 minutes (the renewed copy): exactly once either
    # way, never applied nor republished.
    assert (counts["received"], counts["deferred"], counts["applied"], counts["dead_lettered"]) == (1, 1, 0, 0)
    assert "Traceback" not in replay.output()
    [dead] = topics.drain(PAYMENTS_DLQ, expected=1, timeout=15)
    assert dict(dead.message.attributes) == attributes  # the same dead letter, not a copy of it
    assert topics.is_empty(PAYMENTS_DLQ)


def test_a_waiting_payment_whose_date_looks_like_a_card_number_is_applied_as_it_was_sent(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    when = "2026-03-01 000200"  # valid ISO-8601; its 14 digits pass the Luhn check
    topics.publish_json(PAYMENTS, [payment(first_id, payment_datetime=when)])  # before its order
    consume_payments(run_script, topics)
    topics.publish_json(ORDERS, [order(first_id)])
    orders = run_script("order_data_consumer.py", *consumer_args(topics, ORDERS, ORDERS_DLQ, "--exit-after-idle", 3))
    assert orders.wait(120) == 0, orders.output()
    replay = replay_until_idle(run_script, topics, idle=5)
    assert final_counts(replay.output())["applied"] == 1, replay.output()
    row = cql.execute("SELECT payment_datetime FROM orders_payments_facts WHERE order_id = %s", (first_id,)).one()
    assert row.payment_datetime == when


def test_a_message_with_pub_subs_maximum_of_attributes_is_dead_lettered_with_as_many(
    run_script, topics: Topics, first_id: int
) -> None:
    attributes = {f"a{i:03}": "v" for i in range(100)}
    topics.publish(PAYMENTS, b"not json", attributes)
    payments = consume_payments(run_script, topics)
    assert final_counts(payments.output())["dead_lettered"] == 1, payments.output()
    [dead] = topics.drain(PAYMENTS_DLQ, expected=1)
    dead_attributes = dict(dead.message.attributes)
    assert len(dead_attributes) == 99 and dead_attributes["error"] == "invalid_json"
    kept = sorted(name for name in dead_attributes if name.startswith("a"))
    assert kept == sorted(attributes)[: len(kept)] and dead_attributes["dropped_attributes"] == str(100 - len(kept))


def test_a_card_number_never_reaches_a_dead_letter(run_script, topics: Topics, first_id: int) -> None:
    invalid = json.dumps(payment(first_id, card_last_four=CARD)).encode()
    topics.publish(PAYMENTS, invalid, {"note": "card 4111 1111 1111 1111", "trace": "t-1"})
    payments = consume_payments(run_script, topics)
    [dead] = topics.drain(PAYMENTS_DLQ, expected=1)
    attributes = dict(dead.message.attributes)
    # Nothing of an invalid message is kept unmasked, its ids included. The pipeline's own
    # source_message_id is never masked (a dead letter must stay traceable to its source).
    ours = {"source_message_id"}
    text = dead.message.data.decode() + json.dumps({n: v for n, v in attributes.items() if n not in ours})
    assert card_like_numbers(text) == [] and CARD not in text.replace(" ", "")
    assert json.loads(dead.message.data)["card_last_four"] == "************1111"
    assert (attributes["redacted"], attributes["error"], attributes["trace"]) == (
        "card_number",
        "invalid_message",
        "t-1",
    )
    assert CARD not in payments.output()


def test_the_audit_counts_the_waiting_payments_and_their_oldest_first_publish_time(
    run_script, topics: Topics, first_id: int
) -> None:
    before = datetime.now(UTC)
    topics.publish_json(PAYMENTS, [payment(first_id), payment(first_id + 1)])
    consume_payments(run_script, topics)
    waiting = count_waiting(topics.settings, topics.sub(PAYMENTS_DLQ))
    assert waiting.count == 2
    assert waiting.oldest is not None and before.replace(microsecond=0) <= waiting.oldest <= datetime.now(UTC)


def test_requeue_publishes_dead_orders_back_with_their_original_attributes(
    run_script, topics: Topics, stack_env: dict[str, str]
) -> None:
    topics.publish(ORDERS, b'{"order_id": "not a number"}', {"origin": "shop-7"})
    orders = run_script("order_data_consumer.py", *consumer_args(topics, ORDERS, ORDERS_DLQ, "--exit-after-idle", 3))
    assert orders.wait(120) == 0
    requeue = run_script("-m", "ecom_pipeline.admin", "requeue", topics.sub(ORDERS_DLQ), topics.name(ORDERS))
    assert requeue.wait(60) == 0, requeue.output()
    assert re.findall(r"requeued (\d+) messages", requeue.output()) == ["1"]
    [again] = topics.drain(ORDERS, expected=1)
    assert (again.message.data, dict(again.message.attributes)) == (
        b'{"order_id": "not a number"}',
        {"origin": "shop-7"},
    )
    assert topics.is_empty(ORDERS_DLQ)
