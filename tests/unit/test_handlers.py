"""The handlers' decisions, one outcome per message in batch order, against an in-memory store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ecom_pipeline.errors import StoreError, TransientStoreError
from ecom_pipeline.handlers import ORDER_NOT_FOUND, REASONS, WRITE_REFUSED, OrderHandler, PaymentHandler, ReplayHandler
from ecom_pipeline.policy import REPLAY_MAX_DELAY, Applied, DeadLetter, Defer, Outcome, Retry
from ecom_pipeline.pubsub_io import Received
from tests.unit.conftest import PUBLISH_TIME, FakeFactStore, encode, order_dict, payment_dict, received

NOW = datetime(2026, 3, 1, 13, 0, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def dead(outcome: Outcome) -> DeadLetter:
    """The outcome, which must be a dead letter."""
    assert isinstance(outcome, DeadLetter), outcome
    return outcome


def order_message(order_id: int, **kwargs: Any) -> Received:
    kwargs.setdefault("message_id", str(4_000_000_000_000_000 + order_id))  # real ids: 16-17 digits
    return received(encode(order_dict(order_id=order_id)), **kwargs)


def payment_message(payment_id: int, order_id: int, **kwargs: Any) -> Received:
    data = encode(payment_dict(payment_id=payment_id, order_id=order_id))
    kwargs.setdefault("message_id", str(5_000_000_000_000_000 + payment_id))
    return received(data, **kwargs)


def version_time(moment: datetime, message_id: str) -> int:
    """docs/guarantees.md's rule for the write time, written apart from the code: the millisecond of
    the first publish time, in microseconds, plus the decimal message id modulo 1,000."""
    return (moment - EPOCH) // timedelta(milliseconds=1) * 1000 + int(message_id) % 1000


# --- OrderHandler -------------------------------------------------------------------------------


def test_order_handler_applies_a_valid_order_with_its_values_and_publish_time():
    store = FakeFactStore()
    message = order_message(1)
    outcomes = OrderHandler(store).handle([message])
    assert outcomes == [Applied()]
    # Independent of the code under test: the message's own values, in the table's column order.
    expected_values = (
        1,
        2002,
        "blue running shoes",
        3,
        59.99,
        "1 Main Street, Springfield",
        "confirmed",
        "2026-03-01T11:59:58.123+00:00",
    )
    assert store.inserted == [(expected_values, version_time(PUBLISH_TIME, message.message_id))]


def test_order_handler_dead_letters_bytes_that_are_not_utf8_without_writing():
    store = FakeFactStore()
    outcomes = OrderHandler(store).handle([received(b"\xff\xfe\x00")])
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], DeadLetter)
    assert dead(outcomes[0]).code == "invalid_encoding"
    assert store.inserted == []


def test_order_handler_keeps_batch_order_across_valid_and_invalid_messages():
    batch = [
        order_message(1),
        received(b"\x80not utf-8", message_id="bad-bytes"),
        order_message(2),
        received(b'{"order_id": 3', message_id="truncated"),
        received(encode(order_dict(order_id=4, price=-1)), message_id="negative-price"),
        order_message(5),
    ]
    store = FakeFactStore()
    outcomes = OrderHandler(store).handle(batch)
    assert [type(o).__name__ for o in outcomes] == [
        "Applied",
        "DeadLetter",
        "Applied",
        "DeadLetter",
        "DeadLetter",
        "Applied",
    ]
    assert [o.code for o in outcomes if isinstance(o, DeadLetter)] == [
        "invalid_encoding",
        "invalid_json",
        "invalid_message",
    ]
    assert "price" in dead(outcomes[4]).detail
    assert [values[0] for values, _ in store.inserted] == [1, 2, 5]


def test_order_handler_retries_an_order_the_store_could_not_reach():
    store = FakeFactStore(insert_errors={2: TransientStoreError("WriteTimeout: 1 of 1 replicas")})
    outcomes = OrderHandler(store).handle([order_message(1), order_message(2), order_message(3)])
    assert outcomes[0] == Applied()
    assert isinstance(outcomes[1], Retry)
    assert "WriteTimeout" in outcomes[1].reason
    assert outcomes[2] == Applied()


def test_order_handler_dead_letters_an_order_the_store_refused_for_good():
    store = FakeFactStore(insert_errors={1: StoreError("InvalidRequest: bad column")})
    outcomes = OrderHandler(store).handle([order_message(1), order_message(2)])
    assert outcomes == [DeadLetter(WRITE_REFUSED, "InvalidRequest: bad column"), Applied()]


@pytest.mark.parametrize("claimed", [PUBLISH_TIME - timedelta(hours=1), datetime(2999, 1, 1, tzinfo=UTC)])
def test_order_handler_ignores_a_publish_time_claimed_in_the_attributes(claimed):
    message = order_message(1, attributes={"source_publish_time": claimed.isoformat()})
    store = FakeFactStore()
    OrderHandler(store).handle([message])
    assert store.inserted[0][1] == version_time(PUBLISH_TIME, message.message_id)


def test_order_handler_returns_nothing_for_an_empty_batch():
    assert OrderHandler(FakeFactStore()).handle([]) == []


def test_order_handler_of_only_invalid_messages_returns_only_dead_letters():
    outcomes = OrderHandler(FakeFactStore()).handle([received(b"[]"), received(b"")])
    assert [dead(o).code for o in outcomes] == ["invalid_message", "invalid_json"]


# --- PaymentHandler -----------------------------------------------------------------------------


def test_payment_handler_applies_a_payment_whose_order_exists():
    store = FakeFactStore(existing={101})
    message = payment_message(7, 101)
    outcomes = PaymentHandler(store).handle([message])
    assert outcomes == [Applied()]
    expected = (7, "credit_card", "0042", "completed", "2026-03-01T12:00:00.000+00:00")
    assert store.updated == [(101, expected, version_time(PUBLISH_TIME, message.message_id))]


def test_payment_handler_dead_letters_a_payment_without_its_order_and_never_updates_it():
    store = FakeFactStore(existing={101})
    outcomes = PaymentHandler(store).handle([payment_message(7, 999), payment_message(8, 101)])
    assert outcomes[0] == DeadLetter("order_not_found", "order_id 999 does not exist")
    assert outcomes[1] == Applied()
    assert [order_id for order_id, _, _ in store.updated] == [101]


def test_payment_handler_retries_when_the_order_lookup_fails_transiently():
    store = FakeFactStore(existing={101, 102}, lookup_errors={101: TransientStoreError("ReadTimeout")})
    outcomes = PaymentHandler(store).handle([payment_message(7, 101), payment_message(8, 102)])
    assert isinstance(outcomes[0], Retry)
    assert outcomes[1] == Applied()
    assert [order_id for order_id, _, _ in store.updated] == [102]


def test_payment_handler_fails_when_the_order_lookup_is_refused():
    store = FakeFactStore(existing={101}, lookup_errors={101: StoreError("Unauthorized")})
    outcomes = PaymentHandler(store).handle([payment_message(7, 101)])
    assert outcomes == [DeadLetter(WRITE_REFUSED, "Unauthorized")]
    assert store.updated == []


def test_payment_handler_maps_update_errors_to_retry_and_fail():
    store = FakeFactStore(
        existing={1, 2, 3},
        update_errors={1: TransientStoreError("Unavailable"), 3: StoreError("InvalidRequest")},
    )
    outcomes = PaymentHandler(store).handle([payment_message(11, 1), payment_message(12, 2), payment_message(13, 3)])
    assert outcomes == [Retry("Unavailable"), Applied(), DeadLetter(WRITE_REFUSED, "InvalidRequest")]


def test_payment_handler_dead_letters_invalid_payments_without_asking_the_store():
    store = FakeFactStore(existing={101})
    card_number = encode(payment_dict(card_last_four="4111111111111111"))
    outcomes = PaymentHandler(store).handle([received(card_number), received(b"\xc3\x28")])
    assert [dead(o).code for o in outcomes] == ["invalid_message", "invalid_encoding"]
    assert "card_last_four" in dead(outcomes[0]).detail
    assert store.lookups == []
    assert store.updated == []


def test_payment_handler_keeps_batch_order_in_a_mixed_batch():
    store = FakeFactStore(existing={1, 3}, lookup_errors={4: TransientStoreError("timeout")})
    batch = [
        payment_message(10, 1),
        received(b"not json"),
        payment_message(12, 2),
        payment_message(13, 3),
        payment_message(14, 4),
    ]
    outcomes = PaymentHandler(store).handle(batch)
    assert [type(o).__name__ for o in outcomes] == ["Applied", "DeadLetter", "DeadLetter", "Applied", "Retry"]
    assert [o.code for o in outcomes if isinstance(o, DeadLetter)] == ["invalid_json", ORDER_NOT_FOUND]
    assert [order_id for order_id, _, _ in store.updated] == [1, 3]


def test_payment_handler_looks_up_each_valid_payments_order():
    store = FakeFactStore(existing={1})
    PaymentHandler(store).handle([payment_message(10, 1), payment_message(11, 2)])
    assert sorted(store.lookups[0]) == [1, 2]


def test_of_two_payments_for_one_order_in_a_batch_only_the_newer_is_written_and_both_settle_with_it():
    # Same publish time (one Publish request): the greater id modulo 1,000 is the newer.
    store = FakeFactStore(existing={5})
    newer, older = (
        payment_message(2, 5, message_id="1000000000000999"),
        payment_message(1, 5, message_id="1000000000000998"),
    )
    outcomes = PaymentHandler(store).handle([newer, older])
    assert outcomes == [Applied(), Applied()]
    assert [values[0] for _, values, _ in store.updated] == [2]


def test_of_two_orders_in_a_batch_the_later_published_is_written_whatever_their_ids():
    store = FakeFactStore()
    later = order_message(5, message_id="7000", publish_time=PUBLISH_TIME + timedelta(milliseconds=1))
    earlier = order_message(5, message_id="6999")
    assert OrderHandler(store).handle([later, earlier]) == [Applied(), Applied()]
    assert [timestamp for _, timestamp in store.inserted] == [version_time(later.publish_time, "7000")]


def test_the_older_version_shares_the_newer_ones_retry():
    store = FakeFactStore(insert_errors={5: TransientStoreError("WriteTimeout")})
    outcomes = OrderHandler(store).handle([order_message(5, message_id="11"), order_message(5, message_id="12")])
    assert [type(o) for o in outcomes] == [Retry, Retry]
    assert [timestamp % 1000 for _, timestamp in store.inserted] == [12]  # one write: the newer


# --- ReplayHandler ------------------------------------------------------------------------------


def test_replay_handler_applies_a_dead_letter_whose_order_now_exists():
    store = FakeFactStore(existing={101})
    assert ReplayHandler(store, now=lambda: NOW).handle([payment_message(1, 101)]) == [Applied()]
    assert [values[0] for _, values, _ in store.updated] == [1]


@pytest.mark.parametrize(
    ("age", "delay"),
    [(0, 5), (10, 5), (12.4, 5), (20, 8), (30, 12), (37.5, 15), (100, 40), (1500, 600), (86_400, 600)],
)
def test_replay_handler_defers_a_missing_order_by_40_percent_of_the_dead_letters_age(age, delay):
    first = NOW - timedelta(seconds=age)
    message = payment_message(7, 555, publish_time=first)
    assert ReplayHandler(FakeFactStore(), now=lambda: NOW).handle([message]) == [Defer(seconds=delay)]


def test_replay_handler_measures_the_age_from_the_first_publish_time():
    first = NOW - timedelta(seconds=100)
    message = payment_message(7, 555, publish_time=NOW, attributes={"source_publish_time": first.isoformat()})
    assert ReplayHandler(FakeFactStore(), now=lambda: NOW).handle([message]) == [Defer(seconds=40)]


def test_replay_handler_looks_at_an_invalid_dead_letter_only_once_per_longest_deferral():
    store = FakeFactStore()
    outcomes = ReplayHandler(store, now=lambda: NOW).handle([received(b"{}", publish_time=NOW)])
    assert outcomes == [Defer(seconds=600)]
    assert store.updated == []


def test_replay_handler_defers_an_unexpected_failure_instead_of_nacking_it_into_a_hot_loop():
    store = FakeFactStore(existing={101}, update_errors={101: StoreError("InvalidRequest: odd")})
    message = payment_message(7, 101, publish_time=NOW - timedelta(seconds=50))
    assert ReplayHandler(store, now=lambda: NOW).handle([message]) == [Defer(seconds=20)]


def test_replay_handler_retries_a_transient_failure_in_place():
    store = FakeFactStore(existing={101}, update_errors={101: TransientStoreError("timeout")})
    outcomes = ReplayHandler(store, now=lambda: NOW).handle([payment_message(7, 101)])
    assert outcomes == [Retry("timeout")]


def test_replay_handler_republishes_a_dead_letter_about_to_outlive_the_retention():
    old = NOW - timedelta(days=6, seconds=1)
    missing = payment_message(7, 555, publish_time=old, attributes={"error": ORDER_NOT_FOUND})
    failing = payment_message(8, 101, publish_time=old)
    store = FakeFactStore(existing={101}, update_errors={101: StoreError("InvalidRequest: odd")})
    outcomes = ReplayHandler(store, now=lambda: NOW).handle([missing, failing])
    assert outcomes == [
        DeadLetter(ORDER_NOT_FOUND, "order_id 555 does not exist"),
        DeadLetter("unexpected_failure", "InvalidRequest: odd"),
    ]


def test_replay_handler_defers_a_renewed_dead_letter_instead_of_renewing_it_again():
    # The copy the renewal published: its own publish time is new, its first publish time is kept.
    # Retention counts from the copy's publish time, so it has 7 days again, not none.
    first = NOW - timedelta(days=6, seconds=1)
    copy = payment_message(
        7, 555, publish_time=NOW, attributes={"error": ORDER_NOT_FOUND, "source_publish_time": first.isoformat()}
    )
    assert ReplayHandler(FakeFactStore(), now=lambda: NOW).handle([copy]) == [Defer(seconds=600)]


def test_replay_handler_ignores_a_first_publish_time_outside_the_calendar_in_utc():
    # A publisher's attribute: valid ISO-8601, but a year 0 in UTC. Neither a crash (which nacks the
    # whole batch, again and again) nor a write time from it: the dead letter's own publish time.
    store = FakeFactStore(existing={101})
    message = payment_message(7, 101, attributes={"source_publish_time": "0001-01-01T00:00:00+14:00"})
    assert ReplayHandler(store, now=lambda: NOW).handle([message]) == [Applied()]
    assert store.updated[0][2] == version_time(PUBLISH_TIME, message.message_id)


@pytest.mark.parametrize(
    "claimed",
    [PUBLISH_TIME - timedelta(days=91), datetime(1, 1, 1, tzinfo=UTC), PUBLISH_TIME + timedelta(milliseconds=1)],
)
def test_replay_handler_refuses_a_first_publish_time_out_of_bounds_and_leaves_it_for_a_person(claimed):
    # Written with it, an ancient time makes the write a silent no-op, and a time after the dead
    # letter's own publish time (which no first publish can be) could hide a newer payment.
    store = FakeFactStore(existing={101})
    message = payment_message(7, 101, attributes={"source_publish_time": claimed.isoformat()})
    assert ReplayHandler(store, now=lambda: NOW).handle([message]) == [Defer(REPLAY_MAX_DELAY)]
    assert store.updated == []


@pytest.mark.parametrize(("claimed", "code"), [("invalid_json", "invalid_json"), ("x" * 1000, "unexpected_failure")])
def test_a_renewal_keeps_a_known_reason_and_no_reason_a_publisher_made_up(claimed, code):
    # The reason becomes a metric label: whoever publishes to the dead-letter topic must not be
    # able to create a series per message.
    old = NOW - timedelta(days=6, seconds=1)
    store = FakeFactStore(existing={101}, update_errors={101: StoreError("InvalidRequest: odd")})
    message = payment_message(8, 101, publish_time=old, attributes={"error": claimed})
    assert ReplayHandler(store, now=lambda: NOW).handle([message]) == [DeadLetter(code, "InvalidRequest: odd")]


def test_every_reason_the_handlers_give_is_a_known_one():
    store = FakeFactStore(existing={101}, insert_errors={5: StoreError("InvalidRequest")})
    batch = [received(data) for data in (b"\xff", b"{", b"[]", b"{}")] + [payment_message(1, 999)]
    outcomes = PaymentHandler(store).handle(batch) + OrderHandler(store).handle([*batch[:4], order_message(5)])
    # The other two are given by the consumer (attempts) and the replay (renewals).
    assert {dead(o).code for o in outcomes} == set(REASONS) - {"unexpected_failure", "delivery_attempts_exhausted"}


def test_replay_handler_writes_a_replayed_payment_with_its_first_publish_time():
    first = PUBLISH_TIME - timedelta(days=1)
    store = FakeFactStore(existing={101})
    message = payment_message(7, 101, attributes={"source_publish_time": first.isoformat()})
    ReplayHandler(store, now=lambda: NOW).handle([message])
    assert store.updated[0][2] == version_time(first, message.message_id)


def test_replay_handler_writes_a_replayed_payment_as_its_source_message_would_have_been():
    first = PUBLISH_TIME - timedelta(hours=2)
    store = FakeFactStore(existing={101})
    attributes = {"source_publish_time": first.isoformat(), "source_message_id": "4000000000000321"}
    ReplayHandler(store, now=lambda: NOW).handle([payment_message(7, 101, attributes=attributes)])
    assert store.updated[0][2] == version_time(first, "4000000000000321")
