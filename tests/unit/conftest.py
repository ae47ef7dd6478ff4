"""Builders shared by the unit tests: valid messages, pulled-message records and a fake FactStore.

Nothing here talks to a service. `FakeFactStore` stands in for the store *interface* only, so the
handlers' decisions can be checked row by row; the real Cassandra is exercised by the
integration tests.
"""

from __future__ import annotations

import faulthandler
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest

from ecom_pipeline.errors import StoreError
from ecom_pipeline.pubsub_io import Received

ROOT = Path(__file__).resolve().parents[2]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PUBLISH_TIME = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)


def order_dict(**overrides: object) -> dict[str, object]:
    """A valid order message as a dict; every value is distinct so a mix-up of columns shows."""
    order: dict[str, object] = {
        "order_id": 101,
        "customer_id": 2002,
        "item": "blue running shoes",
        "quantity": 3,
        "price": 59.99,
        "shipping_address": "1 Main Street, Springfield",
        "order_status": "confirmed",
        "creation_date": "2026-03-01T11:59:58.123+00:00",
    }
    order.update(overrides)
    return order


def payment_dict(**overrides: object) -> dict[str, object]:
    """A valid payment message as a dict; every value is distinct so a mix-up of columns shows."""
    payment: dict[str, object] = {
        "payment_id": 707,
        "order_id": 101,
        "payment_method": "credit_card",
        "card_last_four": "0042",
        "payment_status": "completed",
        "payment_datetime": "2026-03-01T12:00:00.000+00:00",
    }
    payment.update(overrides)
    return payment


def encode(message: Mapping[str, object], *, ensure_ascii: bool = True) -> bytes:
    """A message's bytes as a producer would publish them."""
    return json.dumps(message, ensure_ascii=ensure_ascii).encode("utf-8")


def received(
    data: bytes,
    *,
    attributes: Mapping[str, str] | None = None,
    publish_time: datetime = PUBLISH_TIME,
    message_id: str = "m-1",
) -> Received:
    """A pulled message, as `SubscriptionClient.pull` returns it."""
    return Received(
        ack_id=f"ack-{message_id}",
        message_id=message_id,
        data=data,
        attributes=dict(attributes or {}),
        publish_time=publish_time,
        delivery_attempt=1,
    )


def micros(moment: datetime) -> int:
    """Microseconds since the epoch, computed independently of the code under test."""
    return (moment - EPOCH) // timedelta(microseconds=1)


@dataclass
class FakeFactStore:
    """The `FactStore` interface in memory: which orders exist, and which calls should fail.

    Every call is recorded, so a test can check what the handler asked the store to do.
    """

    existing: set[int] = field(default_factory=set)
    insert_errors: dict[int, StoreError] = field(default_factory=dict)
    lookup_errors: dict[int, StoreError] = field(default_factory=dict)
    update_errors: dict[int, StoreError] = field(default_factory=dict)
    inserted: list[tuple[tuple[object, ...], int]] = field(default_factory=list)
    lookups: list[list[int]] = field(default_factory=list)
    updated: list[tuple[int, tuple[object, ...], int]] = field(default_factory=list)

    def insert_orders(self, rows: Sequence[tuple[tuple[object, ...], int]]) -> list[StoreError | None]:
        self.inserted.extend(rows)
        return [self.insert_errors.get(cast(int, values[0])) for values, _ in rows]  # order_id comes first

    def existing_orders(self, order_ids: Sequence[int]) -> tuple[set[int], dict[int, StoreError]]:
        self.lookups.append(list(order_ids))
        failed = {order_id: self.lookup_errors[order_id] for order_id in order_ids if order_id in self.lookup_errors}
        found = {order_id for order_id in order_ids if order_id in self.existing and order_id not in failed}
        return found, failed

    def update_payments(self, rows: Sequence[tuple[int, tuple[object, ...], int]]) -> list[StoreError | None]:
        self.updated.extend(rows)
        return [self.update_errors.get(order_id) for order_id, _, _ in rows]


@pytest.fixture(autouse=True)
def _no_unit_test_hangs() -> Iterator[None]:
    """A unit test that has not finished after 120 s prints every thread's stack and ends the run
    with an error, rather than holding CI until its time runs out (no unit test takes a second)."""
    faulthandler.dump_traceback_later(120, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
