"""Card numbers never reach a dead letter: the masking, example by example and fuzzed.

The checks use their own Luhn and their own scanner (from the producers' test), not the code
under test, so a bug in one is not hidden by the same bug in the other.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecom_pipeline.redaction import mask_attributes, mask_card_numbers, mask_message
from tests.unit.test_mockdata import luhn_valid

RUN = re.compile(r"\d(?:[ -]?\d)*")


def surviving_cards(text: str) -> list[str]:
    """Every Luhn-valid stretch of 13-19 digits inside any digit run of `text`."""
    found = []
    for run in RUN.findall(text):
        digits = re.sub(r"[ -]", "", run)
        for length in range(13, min(19, len(digits)) + 1):
            for start in range(len(digits) - length + 1):
                if luhn_valid(digits[start : start + length]):
                    found.append(digits[start : start + length])
    return found


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


@pytest.mark.parametrize(
    "data",
    [
        b'{"order_id": 4111111111111111}',  # the value of a top-level id field is an id
        b'{"payment_id":  4111111111111111, "customer_id":4111111111111111}',  # kept byte for byte
        b'{"payment_id": 707, "card_last_four": "0042"}',
    ],
)
def test_a_message_whose_only_card_like_numbers_are_its_ids_is_left_as_it_is(data):
    assert mask_message(data) == (data, False)


def test_an_id_field_name_does_not_shield_a_card_in_a_string():
    assert mask_message(b'{"order_id": "4111111111111111"}') == (b'{"order_id":"************1111"}', True)


def test_as_text_an_id_field_name_shields_nothing():
    assert mask_card_numbers(b'{"order_id": 4111111111111111}') == (b'{"order_id": ************1111}', True)


def test_attribute_names_and_values_are_masked():
    masked, changed = mask_attributes({"note": "4111111111111111", "4111111111111111": "name", "ok": "1"})
    assert changed
    assert masked == {"note": "************1111", "************1111": "name", "ok": "1"}


cards = st.sampled_from(["4111111111111111", "5500000000000004", "378282246310005", "6011111111111117"])
separators = st.sampled_from(["", " ", "-"])
noise = st.text(alphabet="0123456789 -abc{}:,", max_size=30)


@st.composite
def texts_with_cards(draw: st.DrawFn) -> str:
    pieces = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        card = draw(cards)
        separator = draw(separators)
        grouped = separator.join(card[i : i + 4] for i in range(0, len(card), 4))
        pieces += [draw(noise), grouped]
    pieces.append(draw(noise))
    return "".join(pieces)


@settings(deadline=None, max_examples=300)
@given(text=texts_with_cards() | st.text(alphabet="0123456789 -x", max_size=80))
def test_no_luhn_valid_run_survives_the_masking(text):
    masked, _ = mask_card_numbers(text.encode())
    assert surviving_cards(masked.decode()) == []


@settings(deadline=None, max_examples=200)
@given(data=st.binary(max_size=200))
def test_masking_never_fails_and_only_ever_replaces_digits_by_stars(data):
    masked, changed = mask_card_numbers(data)
    assert len(masked) == len(data)
    assert changed == (masked != data)
    assert all(a == b or (chr(a).isdigit() and b == ord("*")) for a, b in zip(data, masked, strict=True))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | texts_with_cards() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(texts_with_cards() | st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(deadline=None, max_examples=200)
@given(
    value=st.dictionaries(st.text(max_size=5) | texts_with_cards(), json_values, max_size=4), ascii_only=st.booleans()
)
def test_no_card_number_survives_in_what_a_json_reader_sees(value, ascii_only):
    data = json.dumps(value, ensure_ascii=ascii_only).encode()  # escaped (\u0034...) or not
    masked, _ = mask_message(data)
    seen = json.loads(masked, object_pairs_hook=list)  # repeated names too
    assert surviving_cards(json.dumps(seen, ensure_ascii=False)) == []


def test_a_masked_json_message_is_never_longer_than_it_was():
    # Pub/Sub takes 10 MB: a dead letter that grew past it would be refused, nacked, and moved
    # unmasked by the subscription's dead-letter policy.
    data = b'{"a":"4111111111111111","b":[1,2,{"c":null}]}'
    assert mask_message(data) == (b'{"a":"************1111","b":[1,2,{"c":null}]}', True)


def test_a_lone_surrogate_stays_escaped_and_repeated_names_and_numbers_stay_as_they_were():
    data = b'{"n": 1.5e400, "item": "\\ud800 4111111111111111", "item": "\xc3\xa9"}'
    masked, changed = mask_message(data)
    assert changed
    assert masked == b'{"n":1.5e400,"item":"\\ud800 ************1111","item":"\\u00e9"}'


def test_escaped_digits_in_what_is_not_json_are_masked_too():
    # Not JSON (one brace short), but a reader's tool would still decode the escapes.
    escaped = "".join(f"\\u003{digit}" for digit in "4111111111111111").encode()  # every digit escaped
    data = b'{"payment_method": "' + escaped + b'", "x": 1'
    assert mask_message(data) == (b'{"payment_method": "************1111", "x": 1', True)


def test_escaped_digits_without_a_card_number_are_left_as_they_were():
    data = b'{"note": "\\u0034\\u0032", "x": 1'
    assert mask_message(data) == (data, False)
