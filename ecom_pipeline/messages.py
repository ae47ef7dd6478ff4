"""The message schemas, and pure functions from message bytes to validated records and row values.

Values are validated, never rewritten: text and date strings reach Cassandra exactly as received.
Unknown fields are ignored. Every failure is an `InvalidMessage` with a code and a precise detail.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from .errors import InvalidMessage

__all__ = [
    "BIGINT_MAX",
    "MAX_LABEL_LENGTH",
    "MAX_TEXT_LENGTH",
    "ORDER_COLUMNS",
    "PAYMENT_COLUMNS",
    "Order",
    "Payment",
    "order_values",
    "parse_order",
    "parse_payment",
    "payment_values",
]

BIGINT_MAX = 2**63 - 1
MAX_TEXT_LENGTH = 1000  # item, shipping_address
MAX_LABEL_LENGTH = 100  # order_status, payment_method, payment_status
MIN_DATE_LENGTH, MAX_DATE_LENGTH = 10, 64


def _iso8601(value: str) -> str:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO-8601 date or date-time") from None
    return value  # validated, stored exactly as received


_Id = Annotated[int, Field(ge=1, le=BIGINT_MAX)]
_Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_LENGTH)]
_Label = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_LENGTH)]
_IsoDate = Annotated[str, Field(min_length=MIN_DATE_LENGTH, max_length=MAX_DATE_LENGTH), AfterValidator(_iso8601)]
_STRICT = ConfigDict(extra="ignore", frozen=True, strict=True)


class Order(BaseModel):
    """An order as published on `orders_data`; its fields are the table's first eight columns."""

    model_config = _STRICT
    order_id: _Id
    customer_id: _Id
    item: _Text
    quantity: Annotated[int, Field(ge=1, le=BIGINT_MAX)]
    price: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    shipping_address: _Text
    order_status: _Label
    creation_date: _IsoDate


class Payment(BaseModel):
    """A payment as published on `payments_data`. Only a card's last four digits ever exist here."""

    model_config = _STRICT
    payment_id: _Id
    order_id: _Id
    payment_method: _Label
    card_last_four: Annotated[str, Field(pattern=r"^[0-9]{4}$")]
    payment_status: _Label
    payment_datetime: _IsoDate


ORDER_COLUMNS = tuple(Order.model_fields)
PAYMENT_COLUMNS = ("payment_id", "payment_method", "card_last_four", "payment_status", "payment_datetime")


Model = TypeVar("Model", bound=BaseModel)


def _parse(model: type[Model], data: bytes) -> Model:
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise _invalid(exc, data) from exc


def _invalid(exc: ValidationError, data: bytes) -> InvalidMessage:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as decode_error:
            return InvalidMessage("invalid_encoding", f"not UTF-8: {decode_error.reason} at byte {decode_error.start}")
        return InvalidMessage("invalid_json", first["msg"])
    if first["type"] == "model_type":
        return InvalidMessage("invalid_message", "expected a JSON object")
    details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in errors)
    return InvalidMessage("invalid_message", details)


def parse_order(data: bytes) -> Order:
    """Validate an order message's bytes; raise `InvalidMessage` with the reason otherwise."""
    return _parse(Order, data)


def parse_payment(data: bytes) -> Payment:
    """Validate a payment message's bytes; raise `InvalidMessage` with the reason otherwise."""
    return _parse(Payment, data)


def order_values(order: Order) -> tuple[object, ...]:
    """The order's values in ORDER_COLUMNS order, for the prepared INSERT."""
    return (
        order.order_id,
        order.customer_id,
        order.item,
        order.quantity,
        order.price,
        order.shipping_address,
        order.order_status,
        order.creation_date,
    )


def payment_values(payment: Payment) -> tuple[object, ...]:
    """The payment's values in PAYMENT_COLUMNS order, for the prepared UPDATE."""
    return (
        payment.payment_id,
        payment.payment_method,
        payment.card_last_four,
        payment.payment_status,
        payment.payment_datetime,
    )
