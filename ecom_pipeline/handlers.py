"""What to do with a batch of messages: one `Outcome` per message, in the batch's order.

Handlers parse and validate (pure), then talk to Cassandra through a `FactStore`. They never
ack, publish or sleep; the consumer loop does that with what they return.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Protocol, TypeVar

from .cassandra_io import FactStore
from .errors import InvalidMessage, StoreError, TransientStoreError
from .messages import Payment, order_values, parse_order, parse_payment, payment_values
from .policy import APPLIED, DeadLetter, Fail, Outcome, Retry, event_time_micros, replay_deferral
from .pubsub_io import Received

__all__ = ["Handler", "OrderHandler", "PaymentHandler", "ReplayHandler", "ORDER_NOT_FOUND"]

ORDER_NOT_FOUND = "order_not_found"


class Handler(Protocol):
    def handle(self, batch: Sequence[Received]) -> list[Outcome]: ...


def _outcome(error: StoreError | None) -> Outcome:
    if error is None:
        return APPLIED
    if isinstance(error, TransientStoreError):
        return Retry(str(error))
    return Fail(str(error))


R = TypeVar("R")


def _parse_batch(
    batch: Sequence[Received], parse: Callable[[bytes], R], outcomes: list[Outcome | None]
) -> list[tuple[int, R, int]]:
    """(position, record, write timestamp) of each valid message; dead letters for the others."""
    parsed: list[tuple[int, R, int]] = []
    for position, message in enumerate(batch):
        try:
            record = parse(message.data)
        except InvalidMessage as invalid:
            outcomes[position] = DeadLetter(invalid.code, invalid.detail)
            continue
        parsed.append((position, record, event_time_micros(message.publish_time, message.attributes)))
    return parsed


class OrderHandler:
    """Insert each valid order's eight columns; invalid ones become dead letters."""

    def __init__(self, store: FactStore) -> None:
        self._store = store

    def handle(self, batch: Sequence[Received]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(batch)
        orders = _parse_batch(batch, parse_order, outcomes)
        errors = self._store.insert_orders([(order_values(order), timestamp) for _, order, timestamp in orders])
        for (position, _, _), error in zip(orders, errors):
            outcomes[position] = _outcome(error)
        return outcomes  # type: ignore[return-value]


class PaymentHandler:
    """Set the payment columns of existing orders; a payment without its order is a dead letter.

    An UPDATE is an upsert in CQL, so the order's existence is read first: the pipeline never
    creates a payment-only row. Orders are never deleted, so an order seen once stays there.
    """

    def __init__(self, store: FactStore) -> None:
        self._store = store

    def handle(self, batch: Sequence[Received]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(batch)
        payments: list[tuple[int, Payment, int]] = _parse_batch(batch, parse_payment, outcomes)
        if not payments:
            return outcomes  # type: ignore[return-value]

        found, failed = self._store.existing_orders([payment.order_id for _, payment, _ in payments])
        positions: list[int] = []
        updates: list[tuple[int, tuple[object, ...], int]] = []
        for position, payment, timestamp in payments:
            if payment.order_id in failed:
                outcomes[position] = _outcome(failed[payment.order_id])
            elif payment.order_id in found:
                positions.append(position)
                updates.append((payment.order_id, payment_values(payment), timestamp))
            else:
                outcomes[position] = DeadLetter(ORDER_NOT_FOUND, f"order_id {payment.order_id} does not exist")
        for position, error in zip(positions, self._store.update_payments(updates)):
            outcomes[position] = _outcome(error)
        return outcomes  # type: ignore[return-value]


class ReplayHandler:
    """The payment path again, for dead-lettered payments, each tried at most once per interval."""

    def __init__(
        self,
        store: FactStore,
        retry_interval: float,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self._payments = PaymentHandler(store)
        self._retry_interval = retry_interval
        self._now = now

    def handle(self, batch: Sequence[Received]) -> list[Outcome]:
        now = self._now()
        outcomes: list[Outcome | None] = [None] * len(batch)
        due: list[int] = []
        for position, message in enumerate(batch):
            deferral = replay_deferral(message.attributes, now, self._retry_interval)
            if deferral is None:
                due.append(position)
            else:
                outcomes[position] = deferral
        for position, outcome in zip(due, self._payments.handle([batch[p] for p in due])):
            outcomes[position] = outcome
        return outcomes  # type: ignore[return-value]
