"""The four scripts as real processes against the real services: every path of issue 3."""

from __future__ import annotations

import json
import re
import signal
from datetime import datetime, timedelta
from typing import Any

from cassandra.cluster import Session

from ecom_pipeline.producer import ORPHAN_ID_OFFSET
from ecom_pipeline.redaction import mask_message

from .conftest import Topics, consumer_args, final_counts, wait_for

ORDERS, PAYMENTS, ORDERS_DLQ, PAYMENTS_DLQ = "orders_data", "payments_data", "dlq_orders_data", "dlq_payments_data"
DEAD_LETTER_ATTRIBUTES = {"error", "error_detail", "source_subscription", "source_message_id", "failed_at"}


def order(order_id: int, **changes: object) -> dict[str, object]:
    return {
        "order_id": order_id,
        "customer_id": 7,
        "item": "desk lamp",
        "quantity": 2,
        "price": 19.5,
        "shipping_address": "1 Main St",
        "order_status": "pending",
        "creation_date": "2026-11-25T10:00:00Z",
        **changes,
    }


def payment(order_id: int, **changes: object) -> dict[str, object]:
    return {
        "payment_id": order_id + 5,
        "order_id": order_id,
        "payment_method": "credit_card",
        "card_last_four": "4242",
        "payment_status": "completed",
        "payment_datetime": "2026-11-25T10:01:00+00:00",
        **changes,
    }


def rows_in(cql: Session, first_id: int, count: int) -> dict[int, Any]:
    ids = list(range(first_id, first_id + count))
    rows = cql.execute(f"SELECT * FROM orders_payments_facts WHERE order_id IN ({','.join(map(str, ids))})")
    return {row.order_id: row for row in rows}


def drain_orders_then_payments(run_script, topics: Topics) -> tuple[str, str]:
    orders = run_script("order_data_consumer.py", *consumer_args(topics, ORDERS, ORDERS_DLQ, "--exit-after-idle", 3))
    assert orders.wait(120) == 0, orders.output()
    payments = run_script(
        "ingest_in_fact_table.py", *consumer_args(topics, PAYMENTS, PAYMENTS_DLQ, "--exit-after-idle", 3)
    )
    assert payments.wait(120) == 0, payments.output()
    return orders.output(), payments.output()


