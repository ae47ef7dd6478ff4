"""Parsing and validating order and payment messages: what is accepted, kept, and rejected (and why)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from ecom_pipeline.errors import InvalidMessage
from ecom_pipeline.messages import (
    BIGINT_MAX,
    MAX_LABEL_LENGTH,
    MAX_TEXT_LENGTH,
    ORDER_COLUMNS,
    PAYMENT_COLUMNS,
    Order,
    Payment,
    order_values,
    parse_order,
    parse_payment,
    payment_values,
)
from tests.unit.conftest import encode, order_dict, payment_dict

ORDER_TEXT_FIELDS = ("item", "shipping_address")
ORDER_LABEL_FIELDS = ("order_status",)
PAYMENT_LABEL_FIELDS = ("payment_method", "payment_status")

AWKWARD_TEXT = [
    "'; DROP TABLE x; --",
    "Robert'); DROP TABLE orders_payments_facts;--",
    'a "quoted" item with \\ backslashes',
    "INSERT INTO ecom_store.orders_payments_facts (order_id) VALUES (1) USING TIMESTAMP 1",
    "😀 party pack 🎉",
    "Straße 5, 東京都, Ελλάδα, São Paulo",
    "line one\nline two\ttabbed",
    "  surrounding spaces  ",
    "%s %d {0} $1 ?",
]


def rejection(parse: Callable[[bytes], object], data: bytes) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as caught:
        parse(data)
    return caught.value


# --- accepted, and stored exactly as received -----------------------------------------------


def test_parse_order_accepts_a_valid_order_and_keeps_every_value():
    message = order_dict()
    order = parse_order(encode(message))
    assert isinstance(order, Order)
    assert order.model_dump() == message


def test_parse_payment_accepts_a_valid_payment_and_keeps_every_value():
    message = payment_dict()
    payment = parse_payment(encode(message))
    assert isinstance(payment, Payment)
    assert payment.model_dump() == message


@pytest.mark.parametrize("ensure_ascii", [True, False], ids=["escaped", "raw-utf8"])
@pytest.mark.parametrize("text", AWKWARD_TEXT)
def test_order_text_is_stored_exactly_as_received(text, ensure_ascii):
    order = parse_order(encode(order_dict(item=text, shipping_address=text[::-1]), ensure_ascii=ensure_ascii))
    assert order.item == text
    assert order.shipping_address == text[::-1]


@pytest.mark.parametrize("ensure_ascii", [True, False], ids=["escaped", "raw-utf8"])
@pytest.mark.parametrize("text", [t for t in AWKWARD_TEXT if len(t) <= MAX_LABEL_LENGTH])
def test_payment_labels_are_stored_exactly_as_received(text, ensure_ascii):
    payment = parse_payment(encode(payment_dict(payment_method=text, payment_status=text), ensure_ascii=ensure_ascii))
    assert payment.payment_method == text
    assert payment.payment_status == text


def test_a_surrogate_pair_escape_decodes_to_the_emoji():
    data = encode(order_dict(item="PLACEHOLDER")).replace(b"PLACEHOLDER", b"\\ud83d\\ude00")
    assert parse_order(data).item == "😀"


@pytest.mark.parametrize(
    "date",
    ["2026-03-01", "2026-03-01T10:00:00", "2026-03-01T10:00:00Z", "2026-03-01T10:00:00.123456+05:30"],
)
def test_iso_8601_dates_are_accepted_and_kept_verbatim(date):
    assert parse_order(encode(order_dict(creation_date=date))).creation_date == date
    assert parse_payment(encode(payment_dict(payment_datetime=date))).payment_datetime == date


def test_card_last_four_keeps_its_leading_zeros():
    assert parse_payment(encode(payment_dict(card_last_four="0007"))).card_last_four == "0007"


def test_unknown_extra_fields_are_ignored():
    order = parse_order(encode(order_dict(coupon="SPRING", nested={"a": [1, 2, None]}, order_status="shipped")))
    payment = parse_payment(encode(payment_dict(card_number="4111111111111111", cvv="123")))
    assert set(order.model_dump()) == set(ORDER_COLUMNS)
    assert set(payment.model_dump()) == set(payment_dict())
    assert "4111111111111111" not in repr(payment)


def test_an_integer_price_is_accepted_as_a_number():
    assert parse_order(encode(order_dict(price=12))).price == 12.0


@pytest.mark.parametrize("value", [1, BIGINT_MAX])
def test_ids_at_the_bigint_bounds_are_accepted(value):
    order = parse_order(encode(order_dict(order_id=value, customer_id=value, quantity=value)))
    assert (order.order_id, order.customer_id, order.quantity) == (value, value, value)


def test_text_and_labels_at_their_maximum_length_are_accepted():
    order = parse_order(encode(order_dict(item="x" * MAX_TEXT_LENGTH, order_status="s" * MAX_LABEL_LENGTH)))
    assert len(order.item) == MAX_TEXT_LENGTH
    assert len(order.order_status) == MAX_LABEL_LENGTH


# --- row values -------------------------------------------------------------------------------


def test_order_values_follow_order_columns():
    order = parse_order(encode(order_dict()))
    assert dict(zip(ORDER_COLUMNS, order_values(order), strict=True)) == order_dict()


def test_payment_values_follow_payment_columns():
    payment = parse_payment(encode(payment_dict()))
    expected = {column: payment_dict()[column] for column in PAYMENT_COLUMNS}
    assert dict(zip(PAYMENT_COLUMNS, payment_values(payment), strict=True)) == expected


def test_payment_columns_are_the_payment_fields_without_its_order_id():
    assert set(PAYMENT_COLUMNS) == set(payment_dict()) - {"order_id"}


# --- rejected: encoding and JSON --------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe{}", b'{"item": "\xe9"}', b"\xed\xa0\x80", encode(order_dict())[:-1] + b"\x80"],
    ids=["utf16-bom", "latin1-byte", "utf8-encoded-surrogate", "stray-continuation-byte"],
)
@pytest.mark.parametrize("parse", [parse_order, parse_payment])
def test_bytes_that_are_not_utf8_are_invalid_encoding(parse, data):
    error = rejection(parse, data)
    assert error.code == "invalid_encoding"
    assert "UTF-8" in error.detail


@pytest.mark.parametrize(
    "data",
    [
        encode(order_dict())[:-5],
        b"",
        b"{",
        b"{'order_id': 1}",
        b'{"order_id": 1,}',
        encode(order_dict(item="PLACEHOLDER")).replace(b"PLACEHOLDER", b"\\ud800"),
        encode(order_dict(item="PLACEHOLDER")).replace(b"PLACEHOLDER", b"a\\udc00b"),
    ],
    ids=[
        "truncated",
        "empty",
        "open-brace",
        "single-quotes",
        "trailing-comma",
        "lone-high-surrogate",
        "lone-low-surrogate",
    ],
)
@pytest.mark.parametrize("parse", [parse_order, parse_payment])
def test_malformed_json_is_invalid_json(parse, data):
    error = rejection(parse, data)
    assert error.code == "invalid_json"
    assert error.detail


@pytest.mark.parametrize("data", [b"[]", b'[{"order_id": 1}]', b'"an order"', b"42", b"null", b"true"])
@pytest.mark.parametrize("parse", [parse_order, parse_payment])
def test_json_that_is_not_an_object_is_invalid_message(parse, data):
    error = rejection(parse, data)
    assert error.code == "invalid_message"
    assert "object" in error.detail


# --- rejected: field by field, with the field named ------------------------------------------


def assert_order_rejected_for(field: str, **overrides: object) -> None:
    error = rejection(parse_order, encode(order_dict(**overrides)))
    assert error.code == "invalid_message"
    assert field in error.detail


def assert_payment_rejected_for(field: str, **overrides: object) -> None:
    error = rejection(parse_payment, encode(payment_dict(**overrides)))
    assert error.code == "invalid_message"
    assert field in error.detail


@pytest.mark.parametrize("field", list(order_dict()))
def test_an_order_missing_any_field_is_rejected_naming_it(field):
    message = order_dict()
    del message[field]
    error = rejection(parse_order, encode(message))
    assert error.code == "invalid_message"
    assert field in error.detail
    assert "required" in error.detail.lower()


@pytest.mark.parametrize("field", list(payment_dict()))
def test_a_payment_missing_any_field_is_rejected_naming_it(field):
    message = payment_dict()
    del message[field]
    error = rejection(parse_payment, encode(message))
    assert error.code == "invalid_message"
    assert field in error.detail


@pytest.mark.parametrize("field", ["order_id", "customer_id", "quantity"])
@pytest.mark.parametrize(
    "value",
    [True, False, 1.0, 2.5, "1", None, 0, -1, BIGINT_MAX + 1, [1], {"v": 1}],
    ids=[
        "true",
        "false",
        "float-1.0",
        "float-2.5",
        "string",
        "null",
        "zero",
        "negative",
        "beyond-bigint",
        "list",
        "object",
    ],
)
def test_order_integer_fields_reject_non_integers_and_out_of_range(field, value):
    assert_order_rejected_for(field, **{field: value})


@pytest.mark.parametrize("field", ["payment_id", "order_id"])
@pytest.mark.parametrize("value", [True, 7.0, "7", 0, -5, BIGINT_MAX + 1], ids=str)
def test_payment_id_fields_reject_non_integers_and_out_of_range(field, value):
    assert_payment_rejected_for(field, **{field: value})


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), float("-inf"), -0.01, "59.99", True, None],
    ids=["NaN", "Infinity", "-Infinity", "negative", "string", "bool", "null"],
)
def test_price_must_be_a_finite_non_negative_number(value):
    # json.dumps writes NaN / Infinity as bare literals, which the parser reads as floats: the
    # field's own rule rejects them.
    assert_order_rejected_for("price", price=value)


def test_a_price_beyond_double_range_is_rejected():
    data = encode(order_dict(price=1.5)).replace(b"1.5", b"1e400")
    error = rejection(parse_order, data)
    assert (error.code, "price" in error.detail) == ("invalid_message", True)


@pytest.mark.parametrize("field", ORDER_TEXT_FIELDS)
@pytest.mark.parametrize("value", ["", "x" * (MAX_TEXT_LENGTH + 1), 5, None], ids=["empty", "too-long", "int", "null"])
def test_order_text_fields_must_be_non_empty_bounded_strings(field, value):
    assert_order_rejected_for(field, **{field: value})


@pytest.mark.parametrize("value", ["", "s" * (MAX_LABEL_LENGTH + 1)], ids=["empty", "too-long"])
def test_order_status_must_be_a_non_empty_short_label(value):
    assert_order_rejected_for("order_status", order_status=value)


@pytest.mark.parametrize("field", PAYMENT_LABEL_FIELDS)
@pytest.mark.parametrize("value", ["", "m" * (MAX_LABEL_LENGTH + 1), 3], ids=["empty", "too-long", "int"])
def test_payment_labels_must_be_non_empty_short_strings(field, value):
    assert_payment_rejected_for(field, **{field: value})


@pytest.mark.parametrize(
    "value",
    ["123", "12345", "12a4", "4111111111111111", "", " 123", "1234\n", "１２３４", "12-4", 1234, None],
    ids=[
        "three-digits",
        "five-digits",
        "letter",
        "full-card-number",
        "empty",
        "leading-space",
        "newline",
        "fullwidth-digits",
        "dash",
        "int",
        "null",
    ],
)
def test_card_last_four_must_be_exactly_four_ascii_digits(value):
    assert_payment_rejected_for("card_last_four", card_last_four=value)


@pytest.mark.parametrize(
    "value",
    [
        "01/03/2026",
        "2026-13-01",
        "2026-02-30",
        "2026/03/01 10:00",
        "yesterday",
        "",
        "2026-03-01T25:00:00",
        "1772366400",
        "x" * 100,
    ],
    ids=["us-format", "month-13", "feb-30", "slashes", "word", "empty", "hour-25", "epoch-seconds", "too-long"],
)
def test_dates_must_be_iso_8601(value):
    assert_order_rejected_for("creation_date", creation_date=value)
    assert_payment_rejected_for("payment_datetime", payment_datetime=value)


def test_a_numeric_date_is_rejected():
    assert_order_rejected_for("creation_date", creation_date=20260301)


def test_every_invalid_field_is_named_in_the_detail():
    error = rejection(parse_order, encode(order_dict(order_id=0, price=-1, item="")))
    for field in ("order_id", "price", "item"):
        assert field in error.detail


def test_invalid_message_carries_code_and_detail_in_its_text():
    error = rejection(parse_payment, encode(payment_dict(card_last_four="12a4")))
    assert str(error).startswith("invalid_message: ")
    assert "card_last_four" in str(error)


def test_a_rejection_is_raised_from_the_validation_error():
    error = rejection(parse_order, json.dumps([1]).encode())
    assert error.__cause__ is not None
