"""Properties of the parsers, for any input: a model or an `InvalidMessage`, never anything else."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from ecom_pipeline.errors import InvalidMessage
from ecom_pipeline.messages import (
    BIGINT_MAX,
    ORDER_COLUMNS,
    PAYMENT_COLUMNS,
    Order,
    Payment,
    order_values,
    parse_order,
    parse_payment,
    payment_values,
)
from tests.unit.conftest import order_dict, payment_dict

CODES = {"invalid_encoding", "invalid_json", "invalid_message"}
PARSERS: st.SearchStrategy[tuple[Callable[[bytes], object], type]] = st.sampled_from(
    [(parse_order, Order), (parse_payment, Payment)]
)
FIELD_NAMES = sorted(set(order_dict()) | set(payment_dict()))

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
# Objects with the real field names, so that the field rules (not only the parser) meet odd values.
message_like = st.fixed_dictionaries({}, optional={name: json_values for name in FIELD_NAMES})


def encodings(value: object) -> st.SearchStrategy[bytes]:
    """The bytes a careless producer could send for a value: ASCII-escaped, raw UTF-8 or worse."""
    escaped = json.dumps(value).encode("ascii")
    raw = json.dumps(value, ensure_ascii=False).encode("utf-8", errors="surrogatepass")
    return st.sampled_from([escaped, raw])


def assert_model_or_invalid_message(parse: Callable[[bytes], object], model: type, data: bytes) -> None:
    try:
        result = parse(data)
    except InvalidMessage as error:
        assert error.code in CODES
        assert error.detail.strip()
    else:
        assert isinstance(result, model)


@settings(deadline=None)
@given(parser=PARSERS, data=st.binary(max_size=512))
def test_any_bytes_give_a_model_or_an_invalid_message(parser, data):
    parse, model = parser
    assert_model_or_invalid_message(parse, model, data)


@settings(deadline=None)
@given(parser=PARSERS, data=json_values.flatmap(encodings))
def test_any_json_value_gives_a_model_or_an_invalid_message(parser, data):
    parse, model = parser
    assert_model_or_invalid_message(parse, model, data)


@settings(deadline=None)
@given(parser=PARSERS, data=message_like.flatmap(encodings))
def test_any_object_with_the_field_names_gives_a_model_or_an_invalid_message(parser, data):
    parse, model = parser
    assert_model_or_invalid_message(parse, model, data)


@settings(deadline=None)
@given(parser=PARSERS, data=st.binary(min_size=1, max_size=64), cut=st.integers(min_value=0))
def test_valid_messages_corrupted_anywhere_give_a_model_or_an_invalid_message(parser, data, cut):
    parse, model = parser
    valid = json.dumps(order_dict() if model is Order else payment_dict()).encode()
    position = cut % len(valid)
    assert_model_or_invalid_message(parse, model, valid[:position] + data + valid[position:])


# --- round trip: whatever a valid producer sends comes back unchanged --------------------------

ids = st.integers(min_value=1, max_value=BIGINT_MAX)
texts = st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=100)
prices = st.floats(min_value=0, allow_nan=False, allow_infinity=False)
offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59))
iso_dates = st.datetimes(timezones=st.none() | st.just(UTC) | offsets.map(timezone)).map(
    lambda moment: moment.isoformat()
)
orders = st.fixed_dictionaries(
    {
        "order_id": ids,
        "customer_id": ids,
        "item": texts,
        "quantity": ids,
        "price": prices,
        "shipping_address": texts,
        "order_status": texts,
        "creation_date": iso_dates,
    }
)
payments = st.fixed_dictionaries(
    {
        "payment_id": ids,
        "order_id": ids,
        "payment_method": texts,
        "card_last_four": st.integers(min_value=0, max_value=9999).map("{:04d}".format),
        "payment_status": texts,
        "payment_datetime": iso_dates,
    }
)


@settings(deadline=None)
@given(order=orders, ensure_ascii=st.booleans())
def test_a_valid_order_round_trips_through_json(order, ensure_ascii):
    parsed = parse_order(json.dumps(order, ensure_ascii=ensure_ascii).encode("utf-8"))
    assert order_values(parsed) == tuple(order[column] for column in ORDER_COLUMNS)


@settings(deadline=None)
@given(payment=payments, ensure_ascii=st.booleans())
def test_a_valid_payment_round_trips_through_json(payment, ensure_ascii):
    parsed = parse_payment(json.dumps(payment, ensure_ascii=ensure_ascii).encode("utf-8"))
    assert parsed.order_id == payment["order_id"]
    assert payment_values(parsed) == tuple(payment[column] for column in PAYMENT_COLUMNS)
