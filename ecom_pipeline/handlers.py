"""What to do with a batch of messages: one `Outcome` per message, in the batch's order.

Handlers parse and validate (pure), then talk to Cassandra through a `FactStore`. They never
ack, publish or sleep; the consumer loop does that with what they return. A store error that no
message can get past (`FatalStoreError`) is raised, not returned: the consumer stops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from .errors import FatalStoreError, InvalidMessage, StoreError, TransientStoreError
from .messages import Order, Payment, order_values, parse_order, parse_payment, payment_values
from .policy import (
    APPLIED,
    RENEW_AFTER,
    REPLAY_MAX_DELAY,
    Applied,
    DeadLetter,
    Defer,
    Fail,
    Outcome,
    Retry,
    replay_delay,
)
from .pubsub_io import Received
from .versions import first_publish_time, newest_per_key, waiting_since, write_timestamp

__all__ = [
    "ATTEMPTS_EXHAUSTED",
    "ORDER_NOT_FOUND",
    "REASONS",
    "UNEXPECTED_FAILURE",
    "WRITE_REFUSED",
    "Clock",
    "Handler",
    "OrderHandler",
    "PaymentHandler",
    "ReplayHandler",
]

ORDER_NOT_FOUND = "order_not_found"
UNEXPECTED_FAILURE = "unexpected_failure"
# Valid messages that were not applied: Cassandra refused this row for good, or the consumer
# took it from the subscription before the dead-letter policy would have (consumer.py).
WRITE_REFUSED = "write_refused"
ATTEMPTS_EXHAUSTED = "delivery_attempts_exhausted"
# Every reason a dead letter of this pipeline can carry (a metric label: a bounded set).
REASONS = frozenset(
    {
        "invalid_encoding",
        "invalid_json",
        "invalid_message",
        ORDER_NOT_FOUND,
        UNEXPECTED_FAILURE,
        WRITE_REFUSED,
        ATTEMPTS_EXHAUSTED,
    }
)
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Handler(Protocol):
    def handle(self, batch: Sequence[Received]) -> list[Outcome]: ...


class Store(Protocol):
    """What the handlers need of Cassandra (`cassandra_io.FactStore`): one result per row, in order."""

    def insert_orders(self, rows: Sequence[tuple[tuple[object, ...], int]]) -> list[StoreError | None]: ...

    def existing_orders(self, order_ids: Sequence[int]) -> tuple[set[int], dict[int, StoreError]]: ...

    def update_payments(self, rows: Sequence[tuple[int, tuple[object, ...], int]]) -> list[StoreError | None]: ...


def _outcome(error: StoreError | None) -> Outcome:
    if error is None:
        return APPLIED
    if isinstance(error, FatalStoreError):
        raise error
    if isinstance(error, TransientStoreError):
        return Retry(str(error))
    # Cassandra refused this row for good: its own failure, dead-lettered with the reason now
    # (nacked, it would come back until the subscription's policy moved it without one).
    return DeadLetter(WRITE_REFUSED, str(error))


R = TypeVar("R")


class _Outcomes:
    """One slot per message of a batch, filled in any order, read back in the batch's order."""

    def __init__(self, size: int) -> None:
        self._slots: list[Outcome | None] = [None] * size

    def __setitem__(self, position: int, outcome: Outcome) -> None:
        self._slots[position] = outcome

    def in_order(self) -> list[Outcome]:
        if None in self._slots:
            missing = [p for p, outcome in enumerate(self._slots) if outcome is None]
            raise ValueError(f"no outcome for the messages at positions {missing}")
        return self._slots  # type: ignore[return-value]  # no slot is None: checked above


class _Parser:
    """Parse a batch: (position, record, write timestamp, version id) of the valid messages; dead
    letters for the others. The write timestamp names the version (`versions.py`)."""

    def __init__(self, from_dead_letters: bool) -> None:
        self._from_dead_letters = from_dead_letters

    def parse(
        self, batch: Sequence[Received], parse: Callable[[bytes], R], outcomes: _Outcomes
    ) -> list[tuple[int, R, int, str]]:
        parsed: list[tuple[int, R, int, str]] = []
        for position, message in enumerate(batch):
            try:
                record = parse(message.data)
                first, source_id = first_publish_time(
                    message.publish_time, message.attributes, from_dead_letters=self._from_dead_letters
                )
            except InvalidMessage as invalid:
                outcomes[position] = DeadLetter(invalid.code, invalid.detail)
                continue
            version = source_id or message.message_id
            parsed.append((position, record, write_timestamp(first, version), version))
        return parsed


def _write_newest(
    parsed: Sequence[tuple[int, R, int, str]],
    key: Callable[[R], int],
    write: Callable[[list[tuple[R, int]]], list[StoreError | None]],
    outcomes: _Outcomes,
) -> None:
    """Write only the newest version of each row (`versions.newest_per_key`), as (record, write
    timestamp); every version of a row gets the outcome of the one written."""
    _, records, timestamps, versions = zip(*parsed, strict=True) if parsed else ((), (), (), ())
    chosen = newest_per_key([key(r) for r in records], timestamps, versions)
    written = sorted(set(chosen))
    errors = write([(records[i], timestamps[i]) for i in written])
    results = {i: APPLIED if error is None else _outcome(error) for i, error in zip(written, errors, strict=True)}
    for (position, *_), winner in zip(parsed, chosen, strict=True):
        outcomes[position] = results[winner]


