"""Publishing mock messages at a steady rate, or as fast as the batching publisher allows."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

from google.api_core import exceptions as google_exceptions
from google.cloud import pubsub_v1

from .metrics import ProducerMetrics
from .mockdata import MockData

__all__ = ["ORPHAN_ID_OFFSET", "ProducerStats", "order_messages", "payment_messages", "publish"]

log = logging.getLogger(__name__)

# Every `orphan_every`-th payment pays for an order this far ahead, one no producer has made
# yet: it is dead-lettered, until orders from `--start-id 1000000001` arrive and the replay heals it.
ORPHAN_ID_OFFSET = 1_000_000_000
# Refusals that hold for every message: publishing more would only fail the same way.
PERMANENT_ERRORS = (google_exceptions.NotFound, google_exceptions.PermissionDenied, google_exceptions.Unauthenticated)


@dataclass
class ProducerStats:
    submitted: int = 0
    published: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)
    metrics: ProducerMetrics | None = field(default=None, repr=False)
    fatal: google_exceptions.GoogleAPICallError | None = None  # the first refusal no retry can change
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def done(self, future: futures.Future[str]) -> None:
        error = future.exception()
        with self._lock:
            if error is None:
                self.published += 1
                if self.metrics is not None:
                    self.metrics.published.inc()
                return
            self.failed += 1
            failed = self.failed
            if self.metrics is not None:
                self.metrics.failures.inc()
            if isinstance(error, PERMANENT_ERRORS):
                self.fatal = self.fatal or error
                return  # one line says so, at the end
        if failed <= 10 or failed % 1000 == 0:
            log.error("publish failed (%d failures so far): %s", failed, error)

    def summary(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return (
            f"published={self.published} failed={self.failed} "
            f"unconfirmed={self.submitted - self.published - self.failed} "
            f"rate={self.published / elapsed:.0f} msg/s over {elapsed:.1f} s"
        )


def order_messages(mock: MockData, start_id: int) -> Iterator[bytes]:
    order_id = start_id
    while True:
        yield json.dumps(mock.order(order_id)).encode()
        order_id += 1


def payment_messages(mock: MockData, start_id: int, orphan_every: int) -> Iterator[bytes]:
    """Payment k pays order `start_id + k`; every `orphan_every`-th pays an order not made yet."""
    k = 0
    while True:
        order_id = start_id + k
        if orphan_every and (k + 1) % orphan_every == 0:
            order_id += ORPHAN_ID_OFFSET
        yield json.dumps(mock.payment(start_id + k, order_id)).encode()
        k += 1


def publish(
    publisher: pubsub_v1.PublisherClient,
    topic_path: str,
    messages: Iterator[bytes],
    *,
    count: int | None,
    rate: float,
    stop: threading.Event,
    report_every: float = 5.0,
    flush_timeout: float = 120.0,
    metrics: ProducerMetrics | None = None,
) -> ProducerStats:
    """Publish until `count` messages, or until `stop`; then flush and wait for confirmations.

    `rate` is messages per second (0: as fast as the publisher's batching and flow control allow).
    A refusal that holds for every message (`stats.fatal`: a missing topic, no permission) stops it.
    """
    stats = ProducerStats(metrics=metrics)
    next_report = stats.started + report_every
    for data in messages:
        if stop.is_set() or stats.fatal is not None or (count is not None and stats.submitted >= count):
            break
        if rate > 0:
            delay = stats.started + stats.submitted / rate - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
        future = publisher.publish(topic_path, data)
        stats.submitted += 1
        future.add_done_callback(stats.done)
        if time.monotonic() >= next_report:
            log.info("%s", stats.summary())
            next_report = time.monotonic() + report_every
    publisher.stop()  # sends every pending batch
    deadline = time.monotonic() + flush_timeout
    while stats.published + stats.failed < stats.submitted and time.monotonic() < deadline:
        time.sleep(0.05)
    return stats
