"""Mock orders and payments: reproducible, always valid, and never carrying a card number."""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Iterator
from concurrent import futures

import pytest
from google.api_core import exceptions as google_exceptions

from ecom_pipeline.messages import parse_order, parse_payment
from ecom_pipeline.mockdata import MockData
from ecom_pipeline.producer import ORPHAN_ID_OFFSET, order_messages, payment_messages, publish

# A run of digits, possibly grouped by single spaces or dashes as card numbers are printed.
DIGIT_RUN = re.compile(r"\d(?:[ -]?\d)*")


def take(messages: Iterator[bytes], count: int) -> list[bytes]:
    return list(itertools.islice(messages, count))


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, character in enumerate(reversed(digits)):
        value = int(character)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def card_like_numbers(text: str) -> list[str]:
    """Every 13-19 digit Luhn-valid number in `text` (digits grouped by spaces or dashes count too)."""
    digit_runs = (re.sub(r"[ -]", "", run) for run in DIGIT_RUN.findall(text))
    return [digits for digits in digit_runs if 13 <= len(digits) <= 19 and luhn_valid(digits)]


@pytest.fixture(scope="module")
def payments_json() -> list[str]:
    mock = MockData(seed=2026)
    return [message.decode("utf-8") for message in take(payment_messages(mock, start_id=1, orphan_every=5), 2000)]


# --- the scanner itself, so that the card-number test below can fail ----------------------------


@pytest.mark.parametrize("card", ["4111111111111111", "4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005"])
def test_the_card_number_scanner_finds_a_planted_card(card):
    text = json.dumps({"payment_id": 1, "note": f"paid with {card}"})
    assert card_like_numbers(text)


def test_the_card_number_scanner_ignores_short_and_luhn_invalid_numbers():
    assert card_like_numbers('{"card_last_four": "1111", "n": 4111111111111112}') == []


# --- reproducibility ----------------------------------------------------------------------------


def test_the_same_seed_gives_identical_orders_and_payments():
    first, second = MockData(seed=11), MockData(seed=11)
    assert take(order_messages(first, 1), 50) == take(order_messages(second, 1), 50)
    assert take(payment_messages(first, 1, 5), 50) == take(payment_messages(second, 1, 5), 50)


def test_different_seeds_give_different_messages():
    assert take(order_messages(MockData(seed=1), 1), 20) != take(order_messages(MockData(seed=2), 1), 20)


# --- validity -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [3, None], ids=["seeded", "unseeded"])
def test_every_generated_order_passes_validation(seed):
    for index, data in enumerate(take(order_messages(MockData(seed=seed), start_id=1), 1000)):
        assert parse_order(data).order_id == 1 + index


@pytest.mark.parametrize("seed", [3, None], ids=["seeded", "unseeded"])
def test_every_generated_payment_passes_validation(seed):
    for index, data in enumerate(take(payment_messages(MockData(seed=seed), start_id=1, orphan_every=5), 1000)):
        assert parse_payment(data).payment_id == 1 + index


def test_generated_orders_vary():
    orders = [json.loads(data) for data in take(order_messages(MockData(seed=5), 1), 200)]
    for field in ("customer_id", "item", "quantity", "price", "shipping_address", "order_status", "creation_date"):
        assert len({order[field] for order in orders}) > 1, field


# --- card data ----------------------------------------------------------------------------------


def test_card_last_four_is_always_four_digits(payments_json):
    for text in payments_json:
        assert re.fullmatch(r"[0-9]{4}", json.loads(text)["card_last_four"])


def test_no_payment_carries_a_card_number(payments_json):
    offenders = {text: numbers for text in payments_json if (numbers := card_like_numbers(text))}
    assert offenders == {}


def test_payments_carry_no_other_card_field(payments_json):
    assert {key for text in payments_json for key in json.loads(text)} == {
        "payment_id",
        "order_id",
        "payment_method",
        "card_last_four",
        "payment_status",
        "payment_datetime",
    }


# --- orphans ------------------------------------------------------------------------------------


def test_every_fifth_payment_pays_an_order_not_made_yet():
    start = 1000
    payments = [json.loads(data) for data in take(payment_messages(MockData(seed=8), start, orphan_every=5), 25)]
    for k, payment in enumerate(payments):
        assert payment["payment_id"] == start + k
        expected = start + k + ORPHAN_ID_OFFSET if (k + 1) % 5 == 0 else start + k
        assert payment["order_id"] == expected, k
    assert sum(payment["order_id"] > ORPHAN_ID_OFFSET for payment in payments) == 5


def test_without_orphans_every_payment_pays_its_own_order():
    payments = [json.loads(data) for data in take(payment_messages(MockData(seed=8), 1, orphan_every=0), 30)]
    assert [payment["order_id"] for payment in payments] == list(range(1, 31))


def test_orphan_ids_fit_a_bigint_and_are_valid_ids():
    mock = MockData(seed=9)
    for data in take(payment_messages(mock, start_id=2**62, orphan_every=1), 3):
        assert parse_payment(data).order_id > ORPHAN_ID_OFFSET


@pytest.mark.parametrize("seed", range(20))
def test_no_message_of_either_producer_carries_a_card_number_whatever_the_seed(seed):
    mock = MockData(seed=seed)
    texts = [m.decode() for m in take(payment_messages(mock, start_id=1, orphan_every=5), 200)]
    texts += [m.decode() for m in take(order_messages(mock, 1), 200)]
    assert [numbers for text in texts if (numbers := card_like_numbers(text))] == []


class RefusingPublisher:
    """The batching client's publish and stop, for a topic that does not exist: every future
    fails with NotFound (as the client's do, on its own threads)."""

    def __init__(self) -> None:
        self.published = 0

    def publish(self, topic: str, data: bytes) -> futures.Future[str]:
        self.published += 1
        future: futures.Future[str] = futures.Future()
        future.set_exception(google_exceptions.NotFound(f"Topic not found: {topic}"))
        return future

    def stop(self) -> None:
        pass


def test_a_producer_stops_at_the_first_refusal_that_retrying_cannot_change():
    publisher = RefusingPublisher()
    stats = publish(
        publisher,
        "projects/p/topics/missing",
        order_messages(MockData(1), 1),
        count=None,  # before: every message failed, for ever, until Ctrl-C
        rate=0,
        stop=threading.Event(),
    )
    assert publisher.published == 1 and stats.failed == 1
    assert isinstance(stats.fatal, google_exceptions.NotFound)
