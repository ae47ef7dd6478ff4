"""Wiring: build the clients for one consumer, run it, and always close what was opened."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from enum import Enum

from .cassandra_io import FactStore, connect
from .config import CassandraSettings, ConsumerSettings, PubSubSettings
from .consumer import Consumer, ConsumerStats, default_dead_letter_attributes
from .errors import TransientStoreError
from .handlers import Handler, OrderHandler, PaymentHandler, ReplayHandler
from .policy import Backoff, DeadLetter, replay_attributes
from .pubsub_io import Received, connect_publisher, connect_subscriber

__all__ = ["Kind", "run_consumer", "connect_when_ready"]

log = logging.getLogger(__name__)


class Kind(Enum):
    ORDERS = "orders"
    PAYMENTS = "payments"
    REPLAY = "replay"


def connect_when_ready(settings: CassandraSettings, stop: threading.Event) -> FactStore | None:
    """Connect to Cassandra, waiting with backoff while it is unreachable; None if stopped first."""
    backoff = Backoff(initial=0.5, maximum=15.0)
    attempt = 0
    while not stop.is_set():
        try:
            return connect(settings)
        except TransientStoreError as exc:
            delay = backoff.delay(attempt)
            attempt += 1
            log.warning("Cassandra is not reachable (%s); retrying in %.1f s", exc, delay)
            stop.wait(delay)
    return None


def _replay_attributes(message: Received, reason: DeadLetter, subscription: str) -> dict[str, str]:
    return replay_attributes(
        default_dead_letter_attributes(message, reason, subscription), replayed_at=datetime.now(timezone.utc)
    )


def run_consumer(
    kind: Kind,
    pubsub: PubSubSettings,
    cassandra: CassandraSettings,
    settings: ConsumerSettings,
    stop: threading.Event,
    *,
    replay_interval: float = 300.0,
) -> ConsumerStats:
    """Consume `settings.subscription` until stopped (or idle), then close every client."""
    store = connect_when_ready(cassandra, stop)
    if store is None:
        return ConsumerStats()
    subscription = connect_subscriber(pubsub, settings.subscription)
    publisher = connect_publisher(max_latency=0.01)
    try:
        handler: Handler
        attributes_for = default_dead_letter_attributes
        if kind is Kind.ORDERS:
            handler = OrderHandler(store)
        elif kind is Kind.PAYMENTS:
            handler = PaymentHandler(store)
        else:
            handler = ReplayHandler(store, replay_interval)
            attributes_for = _replay_attributes
        consumer = Consumer(
            subscription, handler, publisher, pubsub.topic_path(settings.dead_letter_topic),
            settings, stop, attributes_for,
        )
        log.info("consuming %s, dead letters to %s", settings.subscription, settings.dead_letter_topic)
        stats = consumer.run()
    finally:
        publisher.stop()
        subscription.close()
        store.close()
    log.info("final: %s", stats.summary())
    return stats
