"""Card numbers never reach a dead letter: the masking, example by example.

The fuzzing, against an oracle that owes nothing to the code, is in test_masking_oracle.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecom_pipeline.redaction import mask_attributes, mask_card_numbers, mask_message, mask_text
from tests.unit.test_masking_oracle import json_as_read, visible_card_numbers


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'"4111111111111111"', b'"************1111"'),
        (b"card 4111 1111 1111 1111.", b"card **** **** **** 1111."),
        (b"card 5500-0000-0000-0004", b"card ****-****-****-0004"),
        (b"amex 378282246310005!", b"amex ***********0005!"),
        (b"x94111111111111111x", b"x9************1111x"),  # a card behind one more digit
        (b"1234567890123456789012", b"******************9012"),  # longer than any field: masked
    ],
)
def test_card_numbers_are_masked_to_their_last_four(data, expected):
    assert mask_card_numbers(data) == (expected, True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4111.1111.1111.1111", "****.****.****.1111"),
        ("4111  1111  1111  1111", "****  ****  ****  1111"),  # several spaces
        ("4111 - 1111 - 1111 - 1111", "**** - **** - **** - 1111"),  # three separators
        ("4111\t1111\t1111\t1111", "****\t****\t****\t1111"),
        ("4111/1111/1111/1111", "****/****/****/1111"),
        ("4111_1111_1111_1111", "****_****_****_1111"),
        ("4111\u00a01111\u00a01111\u00a01111", "****\u00a0****\u00a0****\u00a01111"),  # no-break spaces
        ("4111\u20131111\u20141111\u22121111", "****\u2013****\u2014****\u22121111"),  # en, em dash, minus
        ("4111\u200b1111\u200b1111\u200b1111", "****\u200b****\u200b****\u200b1111"),  # zero-width spaces
        ("4111*1111*1111*1111", "***************1111"),  # stars as separators
        ("４１１１ １１１１ １１１１ １１１１", "**** **** **** 1111"),  # full-width: the last four in ASCII
        ("٤١١١١١١١١١١١١١١١", "************1111"),  # Arabic-Indic digits
        ("4111,1111,1111,1111", "****,****,****,1111"),
    ],
)
def test_a_card_number_is_masked_whatever_separates_its_digits_and_whatever_their_script(text, expected):
    assert mask_text(text) == (expected, True)


@pytest.mark.parametrize(
    "text",
    [
        "4111    1111 1111 1111",  # four separators: two numbers, neither a card
        "4111 a 1111 1111 1111",  # a letter between
        "4111²111111111111",  # a superscript is no decimal digit
        "2026-03-01T12:00:00.123+00:00",  # 20260301 and 1200001230000 (not Luhn-valid)
    ],
)
def test_digits_a_reader_does_not_read_as_one_card_number_are_left_alone(text):
    assert mask_text(text) == (text, False)


@pytest.mark.parametrize(
    "data",
    [
        b'{"payment_id": 707, "card_last_four": "0042"}',
        b"4111111111111113",  # no stretch of it passes the Luhn check
        b"411111111111",  # twelve digits
        b"\xff\xfe not utf-8 at all",
        b"",
    ],
)
def test_what_is_no_card_number_is_left_as_it_is(data):
    assert mask_card_numbers(data) == (data, False)


def test_bytes_that_are_not_utf_8_are_separators_and_written_back_as_they_were():
    data = b"\xff4111\xfe1111\xfe1111\xfe1111\xff"
    assert mask_card_numbers(data) == (b"\xff****\xfe****\xfe****\xfe1111\xff", True)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # In the dead letter of an invalid message an id is a value like any other.
        (b'{"order_id": 4111111111111111}', b'{"order_id":"************1111"}'),
        (b'{"payment_id": -4111111111111111}', b'{"payment_id":"-************1111"}'),
        # A number in a JSON numeric value, whole or with a fraction.
        (b'{"amount": 4111.111111111111}', b'{"amount":"****.********1111"}'),
        # Numbers a reader reads as one: an array, a name and its value.
        (b"[4111, 1111, 1111, 1111]", b'["****","****","****",1111]'),
        (b'{"4111 1111": "1111 1111"}', b'{"**** ****":"**** 1111"}'),
        # A card written in escapes and separated by escaped tabs.
        (b'{"n": "\\u0034111\\t1111\\t1111\\t1111"}', b'{"n":"****\\t****\\t****\\t1111"}'),
    ],
)
def test_a_card_number_anywhere_in_json_is_masked(data, expected):
    assert mask_message(data) == (expected, True)


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 4111, "b": 111111111111}',  # a name stands between: two numbers
        b'{"payment_id": 707, "card_last_four": "0042"}',
    ],
)
def test_json_without_a_card_number_is_left_as_it_is(data):
    assert mask_message(data) == (data, False)


def payment(*fields: str) -> bytes:
    """A valid payment's JSON text, these fields first (written as given)."""
    rest = {"payment_id": "1", "order_id": "2", "payment_datetime": '"2026-03-01"'}
    names = {field.split(":")[0].strip('" ') for field in fields}
    written = [*fields, *(f'"{n}": {v}' for n, v in rest.items() if n not in names)]
    written += ['"payment_method": "card"', '"card_last_four": "1111"', '"payment_status": "paid"']
    return ("{" + ", ".join(written) + "}").encode()


