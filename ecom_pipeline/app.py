"""Wiring: check and connect what one consumer needs, run it, and always close what was opened."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import TypeVar

from .cassandra_io import connect
from .config import CassandraSettings, ConsumerSettings, PubSubSettings
from .consumer import Consumer, ConsumerStats, DeadLetterFor
from .errors import ServiceUnavailable, StoreError
from .handlers import (
    ATTEMPTS_EXHAUSTED,
    ORDER_NOT_FOUND,
    UNEXPECTED_FAILURE,
    WRITE_REFUSED,
    Handler,
    OrderHandler,
    PaymentHandler,
    ReplayHandler,
    Store,
)
from .metrics import ConsumerMetrics
from .policy import REPLAY_MAX_DELAY, Backoff, DeadLetter, dead_letter_attributes, redact_dead_letter
from .probes import Health
from .pubsub_io import Received, SubscriptionPolicy, connect_subscriber, connect_sync_publisher

__all__ = ["Kind", "run_consumer", "wait_until_ready"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class Kind(Enum):
    ORDERS = "orders"
    PAYMENTS = "payments"
    REPLAY = "replay"


def wait_until_ready(
    attempt: Callable[[], T], stop: threading.Event, service: str, alive: Callable[[], None] | None = None
) -> T | None:
    """`attempt()`, again with backoff while the service is unavailable; None if stopped first.

    One log line per retry, with the reason. Errors that waiting cannot fix are raised.
    `alive` is called before each attempt (waiting is not being stuck).
    """
    backoff = Backoff(initial=0.5, maximum=15.0)
    failures = 0
    while not stop.is_set():
        if alive is not None:
            alive()
        try:
            return attempt()
        except ServiceUnavailable as exc:
            delay = backoff.delay(failures)
            failures += 1
            log.warning("%s is not reachable (%s); retrying in %.1f s", service, exc, delay)
            stop.wait(delay)
    return None


def _dead_letter_for(kind: Kind) -> DeadLetterFor:
    """How a dead letter is built: on the replay's dead-letter subscription, its first source is kept."""

    def build(message: Received, reason: DeadLetter, subscription: str) -> tuple[bytes, dict[str, str]]:
        attributes = dead_letter_attributes(
            message.attributes,
            code=reason.code,
            detail=reason.detail,
            subscription=subscription,
            message_id=message.message_id,
            publish_time=message.publish_time,
            failed_at=datetime.now(UTC),
            from_dead_letters=kind is Kind.REPLAY,
        )
        # Dead-lettered for what happened to it, not for what it is: a valid payment the replay
        # applies later, or an order an operator requeues. Its ids and date are kept.
        applicable = reason.code in (ORDER_NOT_FOUND, WRITE_REFUSED, ATTEMPTS_EXHAUSTED, UNEXPECTED_FAILURE)
        return redact_dead_letter(message.data, attributes, applicable=applicable)

    return build


SCRIPTS = {
    Kind.ORDERS: "order_data_consumer",
    Kind.PAYMENTS: "ingest_in_fact_table",
    Kind.REPLAY: "replay_dlq_payments",
}


class TimedStore:
    """A `Store` whose write calls are timed into `ecom_pipeline_write_seconds`."""

    def __init__(self, store: Store, metrics: ConsumerMetrics) -> None:
        self._store = store
        self._seconds = metrics.write_seconds

    def insert_orders(self, rows: Sequence[tuple[tuple[object, ...], int]]) -> list[StoreError | None]:
        with self._seconds.time():
            return self._store.insert_orders(rows)

    def existing_orders(self, order_ids: Sequence[int]) -> tuple[set[int], dict[int, StoreError]]:
        return self._store.existing_orders(order_ids)

    def update_payments(self, rows: Sequence[tuple[int, tuple[object, ...], int]]) -> list[StoreError | None]:
        with self._seconds.time():
            return self._store.update_payments(rows)


def run_consumer(
    kind: Kind,
    pubsub: PubSubSettings,
    cassandra: CassandraSettings,
    settings: ConsumerSettings,
    stop: threading.Event,
    *,
    metrics: ConsumerMetrics | None = None,
    health: Health | None = None,
) -> ConsumerStats:
    """Consume `settings.subscription` until stopped (or idle), then close every client.

    Checks first what can be checked: the subscription and the dead-letter topic exist, the
    keyspace and table exist and the consistency level can be met. Raises `FatalError` with
    one line naming the problem; waits while a service is unreachable. `metrics` and `health`,
    when given, are kept up to date for the metrics endpoint and its probes.
    """
    subscription = connect_subscriber(pubsub, settings.subscription)
    dead_letters = connect_sync_publisher(pubsub, settings.dead_letter_topic)
    store = None
    try:

        def check_pubsub() -> SubscriptionPolicy:
            policy = subscription.policy()
            dead_letters.check()
            return policy

        alive = health.round if health is not None else None
        policy = wait_until_ready(check_pubsub, stop, "Pub/Sub", alive)
        if policy is None:
            return ConsumerStats()
        subscription_deadline = policy.ack_deadline
        store = wait_until_ready(lambda: connect(cassandra, reads=kind is not Kind.ORDERS), stop, "Cassandra", alive)
        if store is None:
            return ConsumerStats()
        if health is not None:
            health.cassandra_up = store.reachable
            health.set_ready(pubsub=True, cassandra=True)
        timed: Store = store if metrics is None else TimedStore(store, metrics)
        handler: Handler
        if kind is Kind.ORDERS:
            handler = OrderHandler(timed)
        elif kind is Kind.PAYMENTS:
            handler = PaymentHandler(timed)
        else:
            handler = ReplayHandler(timed)
        # Extend leases well within the shorter of our deadline and the subscription's own.
        lease_tick = min(settings.ack_deadline, subscription_deadline) / 3
        consumer = Consumer(
            subscription,
            handler,
            dead_letters,
            settings,
            stop,
            _dead_letter_for(kind),
            lease_tick=lease_tick,
            leased_for=subscription_deadline,
            max_delivery_attempts=policy.max_delivery_attempts,
            metrics=metrics,
            health=health,
            # The dead-letter subscription has no dead-letter policy: a nack would come back at once.
            defer_refused=REPLAY_MAX_DELAY if kind is Kind.REPLAY else None,
        )
        log.info("consuming %s, dead letters to %s", settings.subscription, settings.dead_letter_topic)
        stats = consumer.run()
    finally:
        dead_letters.close()
        subscription.close()
        if store is not None:
            store.close()
    log.info("final: %s", stats.summary())
    return stats