def test_producers_and_consumers_insert_update_and_dead_letter_orphans(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    for script, topic in (("order_data_producer.py", ORDERS), ("payments_data_producer.py", PAYMENTS)):
        producer = run_script(
            script, "--topic", topics.name(topic), "--count", 200, "--rate", 0, "--seed", 3, "--start-id", first_id
        )
        assert producer.wait(120) == 0, producer.output()
        assert {k: final_counts(producer.output())[k] for k in ("published", "failed")} == {
            "published": 200,
            "failed": 0,
        }

    orders_log, payments_log = drain_orders_then_payments(run_script, topics)

    rows = rows_in(cql, first_id, 200)
    assert len(rows) == 200
    paid = {order_id for order_id, row in rows.items() if row.payment_id is not None}
    assert len(paid) == 160  # every 5th payment pays an order that does not exist yet
    assert all(row.card_last_four.isdigit() and len(row.card_last_four) == 4 for row in rows.values() if row.payment_id)
    orphans = topics.drain(PAYMENTS_DLQ, expected=40)
    assert all(m.message.attributes["error"] == "order_not_found" for m in orphans)
    assert {json.loads(m.message.data)["order_id"] - ORPHAN_ID_OFFSET for m in orphans} == set(rows) - paid
    assert final_counts(orders_log)["applied"] == 200
    payment_counts = final_counts(payments_log)
    assert (payment_counts["applied"], payment_counts["order_not_found"]) == (160, 40)


def as_dead_lettered(data: bytes) -> bytes:
    # An invalid message keeps nothing unmasked: its ids (this test's are 14 digits, Luhn-valid
    # one time in four) are masked too when they read as a card number (test_redaction.py).
    return mask_message(data)[0]


def fields_named(detail: str) -> list[str]:
    """The fields an `invalid_message` detail names: `field: what is wrong`, joined by `; `."""
    return [part.partition(": ")[0] for part in detail.split("; ")]


def test_invalid_messages_go_to_their_dead_letter_topic_intact_with_reason(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    # Each message: its `error`, and the one field its `error_detail` must name (None: not a
    # JSON object, so no field to name).
    bad_orders = {
        b"\xff\xfe not utf-8": ("invalid_encoding", None),
        b'{"order_id": 1, "customer_id":': ("invalid_json", None),
        b"[1, 2, 3]": ("invalid_message", None),
        json.dumps(order(first_id, price="12.50")).encode(): ("invalid_message", "price"),
        json.dumps({k: v for k, v in order(first_id + 1).items() if k != "item"}).encode(): ("invalid_message", "item"),
        json.dumps(order(first_id + 2, quantity=0)).encode(): ("invalid_message", "quantity"),
        json.dumps(order(first_id + 3, creation_date="yesterday")).encode(): ("invalid_message", "creation_date"),
    }
    bad_payments = {
        b"": ("invalid_json", None),
        b'"just a string"': ("invalid_message", None),
        json.dumps(payment(first_id, card_last_four="4111111111111111")).encode(): (
            "invalid_message",
            "card_last_four",
        ),
        json.dumps(payment(first_id, payment_id=True)).encode(): ("invalid_message", "payment_id"),
    }
    for topic, messages in ((ORDERS, bad_orders), (PAYMENTS, bad_payments)):
        for data in messages:
            topics.publish(topic, data, {"origin": "test-suite"})
    topics.publish_json(ORDERS, [order(first_id + 9)])  # the consumer carries on after bad input

    drain_orders_then_payments(run_script, topics)

    for topic, messages in ((ORDERS_DLQ, bad_orders), (PAYMENTS_DLQ, bad_payments)):
        # The original bytes, unchanged, but for a card number: masked, and the JSON written out
        # compact (see test_dead_letters.py and test_redaction.py).
        as_dead = {as_dead_lettered(data): data for data in messages}
        dead = {as_dead[m.message.data]: m.message for m in topics.drain(topic, expected=len(messages))}
        assert set(dead) == set(messages)
        for data, (code, field) in messages.items():
            attributes = dict(dead[data].attributes)
            assert attributes["error"] == code, attributes
            assert set(attributes) >= DEAD_LETTER_ATTRIBUTES
            assert attributes["origin"] == "test-suite"  # original attributes are kept
            assert attributes["source_subscription"] == topics.sub(ORDERS if topic == ORDERS_DLQ else PAYMENTS)
            assert datetime.fromisoformat(attributes["failed_at"]).utcoffset() == timedelta(0)
            if field is not None:
                assert fields_named(attributes["error_detail"]) == [field], attributes["error_detail"]
            elif code == "invalid_message":
                assert attributes["error_detail"] == "expected a JSON object"
    assert set(rows_in(cql, first_id, 10)) == {first_id + 9}


def test_text_with_quotes_cql_keywords_and_emoji_is_stored_verbatim(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    tricky = {
        "item": 'O\'Reilly "Learning CQL"; DROP TABLE orders_payments_facts; --',
        "shipping_address": "  Straße 5, 東京 🚚\n2nd line\t",
        "order_status": "SELECT * FROM x WHERE y = 'z'",
    }
    topics.publish_json(ORDERS, [order(first_id, **tricky)])
    topics.publish_json(PAYMENTS, [payment(first_id, payment_method="💳 card", payment_datetime="2026-11-25")])
    drain_orders_then_payments(run_script, topics)
    row = rows_in(cql, first_id, 1)[first_id]
    assert {key: getattr(row, key) for key in tricky} == tricky
    assert (row.payment_method, row.payment_datetime) == ("💳 card", "2026-11-25")


def test_duplicate_order_after_payment_keeps_the_payment(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    topics.publish_json(ORDERS, [order(first_id)])
    topics.publish_json(PAYMENTS, [payment(first_id)])
    drain_orders_then_payments(run_script, topics)
    topics.publish_json(ORDERS, [order(first_id, order_status="shipped")])  # a newer version of the order
    drain_orders_then_payments(run_script, topics)
    row = rows_in(cql, first_id, 1)[first_id]
    assert (row.order_status, row.payment_id, row.card_last_four) == ("shipped", first_id + 5, "4242")


def test_sigterm_stops_a_consumer_cleanly_with_a_summary(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    consumer = run_script("order_data_consumer.py", *consumer_args(topics, ORDERS, ORDERS_DLQ))
    topics.publish_json(ORDERS, [order(first_id + i) for i in range(50)])
    wait_for(lambda: len(rows_in(cql, first_id, 50)) == 50, 60, "50 rows")
    consumer.stop(signal.SIGTERM)
    assert consumer.wait(30) == 0
    assert "SIGTERM received" in consumer.output()
    counts = final_counts(consumer.output())
    assert (counts["received"], counts["applied"]) == (50, 50)


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def test_no_card_number_reaches_the_table_or_the_logs(run_script, topics: Topics, cql: Session, first_id: int) -> None:
    for script, topic in (("order_data_producer.py", ORDERS), ("payments_data_producer.py", PAYMENTS)):
        producer = run_script(
            script,
            "--topic",
            topics.name(topic),
            "--count",
            500,
            "--rate",
            0,
            "--start-id",
            first_id,
            "--log-level",
            "DEBUG",
        )
        assert producer.wait(120) == 0
    logs = "".join(drain_orders_then_payments(run_script, topics))
    rows = rows_in(cql, first_id, 500)
    assert len(rows) == 500
    text = logs + "".join(repr(tuple(row)) for row in rows.values())
    candidates = re.findall(r"(?<!\d)\d{13,19}(?!\d)", text)
    # This test's order and payment ids are 14-digit numbers by construction; all else is suspect.
    known_ids = {first_id + k for k in range(500)} | {first_id + k + ORPHAN_ID_OFFSET for k in range(500)}
    suspects = [c for c in candidates if int(c) not in known_ids]
    assert [c for c in suspects if luhn_valid(c)] == []