class OrderHandler:
    """Insert each valid order's eight columns; invalid ones become dead letters. Of two versions
    of one order in a batch only the newer is written, and the older shares its outcome."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._parser = _Parser(from_dead_letters=False)

    def handle(self, batch: Sequence[Received]) -> list[Outcome]:
        outcomes = _Outcomes(len(batch))
        orders = self._parser.parse(batch, parse_order, outcomes)
        _write_newest(orders, lambda order: order.order_id, self._insert, outcomes)
        return outcomes.in_order()

    def _insert(self, orders: list[tuple[Order, int]]) -> list[StoreError | None]:
        return self._store.insert_orders([(order_values(order), timestamp) for order, timestamp in orders])


class PaymentHandler:
    """Set the payment columns of existing orders; a payment without its order is a dead letter.

    An UPDATE is an upsert in CQL, so the order's existence is read first: the pipeline never
    creates a payment-only row. Orders are never deleted, so an order seen once stays there.
    `from_dead_letters`: the payments come from the dead-letter topic (the replay), whose first
    publish time is trusted (`policy.event_time`).
    """

    def __init__(self, store: Store, *, from_dead_letters: bool = False) -> None:
        self._store = store
        self._parser = _Parser(from_dead_letters)

    def handle(self, batch: Sequence[Received]) -> list[Outcome]:
        outcomes = _Outcomes(len(batch))
        payments = self._parser.parse(batch, parse_payment, outcomes)
        if payments:
            self._apply(payments, outcomes)
        return outcomes.in_order()

    def _apply(self, payments: list[tuple[int, Payment, int, str]], outcomes: _Outcomes) -> None:
        found, failed = self._store.existing_orders([payment.order_id for _, payment, _, _ in payments])
        applicable: list[tuple[int, Payment, int, str]] = []
        for parsed in payments:
            position, payment, _, _ = parsed
            order_id = payment.order_id
            if order_id in failed:
                outcomes[position] = _outcome(failed[order_id])
            elif order_id in found:
                applicable.append(parsed)
            else:
                outcomes[position] = DeadLetter(ORDER_NOT_FOUND, f"order_id {order_id} does not exist")
        _write_newest(applicable, lambda payment: payment.order_id, self._update, outcomes)

    def _update(self, payments: list[tuple[Payment, int]]) -> list[StoreError | None]:
        return self._store.update_payments([(p.order_id, payment_values(p), timestamp) for p, timestamp in payments])


class ReplayHandler:
    """The payment path again, for dead-lettered payments: apply what can be applied now, and
    leave the rest in the dead-letter topic, deferred on a growing schedule (`replay_delay`).

    Nothing is republished on each try, so a dead letter keeps its data, attributes and first
    publish time. A dead letter that can never be applied (invalid) is only looked at once per
    longest deferral; one that fails unexpectedly is deferred like a missing order rather than
    nacked (the dead-letter subscriptions have no policy to cap a hot loop). A copy that has waited
    longer than `RENEW_AFTER` is dead-lettered again (republished, then acked), so Pub/Sub's
    retention never drops it unseen; the new copy keeps the first publish time.
    """

    def __init__(self, store: Store, now: Clock = utc_now) -> None:
        self._payments = PaymentHandler(store, from_dead_letters=True)
        self._now = now

    def handle(self, batch: Sequence[Received]) -> list[Outcome]:
        now = self._now()
        outcomes: list[Outcome] = []
        for message, outcome in zip(batch, self._payments.handle(batch), strict=True):
            if isinstance(outcome, DeadLetter) and outcome.code == WRITE_REFUSED:
                outcome = Fail(outcome.detail)  # it stays where it is, tried again on the schedule
            if isinstance(outcome, (Applied, Retry)):
                outcomes.append(outcome)
                continue
            first_published = waiting_since(message.publish_time, message.attributes)
            age = (now - first_published).total_seconds()
            # Retention counts from when this copy was published, not from the first publish time
            # (a renewed copy keeps that one, and must not be renewed again at once).
            if now - message.publish_time >= RENEW_AFTER:
                outcomes.append(_renewal(message, outcome))
            elif isinstance(outcome, DeadLetter) and outcome.code != ORDER_NOT_FOUND:
                outcomes.append(Defer(REPLAY_MAX_DELAY))  # invalid: it will never apply
            else:
                outcomes.append(Defer(replay_delay(age)))
        return outcomes


def _renewal(message: Received, outcome: Outcome) -> DeadLetter:
    """The dead letter that replaces an old one: the same reason, or the failure seen now."""
    if isinstance(outcome, DeadLetter):
        return outcome
    reason = outcome.reason if isinstance(outcome, Fail) else repr(outcome)
    code = message.attributes.get("error", "")
    return DeadLetter(code if code in REASONS else UNEXPECTED_FAILURE, reason)
