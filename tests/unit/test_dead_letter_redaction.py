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
    MAX_ATTRIBUTES,
    MAX_MESSAGE_BYTES,
    DeadLetter,
    dead_letter_attributes,
    redact_dead_letter,
)
from tests.unit.conftest import FakeFactStore, encode, order_dict, payment_dict, received
from tests.unit.test_masking_oracle import json_as_read, visible_card_numbers
from tests.unit.test_mockdata import luhn_valid

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
    data, attributes = build(waiting, outcome, "payments_data-sub")
    assert data == waiting.data and attributes["source_message_id"] == "16000000000000001"

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
    data, attributes = _dead_letter_for(kind)(message, DeadLetter(code, "why"), "sub")
    assert data == message.data and "redacted" not in attributes


# --- the pipeline's own attributes --------------------------------------------------------------


@pytest.mark.parametrize("from_dead_letters", [False, True])
def test_the_source_message_id_is_never_masked(from_dead_letters):
    ids = message_ids(2000)
    assert sum(luhn_valid(i[s : s + n]) for i in ids for n in (13, 16) for s in range(len(i) - n + 1)) > 1000
    ids += [CARD, "41111111111111110"]  # as Luhn-valid as an id gets
    for message_id in ids:
        attributes = attributes_for(message_id=message_id, from_dead_letters=from_dead_letters)
        _, redacted = redact_dead_letter(b"not json", attributes, applicable=False)
        assert redacted["source_message_id"] == message_id


def test_the_pipelines_and_pub_subs_attributes_are_never_masked():
    timestamp = "4111-11-11 11:11:11.111111+00:00"  # 24 digits apart by at most three separators
    original = {
        "CloudPubSubDeadLetterSourceDeliveryCount": "5",
        "CloudPubSubDeadLetterSourceSubscription": "payments-4111111111111111",
        "CloudPubSubDeadLetterSourceSubscriptionProject": "p-4111111111111111",
        "CloudPubSubDeadLetterSourceTopicPublishTime": timestamp,
        "dropped_attributes": "3",  # counts the replay keeps from the first dead-lettering
        "truncated": "12000000",
        "redacted": "card_number",
    }
    attributes = attributes_for(
        original,
        subscription="projects/p/subscriptions/sub-4111111111111111",
        publish_time=datetime(4111, 11, 11, 11, 11, 11, 111_111, tzinfo=UTC),
        from_dead_letters=True,
    )
    _, redacted = redact_dead_letter(b"4111 1111 1111 1111", attributes, applicable=False)
    ours = {name: value for name, value in attributes.items() if name != "error_detail"}
    assert {name: redacted[name] for name in ours} == ours
    assert redacted["source_publish_time"] == "4111-11-11T11:11:11.111111+00:00"


def test_the_error_detail_and_the_original_attributes_are_masked():
    original = {
        "note": "4111.1111.1111.1111",
        CARD: "a card as a name",
        "dropped_attributes": CARD,  # our names, not our values: the publisher's
        "redacted": CARD,
        "CloudPubSubDeadLetterSourceNote": CARD,  # not a name Pub/Sub writes
    }
    detail = f"payment_method: {CARD[:8]} {CARD[8:]} is too long"
    attributes = attributes_for(original, detail=detail, from_dead_letters=True)  # where Pub/Sub's names are kept
    _, redacted = redact_dead_letter(b"{}", attributes, applicable=False)
    assert redacted["error_detail"] == "payment_method: ******** ****1111 is too long"
    assert redacted["note"] == "****.****.****.1111"
    assert redacted["************1111"] == "a card as a name" and CARD not in redacted
    assert redacted["dropped_attributes"] == redacted["CloudPubSubDeadLetterSourceNote"] == "************1111"
    assert redacted["redacted"] == "card_number"
    theirs = {name: value for name, value in redacted.items() if name != "source_message_id"}  # Luhn-valid
    assert [text for pair in theirs.items() for text in pair if visible_card_numbers(text)] == []


# --- the size cap -------------------------------------------------------------------------------


def dead_letter_size(data: bytes, attributes: dict[str, str]) -> int:
    return len(data) + sum(len(n.encode()) + len(v.encode()) for n, v in attributes.items())


def test_a_dead_letter_that_fits_is_left_whole():
    data = b"x" * (MAX_MESSAGE_BYTES // 2)
    masked, attributes = redact_dead_letter(data, attributes_for(), applicable=False)
    assert masked == data and "truncated" not in attributes


def test_a_masked_dead_letter_too_large_for_pub_sub_is_cut_to_fit_and_says_so():
    # A masked number takes two more bytes (a JSON number becomes a string): the masked data
    # grows past Pub/Sub's limit though the original fitted. (An array of numbers reads as one
    # long number: masked whole but for its last four digits.)
    count = MAX_MESSAGE_BYTES // 17 - 10
    data = ("[" + ",".join(["4111111111111111"] * count) + "]").encode()
    assert len(data) < MAX_MESSAGE_BYTES
    masked, attributes = redact_dead_letter(data, attributes_for(), applicable=False)
    whole = ("[" + '"****************",' * (count - 1) + '"************1111"]').encode()
    assert attributes["truncated"] == str(len(whole)) and attributes["redacted"] == "card_number"
    assert whole.startswith(masked) and dead_letter_size(masked, attributes) > MAX_MESSAGE_BYTES - 20_000
    assert dead_letter_size(masked, attributes) <= MAX_MESSAGE_BYTES - 16_384
    assert attributes["source_message_id"] == "1234567890123456"


def test_a_dead_letter_is_cut_on_a_character_boundary_and_keeps_within_the_attribute_limit():
    data = "é".encode() * (MAX_MESSAGE_BYTES // 2)  # two bytes a character
    original = {f"a{i:03}": "v" for i in range(100)}  # Pub/Sub's maximum on the source message
    masked, attributes = redact_dead_letter(b"x" + data, attributes_for(original), applicable=False)
    assert masked.decode("utf-8")  # whole characters
    assert len(attributes) <= MAX_ATTRIBUTES and attributes["truncated"] == str(len(data) + 1)
    kept = [name for name in attributes if name.startswith("a")]
    assert kept == [f"a{i:03}" for i in range(len(kept))]
    assert attributes["dropped_attributes"] == str(100 - len(kept))  # with those dropped first
    assert dead_letter_size(masked, attributes) <= MAX_MESSAGE_BYTES - 16_384