@pytest.mark.parametrize(
    "data",
    [
        payment('"order_id": 4111111111111111'),  # the value of a top-level id field is an id
        payment('"payment_id":  4111111111111111', '"order_id":5500000000000004'),  # kept byte for byte
        payment('"payment_datetime": "4111-11-11 11:11:11.11"'),  # a valid date: all its digits are
        payment('"payment_datetime": "2026-03-01 000200"'),  # 20260301000200 is Luhn-valid
        b'{"order_id": 4111111111111111, "customer_id": 5500000000000004, "item": "shoes", "quantity": 1,'
        b' "price": 1.5, "shipping_address": "1 Main St", "order_status": "new", "creation_date": "2026-03-01 000200"}',
    ],
)
def test_a_valid_messages_ids_and_date_are_kept_when_it_is_applicable(data):
    assert mask_message(data, applicable=True) == (data, False)


def test_an_invalid_messages_ids_and_date_are_masked_though_it_is_said_applicable():
    data = b'{"payment_id": 4111111111111111, "order_id": -5500000000000004, "payment_datetime": "2026-03-01 000200"}'
    expected = (
        b'{"payment_id":"************1111","order_id":"-************0004","payment_datetime":"****-**-** **0200"}'
    )
    assert mask_message(data, applicable=True) == (expected, True)


@pytest.mark.parametrize(
    ("field", "masked"),
    [
        # Only the last of a repeated name is what JSON readers take.
        ('"order_id": 4111111111111111, "order_id": 7', '"order_id":"************1111","order_id":7'),
        # A customer id is no field of a payment's.
        ('"customer_id": 4111111111111111', '"customer_id":"************1111"'),
        # A date with more fraction digits than a date holds.
        (
            '"payment_datetime": "2026-03-01T12:00:00.4111111111111111"',
            '"payment_datetime":"2026-03-01T**:**:**.************1111"',
        ),
        # A date with an offset to the second (two more free digits).
        (
            '"payment_datetime": "2026-03-01T12:00:00.411111+11:11:11.111111"',
            '"payment_datetime":"2026-03-01T**:**:**.******+**:**:**.**1111"',
        ),
    ],
)
def test_an_applicable_payment_keeps_only_its_own_ids_and_a_date_that_holds_no_card(field, masked):
    data, changed = mask_message(payment(field), applicable=True)
    assert changed and data.startswith(b"{" + masked.encode() + b",")


def test_a_kept_id_still_counts_for_the_digits_next_to_it():
    data = payment('"order_id": 411111111111', '"1111": 0')  # read together: 4111111111111111 (and a 0)
    masked, changed = mask_message(data, applicable=True)
    assert changed and masked.startswith(b'{"order_id":411111111111,"****":"*",')
    assert visible_card_numbers(json_as_read(masked)) == []


def test_as_text_an_id_field_name_shields_nothing():
    assert mask_card_numbers(b'{"order_id": 4111111111111111}') == (b'{"order_id": ************1111}', True)


def test_attribute_names_and_values_are_masked_but_those_kept():
    attributes = {"note": "4111.1111.1111.1111", "4111111111111111": "name", "ok": "1", "id": "4111111111111111"}
    masked, changed = mask_attributes(attributes, keep={"id"})
    assert changed
    assert masked == {"note": "****.****.****.1111", "************1111": "name", "ok": "1", "id": "4111111111111111"}


@settings(deadline=None, max_examples=200)
@given(data=st.binary(max_size=200))
def test_masking_never_fails_and_only_ever_replaces_digits(data):
    masked, changed = mask_card_numbers(data)
    assert changed == (masked != data)
    if b"\\" not in data:  # no escape: the same characters, but digits become stars or ASCII digits
        before, after = data.decode("utf-8", "surrogateescape"), masked.decode("utf-8", "surrogateescape")
        assert len(before) == len(after)
        assert all(a == b or (a.isdecimal() and b in "*0123456789") for a, b in zip(before, after, strict=True))


def test_a_masked_json_message_is_written_compact():
    # Never longer than it was, but for the quotes of a masked number (the caller caps the size).
    data = b'{"a":"4111111111111111","b":[1,2,{"c":null}]}'
    assert mask_message(data) == (b'{"a":"************1111","b":[1,2,{"c":null}]}', True)


def test_a_lone_surrogate_stays_escaped_and_repeated_names_and_numbers_stay_as_they_were():
    data = b'{"n": 1.5e400, "item": "\\ud800 4111111111111111", "item": "\xc3\xa9", "x": NaN}'
    masked, changed = mask_message(data)
    assert changed
    assert masked == b'{"n":1.5e400,"item":"\\ud800 ************1111","item":"\\u00e9","x":NaN}'


def test_escaped_digits_in_what_is_not_json_are_masked_too():
    # Not JSON (one brace short), but a reader's tool would still decode the escapes.
    escaped = "".join(f"\\u003{digit}" for digit in "4111111111111111").encode()  # every digit escaped
    data = b'{"payment_method": "' + escaped + b'", "x": 1'
    assert mask_message(data) == (b'{"payment_method": "************1111", "x": 1', True)


def test_escaped_separators_in_what_is_not_json_are_separators():
    data = b'{"note": "4111\\t1111\\u00a01111\\/1111", "x": 1'
    assert mask_message(data) == (b'{"note": "****\\t****\\u00a0****\\/1111", "x": 1', True)


def test_escaped_digits_without_a_card_number_are_left_as_they_were():
    data = b'{"note": "\\u0034\\u0032", "x": 1'
    assert mask_message(data) == (data, False)


def test_megabytes_of_digits_take_a_bounded_time_per_digit():
    data = b"4" * 5_000_000 + b" " + b"1234"
    masked, changed = mask_card_numbers(data)
    assert changed and masked == b"*" * 5_000_000 + b" " + b"1234"
