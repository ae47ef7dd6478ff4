"""The consumer loop: take a batch, let the handler decide, act on every outcome, repeat.

Delivery contract (at-least-once, idempotent effect):
- a message is acked only after its row write, or its dead-letter publish, has succeeded;
- transient failures are retried in place with exponential backoff, leases kept alive, for as
  long as it takes; nothing is dead-lettered or acked meanwhile;
- unexpected failures are nacked, so Pub/Sub redelivers them and the subscription's
  dead-letter policy moves a message that keeps failing to the dead-letter topic;
- memory is bounded: one batch of at most `batch_size` messages in flight, and at most twice
  that many pulled ahead by the prefetcher while it is written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from google.api_core import exceptions as google_exceptions
from google.cloud import pubsub_v1

from .config import ConsumerSettings
from .handlers import Handler
from .policy import Applied, Backoff, DeadLetter, Defer, Fail, Retry, dead_letter_attributes
from .pubsub_io import LeaseKeeper, Prefetcher, Received, SubscriptionClient, wait_all

__all__ = ["Consumer", "ConsumerStats", "AttributesFor", "default_dead_letter_attributes"]

log = logging.getLogger(__name__)

# Builds a dead letter's attributes from the message, its reason and the source subscription.
AttributesFor = Callable[[Received, DeadLetter, str], dict[str, str]]


def default_dead_letter_attributes(message: Received, reason: DeadLetter, subscription: str) -> dict[str, str]:
    return dead_letter_attributes(
        message.attributes,
        code=reason.code,
        detail=reason.detail,
        subscription=subscription,
        message_id=message.message_id,
        publish_time=message.publish_time,
        failed_at=datetime.now(timezone.utc),
    )


@dataclass
class ConsumerStats:
    received: int = 0
    applied: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)
    retried: int = 0
    nacked: int = 0
    deferred: int = 0
    first_received: float | None = None  # monotonic time of the first message
    last_settled: float | None = None  # monotonic time the last batch was settled
    # End-to-end latency of applied messages, publish time to row written and acked, in
    # seconds: the most recent 100,000, so memory stays bounded however long the run.
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))

    @classmethod
    def merge(cls, parts: Sequence[ConsumerStats]) -> ConsumerStats:
        """The stats of several worker processes as one: counts added, busy span from the first
        receive to the last settle of any of them (monotonic time is machine-wide on Linux)."""
        total = cls()
        for part in parts:
            total.received += part.received
            total.applied += part.applied
            total.dead_lettered.update(part.dead_lettered)
            total.retried += part.retried
            total.nacked += part.nacked
            total.deferred += part.deferred
            total.latencies.extend(part.latencies)
        total.first_received = min((p.first_received for p in parts if p.first_received is not None), default=None)
        total.last_settled = max((p.last_settled for p in parts if p.last_settled is not None), default=None)
        return total

    def latency_percentiles(self, *quantiles: float) -> list[float]:
        ordered = sorted(self.latencies)
        return [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in quantiles] if ordered else []

    def summary(self) -> str:
        """One line of counts; the rate is over the busy span, first receive to last settle."""
        busy = (self.last_settled - self.first_received) if self.first_received and self.last_settled else 0.0
        rate = self.received / busy if busy > 0 else 0.0
        dead = ", ".join(f"{code}={count}" for code, count in sorted(self.dead_lettered.items())) or "none"
        return (
            f"received={self.received} applied={self.applied} dead_lettered={sum(self.dead_lettered.values())} "
            f"({dead}) retried={self.retried} nacked={self.nacked} deferred={self.deferred} "
            f"rate={rate:.0f} msg/s over {busy:.2f} s busy{self._latency()}"
        )

    def _latency(self) -> str:
        if not self.latencies:
            return ""
        p50, p90, p99, top = self.latency_percentiles(0.5, 0.9, 0.99, 1.0)
        return f" latency_ms p50={p50 * 1e3:.0f} p90={p90 * 1e3:.0f} p99={p99 * 1e3:.0f} max={top * 1e3:.0f}"


class Consumer:
    """Runs one subscription through one handler until stopped or idle."""

    def __init__(
        self,
        subscription: SubscriptionClient,
        handler: Handler,
        publisher: pubsub_v1.PublisherClient,
        dead_letter_topic_path: str,
        settings: ConsumerSettings,
        stop: threading.Event,
        attributes_for: AttributesFor = default_dead_letter_attributes,
    ) -> None:
        self._subscription = subscription
        self._handler = handler
        self._publisher = publisher
        self._dead_letter_topic = dead_letter_topic_path
        self._settings = settings
        self._stop = stop
        self._attributes_for = attributes_for
        self._backoff = Backoff(settings.retry_initial, settings.retry_maximum)
        self._leases = LeaseKeeper(subscription, settings.ack_deadline)
        self.stats = ConsumerStats()

    def run(self) -> ConsumerStats:
        """Consume until the stop event is set or, with `exit_after_idle`, nothing came for that long."""
        idle_limit = self._settings.exit_after_idle
        pull_timeout = max(1.0, min(10.0, idle_limit or 10.0))
        prefetcher = Prefetcher(
            self._subscription, self._leases, pull_size=self._settings.batch_size,
            max_buffered=2 * self._settings.batch_size, pull_timeout=pull_timeout, retry_delay=self._backoff.delay,
        )
        last_activity = time.monotonic()
        next_report = last_activity + self._settings.stats_interval
        self._leases.start()
        prefetcher.start()
        try:
            while not self._stop.is_set():
                if idle_limit is not None and time.monotonic() - last_activity >= idle_limit:
                    log.info("no message for %.0f s, exiting", idle_limit)
                    break
                batch = prefetcher.take(self._settings.batch_size, min(pull_timeout, 1.0))
                if batch:
                    if self.stats.first_received is None:
                        self.stats.first_received = time.monotonic()
                    self.stats.received += len(batch)
                    deferred_before = self.stats.deferred
                    self._process(batch)
                    # Dead letters the replay only deferred again are not progress: they must
                    # not keep `--exit-after-idle` from ever firing.
                    self.stats.last_settled = time.monotonic()
                    if self.stats.deferred - deferred_before < len(batch):
                        last_activity = time.monotonic()
                if time.monotonic() >= next_report:
                    log.info("%s", self.stats.summary())
                    next_report = time.monotonic() + self._settings.stats_interval
        finally:
            unprocessed = prefetcher.stop()
            if unprocessed:
                log.info("stopping: handing %d pulled, unprocessed messages back to Pub/Sub", len(unprocessed))
                self._settle_nack(unprocessed, count=False)
            self._leases.stop()
        return self.stats

    def _process(self, batch: Sequence[Received]) -> None:
        """Settle every message of the batch: ack, dead-letter then ack, nack, defer, or retry."""
        pending: Sequence[Received] = batch
        attempt = 0
        while pending:
            try:
                outcomes = self._handler.handle(pending)
            except Exception:  # a bug must not stop the pipeline: nack, Pub/Sub caps the attempts
                log.exception("unexpected error while handling %d messages; nacking them", len(pending))
                self._settle_nack(pending)
                return
            pending = self._act(pending, outcomes)
            if not pending:
                return
            self.stats.retried += len(pending)
            if self._stop.is_set():
                log.info("stopping: handing %d unfinished messages back to Pub/Sub", len(pending))
                self._settle_nack(pending, count=False)
                return
            delay = self._backoff.delay(attempt)
            attempt += 1
            log.warning("%d messages hit a transient failure; retry %d in %.1f s", len(pending), attempt, delay)
            self._stop.wait(delay)

    def _act(self, batch: Sequence[Received], outcomes: Sequence[object]) -> list[Received]:
        """Carry out the outcomes; return the messages to retry."""
        to_ack: list[str] = []
        to_nack: list[Received] = []
        to_retry: list[Received] = []
        dead: list[tuple[Received, DeadLetter]] = []
        deferred: dict[int, list[str]] = {}
        for message, outcome in zip(batch, outcomes):
            if isinstance(outcome, Applied):
                to_ack.append(message.ack_id)
            elif isinstance(outcome, DeadLetter):
                dead.append((message, outcome))
            elif isinstance(outcome, Retry):
                to_retry.append(message)
            elif isinstance(outcome, Fail):
                log.error("message %s failed: %s", message.message_id, outcome.reason)
                to_nack.append(message)
            elif isinstance(outcome, Defer):
                deferred.setdefault(outcome.seconds, []).append(message.ack_id)
            else:
                raise TypeError(f"unknown outcome {outcome!r}")

        if dead:
            futures = [
                self._publisher.publish(
                    self._dead_letter_topic, message.data, **self._attributes_for(message, reason, self._subscription.name)
                )
                for message, reason in dead
            ]
            for (message, reason), error in zip(dead, wait_all(futures, timeout=120)):
                if error is None:
                    to_ack.append(message.ack_id)
                    self.stats.dead_lettered[reason.code] += 1
                elif isinstance(error, google_exceptions.InvalidArgument):
                    # Pub/Sub will never take this dead letter (e.g. too many attributes):
                    # nack it, and the subscription's dead-letter policy moves it as it is.
                    log.error("dead letter for %s refused, nacking: %s", message.message_id, error)
                    to_nack.append(message)
                else:
                    log.warning("dead-letter publish of %s failed, will retry: %s", message.message_id, error)
                    to_retry.append(message)

        applied = [m for m, o in zip(batch, outcomes) if isinstance(o, Applied)]
        self.stats.applied += len(applied)
        if to_ack:
            self._subscription.ack(to_ack)
            self._leases.release(to_ack)
            now = datetime.now(timezone.utc)
            self.stats.latencies.extend((now - m.publish_time).total_seconds() for m in applied)
        for seconds, ack_ids in deferred.items():
            self._subscription.modify_deadline(ack_ids, seconds)
            self._leases.release(ack_ids)
            self.stats.deferred += len(ack_ids)
        if to_nack:
            self._settle_nack(to_nack)
        return to_retry

    def _settle_nack(self, messages: Sequence[Received], count: bool = True) -> None:
        ack_ids = [m.ack_id for m in messages]
        self._subscription.nack(ack_ids)
        self._leases.release(ack_ids)
        if count:
            self.stats.nacked += len(ack_ids)
