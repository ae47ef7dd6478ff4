"""The consumer loop: take a batch, let the handler decide, settle every outcome, repeat.

Delivery contract (at-least-once, idempotent effect):
- a message is acked only after its row write, or its dead-letter publish, has succeeded;
- a service that is down (Cassandra, Pub/Sub) is waited for with exponential backoff, leases
  kept alive, for as long as it takes; nothing is dead-lettered or acked meanwhile;
- an unexpected failure of one message is nacked, so Pub/Sub redelivers it and the
  subscription's dead-letter policy moves a message that keeps failing to the dead-letter topic;
- what can never work for any message (a missing topic, refused credentials) raises
  `FatalError`: every held message is handed back and the consumer stops;
- memory is bounded: at most `batches_in_flight` batches of `batch_size` messages are written
  at once, and at most twice `batch_size` more are pulled ahead by the prefetcher.

Batches overlap: `batches_in_flight` batch workers each take a batch from the prefetcher, write it
and settle it on their own, so Cassandra always has the next batch's writes while one batch's
slowest write finishes. Each message is still acked only after its own write. The writes carry
their event time (`USING TIMESTAMP`), so the order in which batches finish does not matter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from .config import ConsumerSettings
from .errors import FatalError
from .handlers import Handler
from .metrics import ConsumerMetrics, Health
from .policy import Applied, Backoff, DeadLetter, Defer, Fail, Retry
from .pubsub_io import LeaseKeeper, Prefetcher, PubSubUnavailable, Received, Subscription

__all__ = ["Consumer", "ConsumerStats", "DeadLetterFor", "DeadLetters", "Settlement", "sort_outcomes"]

log = logging.getLogger(__name__)

PULL_TIMEOUT = 2.0  # seconds a pull waits when idle; bounds how long stopping takes
# Pulls under way at once: the emulator answers at most 100 messages a pull, and with one pull
# at a time the batch workers took 240-380 messages a batch on average here, with two 430-530.
PULLERS = 2


class DeadLetters(Protocol):
    """Where dead letters go (`pubsub_io.SyncPublisher`): per message None, or why Pub/Sub
    refused it for good; raises `PubSubUnavailable` or `FatalError` for the whole call."""

    def publish(self, messages: Sequence[tuple[bytes, Mapping[str, str]]]) -> list[str | None]: ...


# Builds a dead letter (data, attributes) from the message, its reason and the source subscription.
DeadLetterFor = Callable[[Received, DeadLetter, str], tuple[bytes, dict[str, str]]]


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


@dataclass
class Settlement:
    """What the outcomes of one batch ask for, message by message (see `sort_outcomes`)."""

    applied: list[Received] = field(default_factory=list)
    dead: list[tuple[Received, DeadLetter]] = field(default_factory=list)
    retry: list[Received] = field(default_factory=list)
    failed: list[tuple[Received, str]] = field(default_factory=list)
    deferred: dict[int, list[Received]] = field(default_factory=dict)


def sort_outcomes(batch: Sequence[Received], outcomes: Sequence[object]) -> Settlement:
    """Pair each message with its outcome; `ValueError` if the handler did not give one each."""
    if len(outcomes) != len(batch):
        raise ValueError(f"the handler returned {len(outcomes)} outcomes for {len(batch)} messages")
    settlement = Settlement()
    for message, outcome in zip(batch, outcomes, strict=True):
        if isinstance(outcome, Applied):
            settlement.applied.append(message)
        elif isinstance(outcome, DeadLetter):
            settlement.dead.append((message, outcome))
        elif isinstance(outcome, Retry):
            settlement.retry.append(message)
        elif isinstance(outcome, Fail):
            settlement.failed.append((message, outcome.reason))
        elif isinstance(outcome, Defer):
            settlement.deferred.setdefault(outcome.seconds, []).append(message)
        else:
            raise ValueError(f"unknown outcome {outcome!r}")
    return settlement


class Consumer:
    """Runs one subscription through one handler until stopped, idle, or fatally misconfigured."""

    def __init__(
        self,
        subscription: Subscription,
        handler: Handler,
        dead_letters: DeadLetters,
        settings: ConsumerSettings,
        stop: threading.Event,
        dead_letter_for: DeadLetterFor,
        *,
        lease_tick: float,
        leased_for: int = 0,
        metrics: ConsumerMetrics | None = None,
        health: Health | None = None,
        defer_refused: int | None = None,
    ) -> None:
        """`defer_refused`: seconds to defer a message whose dead letter Pub/Sub refuses for good,
        instead of nacking it; for a subscription with no dead-letter policy to cap redeliveries."""
        self._subscription = subscription
        self._defer_refused = defer_refused
        self._handler = handler
        self._dead_letters = dead_letters
        self._settings = settings
        self._stop = stop
        self._dead_letter_for = dead_letter_for
        self._backoff = Backoff(settings.retry_initial, settings.retry_maximum)
        self._leases = LeaseKeeper(subscription, settings.ack_deadline, lease_tick, leased_for=leased_for)
        # Deferred messages (ack id -> monotonic time the deferral ends): handed back at exit,
        # so nothing stays invisible after this consumer is gone.
        self._deferred: dict[str, float] = {}
        self._metrics = metrics
        self._health = health
        self.stats = ConsumerStats()
        self._lock = threading.Lock()  # the stats, the deferrals and the workers' state below
        self._halt = threading.Event()  # the workers stop: set on a stop request or a failure
        self._failure: BaseException | None = None  # what stopped a worker, raised by `run`
        self._busy = 0  # workers holding a batch
        self._last_activity = 0.0  # monotonic time of the last progress (idle exit)
        self._next_report = 0.0  # monotonic time of the next progress line
        self._rounds: dict[int, float] = {}  # each worker's last round (liveness: the oldest)

    def run(self) -> ConsumerStats:
        """Consume until the stop event is set or, with `exit_after_idle`, nothing came for that long.

        Raises `FatalError` (after handing every held message back) when nothing can work; an
        exception in a worker (a forced exit, a bug outside the handler) is raised here too.
        """
        idle_limit = self._settings.exit_after_idle
        pull_timeout = PULL_TIMEOUT if idle_limit is None else max(0.5, min(PULL_TIMEOUT, idle_limit))
        prefetcher = Prefetcher(
            self._subscription,
            self._leases,
            pull_size=self._settings.batch_size,
            max_buffered=2 * self._settings.batch_size,
            pull_timeout=pull_timeout,
            retry_delay=self._backoff.delay,
            on_pull=self._pulled,
            pullers=PULLERS,
        )
        workers = [
            threading.Thread(target=self._work, args=(i, prefetcher, min(pull_timeout, 0.5)), name=f"batch-{i}")
            for i in range(self._settings.batches_in_flight)
        ]
        self._last_activity = time.monotonic()
        self._next_report = self._last_activity + self._settings.stats_interval
        self._leases.start()
        prefetcher.start()
        for worker in workers:
            worker.daemon = True  # a forced exit does not wait for a write under way
            worker.start()
        forced = True
        try:
            while not self._halt.wait(0.1):
                if self._stop.is_set():
                    break
                if idle_limit is not None and self._idle_for() >= idle_limit:
                    log.info("no message for %.0f s, exiting", idle_limit)
                    break
            forced = False
        finally:
            self._halt.set()
            try:
                if not forced:  # each worker settles its batch, or hands it back if it was retrying
                    for worker in workers:
                        worker.join()  # a second signal interrupts this wait: forced after all
            finally:
                self._release_all(prefetcher)
        if self._failure is not None:
            raise self._failure
        return self.stats

    def _release_all(self, prefetcher: Prefetcher) -> None:
        """At exit, hand back everything still leased: what was deferred, what was pulled ahead
        or is in the batches of workers a forced exit did not wait for, and then what the pulls
        under way bring. Those are waited for (up to a pull's timeout), and a second signal may
        cut that wait short: everything held before it is handed back first, and after it too."""
        deferred = self._still_deferred()
        if deferred:
            log.info("stopping: handing %d deferred messages back to Pub/Sub", len(deferred))
            self._subscription.nack(deferred)
        self._hand_back_held()
        try:
            prefetcher.stop()
        finally:
            self._hand_back_held()
            self._leases.stop()

    def _hand_back_held(self) -> None:
        unsettled = self._leases.held()
        if unsettled:
            log.info("stopping: handing %d pulled, unsettled messages back to Pub/Sub", len(unsettled))
            self._hand_back_ids(unsettled)

    def _work(self, worker: int, prefetcher: Prefetcher, take_timeout: float) -> None:
        """One batch worker: take a batch, settle it, repeat until halted."""
        try:
            while not self._halt.is_set():
                self._round(worker)
                self._report()
                batch = prefetcher.take(self._settings.batch_size, take_timeout)
                if not batch:
                    continue
                with self._lock:
                    self._busy += 1
                    if self.stats.first_received is None:
                        self.stats.first_received = time.monotonic()
                self._count("received", len(batch))
                progressed = False
                try:
                    progressed = self._process(batch, worker)
                finally:
                    with self._lock:
                        self._busy -= 1
                        self.stats.last_settled = time.monotonic()
                        # Dead letters the replay only deferred again are not progress: they must
                        # not keep `--exit-after-idle` from ever firing.
                        if progressed:
                            self._last_activity = time.monotonic()
        except BaseException as exc:  # FatalError, a forced exit raised in a handler, a bug here
            with self._lock:
                if self._failure is None:
                    self._failure = exc
            self._halt.set()

    def _report(self) -> None:
        """The progress line, every `stats_interval`, written by whichever worker turns first:
        none while every worker is stuck in a write."""
        with self._lock:
            now = time.monotonic()
            if now < self._next_report:
                return
            self._next_report = now + self._settings.stats_interval
            line = self.stats.summary()
        log.info("%s", line)

    def _idle_for(self) -> float:
        """Seconds since the last progress; 0 while a worker holds a batch."""
        with self._lock:
            return 0.0 if self._busy else time.monotonic() - self._last_activity

    def _process(self, batch: Sequence[Received], worker: int) -> bool:
        """Settle every message of the batch; retry in place what failed transiently. True if
        anything but a deferral came of it (progress, for the idle exit).

        Whatever stops this early (a stop request during a retry, a `FatalError`, a forced exit)
        hands the messages not yet settled back to Pub/Sub: no lease is ever left held.
        """
        pending: Sequence[Received] = batch
        attempt = 0
        deferred = 0
        try:
            while pending:
                pending, deferred_now = self._attempt(pending)
                deferred += deferred_now
                if not pending:
                    break
                self._count("retried", len(pending))
                self._round(worker)
                if self._halt.is_set() or self._stop.is_set():
                    log.info("stopping: handing %d unfinished messages back to Pub/Sub", len(pending))
                    break
                delay = self._backoff.delay(attempt)
                attempt += 1
                log.warning("%d messages hit a transient failure; retry %d in %.1f s", len(pending), attempt, delay)
                self._halt.wait(delay)
        finally:
            if pending:
                self._hand_back(pending)
        return deferred < len(batch)

    def _attempt(self, batch: Sequence[Received]) -> tuple[list[Received], int]:
        """Handle the batch once and settle what can be settled: the messages to retry, and how
        many were deferred."""
        try:
            settlement = sort_outcomes(batch, self._handler.handle(batch))
        except FatalError:
            raise
        except Exception:  # a bug must not stop the pipeline: nack, Pub/Sub caps the attempts
            log.exception("unexpected error while handling %d messages; nacking them", len(batch))
            self._nack(batch)
            return [], 0
        # Dead letters first: the only step that can fail; nothing is settled before it.
        published, refused, unpublished = self._publish_dead_letters(settlement.dead)
        self._ack(settlement.applied, published)
        for seconds, messages in settlement.deferred.items():
            self._defer(messages, seconds)
        for message, reason in settlement.failed:
            log.error("message %s failed: %s", message.message_id, reason)
        deferred = sum(len(m) for m in settlement.deferred.values())
        if self._defer_refused is not None and refused:
            self._defer(refused, self._defer_refused)
            deferred, refused = deferred + len(refused), []
        self._nack([message for message, _ in settlement.failed] + refused)
        if self._health is not None:  # readiness: a transient store failure means Cassandra is not
            self._health.set_ready(cassandra=not settlement.retry, pubsub=not unpublished if settlement.dead else None)
        return settlement.retry + unpublished, deferred

    def _publish_dead_letters(
        self, dead: list[tuple[Received, DeadLetter]]
    ) -> tuple[list[tuple[Received, DeadLetter]], list[Received], list[Received]]:
        """Publish the dead letters: (published, refused for good, to retry)."""
        if not dead:
            return [], [], []
        letters = [self._dead_letter_for(message, reason, self._subscription.name) for message, reason in dead]
        try:
            refusals = self._dead_letters.publish(letters)
        except PubSubUnavailable as exc:
            log.warning("dead-letter publish of %d messages failed, will retry: %s", len(dead), exc)
            return [], [], [message for message, _ in dead]
        published: list[tuple[Received, DeadLetter]] = []
        refused: list[Received] = []
        for (message, reason), refusal in zip(dead, refusals, strict=True):
            if refusal is None:
                published.append((message, reason))
            else:
                # Pub/Sub will never take this dead letter (e.g. too many attributes): nack it,
                # and the subscription's dead-letter policy moves it as it is.
                log.error("dead letter for %s refused, nacking: %s", message.message_id, refusal)
                refused.append(message)
        return published, refused, []

    # Each settle step releases the leases first: once `release` returns, the lease keeper will
    # not extend these messages again, so its extension cannot undo a nack or a deferral.

    def _ack(self, applied: list[Received], dead_lettered: list[tuple[Received, DeadLetter]]) -> None:
        ack_ids = [m.ack_id for m in applied] + [m.ack_id for m, _ in dead_lettered]
        if not ack_ids:
            return
        self._leases.release(ack_ids)
        self._subscription.ack(ack_ids)
        self._count("applied", len(applied))
        now = datetime.now(UTC)
        latencies = [(now - m.publish_time).total_seconds() for m in applied]
        with self._lock:
            self.stats.dead_lettered.update(reason.code for _, reason in dead_lettered)
            self.stats.latencies.extend(latencies)
        if self._metrics is not None:
            for _, reason in dead_lettered:
                self._metrics.count("dead_lettered")
                self._metrics.dead_lettered(reason.code)
            if applied:
                self._metrics.applied(latencies)

    def _defer(self, messages: list[Received], seconds: int) -> None:
        ack_ids = [m.ack_id for m in messages]
        self._leases.release(ack_ids)
        self._subscription.modify_deadline(ack_ids, seconds)
        self._still_deferred()  # forget the deferrals that have ended: bounded by the backlog
        until = time.monotonic() + seconds
        with self._lock:
            self._deferred.update((ack_id, until) for ack_id in ack_ids)
        self._count("deferred", len(ack_ids))

    def _nack(self, messages: Sequence[Received]) -> None:
        """A failure of these messages: redelivered by Pub/Sub, which counts the attempts."""
        if messages:
            self._hand_back(messages)
            self._count("nacked", len(messages))

    def _count(self, outcome: str, amount: int) -> None:
        """One place for the counts of the summary line and of the metrics, so they agree."""
        with self._lock:
            setattr(self.stats, outcome, getattr(self.stats, outcome) + amount)
        if self._metrics is not None:
            self._metrics.count(outcome, amount)

    def _round(self, worker: int) -> None:
        """This worker is alive; the liveness probe sees the worker that has gone longest
        without a round. The in-flight gauge: what the consumer holds."""
        if self._health is not None:
            with self._lock:
                self._rounds[worker] = time.monotonic()
                oldest = min(self._rounds.values())
            self._health.round(at=oldest)
        if self._metrics is not None:
            self._metrics.in_flight.set(len(self._leases.held()))

    def _pulled(self, ok: bool) -> None:
        if self._health is not None:
            self._health.set_ready(pubsub=ok)

    def _still_deferred(self) -> list[str]:
        """The ack ids whose deferral has not ended yet (the others are forgotten)."""
        now = time.monotonic()
        with self._lock:
            self._deferred = {ack_id: until for ack_id, until in self._deferred.items() if until > now}
            return list(self._deferred)

    def _hand_back(self, messages: Sequence[Received]) -> None:
        """Give messages back to Pub/Sub for immediate redelivery (not counted as a failure)."""
        self._hand_back_ids([m.ack_id for m in messages])

    def _hand_back_ids(self, ack_ids: Collection[str]) -> None:
        self._leases.release(ack_ids)
        self._subscription.nack(list(ack_ids))
