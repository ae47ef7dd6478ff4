"""What a dead letter carries once masked: the pipeline's own attributes as they were, a valid
message still applicable, an invalid message masked whole, and never more than Pub/Sub takes."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import pytest

from ecom_pipeline.app import Kind, _dead_letter_for
from ecom_pipeline.handlers import (
    ATTEMPTS_EXHAUSTED,
    ORDER_NOT_FOUND,
    UNEXPECTED_FAILURE,
    WRITE_REFUSED,
    PaymentHandler,
)
from ecom_pipeline.messages import parse_payment
from ecom_pipeline.policy import (
    DeadLetter,
    dead_letter_attributes,
    redact_dead_letter,
)
from tests.unit.conftest import FakeFactStore, encode, order_dict, payment_dict, received
from tests.unit.test_masking_oracle import json_as_read, visible_card_numbers

FAILED_AT = datetime(2026, 3, 1, 12, 0, 1, 500_000, tzinfo=UTC)
PUBLISHED = datetime(2026, 3, 1, 12, 0, 0, 123_456, tzinfo=UTC)
CARD = "4111111111111111"


def attributes_for(
    original: dict[str, str] | None = None, *, code: str = "invalid_message", **overrides: object
) -> dict[str, str]:
    arguments: dict[str, object] = {
        "code": code,
        "detail": "payment_id: bad",
        "subscription": "projects/p/subscriptions/payments_data-sub",
        "message_id": "1234567890123456",
        "publish_time": PUBLISHED,
        "failed_at": FAILED_AT,
    }
    arguments.update(overrides)
    return dead_letter_attributes(original or {}, **arguments)  # type: ignore[arg-type]


def message_ids(count: int) -> list[str]:
    """Message ids as Pub/Sub assigns them: decimal numbers of 16 or 17 digits."""
    rng = random.Random(22)
    return [str(rng.randrange(10**15, 10**17)) for _ in range(count)]


# --- what is kept, and what is not -------------------------------------------------------------


def test_a_payment_waiting_for_its_order_keeps_its_ids_and_date_and_stays_applicable():
    payment = payment_dict(
        payment_id=int(CARD),
        order_id=5500000000000004,
        payment_method="card 4111 1111 1111 1111",  # masked: the pipeline only ever holds four digits
        payment_datetime="4111-11-11 11:11:11.11",  # a valid date whose digits read as a card
    )
    data = encode(payment)
    masked, attributes = redact_dead_letter(data, attributes_for(code=ORDER_NOT_FOUND), applicable=True)
    applied = parse_payment(masked)
    assert applied == parse_payment(data).model_copy(update={"payment_method": "card **** **** **** 1111"})
    assert attributes["redacted"] == "card_number"


def test_an_invalid_messages_card_like_ids_are_masked():
    data = encode(payment_dict(payment_id=int(CARD), order_id=-5500000000000004, payment_status=""))
    masked, attributes = redact_dead_letter(data, attributes_for(), applicable=False)
    assert json.loads(masked)["payment_id"] == "************1111"
    assert json.loads(masked)["order_id"] == "-************0004"
    assert visible_card_numbers(json_as_read(masked)) == [] and attributes["redacted"] == "card_number"


def test_the_consumer_keeps_the_ids_of_a_waiting_payment_only():
    build = _dead_letter_for(Kind.PAYMENTS)
    waiting = received(encode(payment_dict(payment_id=int(CARD))), message_id="16000000000000001")
    [outcome] = PaymentHandler(FakeFactStore()).handle([waiting])
    assert outcome == DeadLetter(ORDER_NOT_FOUND, "order_id 101 does not exist")
    data, _ = build(waiting, outcome, "payments_data-sub")
    assert data == waiting.data

    invalid = received(encode(payment_dict(payment_id=int(CARD), card_last_four="x")))
    [outcome] = PaymentHandler(FakeFactStore()).handle([invalid])
    assert isinstance(outcome, DeadLetter) and outcome.code == "invalid_message"
    data, attributes = build(invalid, outcome, "payments_data-sub")
    assert json.loads(data)["payment_id"] == "************1111" and attributes["redacted"] == "card_number"


@pytest.mark.parametrize("code", [ORDER_NOT_FOUND, WRITE_REFUSED, ATTEMPTS_EXHAUSTED, UNEXPECTED_FAILURE])
@pytest.mark.parametrize("kind", [Kind.PAYMENTS, Kind.REPLAY, Kind.ORDERS])
def test_a_valid_message_dead_lettered_for_what_happened_to_it_keeps_its_ids(kind, code):
    # The replay applies such a payment later; an operator requeues such an order.
    fields = payment_dict(order_id=int(CARD)) if kind is not Kind.ORDERS else order_dict(customer_id=int(CARD))
    message = received(encode(fields))
    data, _ = _dead_letter_for(kind)(message, DeadLetter(code, "why"), "sub")
    assert data == message.data
