"""The consumer loop: take a batch, let the handler decide, settle every outcome, repeat.

Delivery contract (at-least-once, idempotent effect):
- a message is acked only after its row write, or its dead-letter publish, has succeeded;
- a service that is down (Cassandra, Pub/Sub) is waited for with exponential backoff, leases
  kept alive, for as long as it takes; nothing is dead-lettered or acked meanwhile;
- a stop (SIGTERM, Ctrl-C, idle exit) pulls no more and settles what is already held within
  `stop_grace` seconds (retrying through an outage meanwhile); only what it could not settle
  is handed back;
- Pub/Sub counts every hand-back (and every lease that runs out) as a delivery attempt, and the
  subscription's dead-letter policy moves a message after `max_delivery_attempts` of them, raw,
  with no reason. The policy is only a backstop: a message this consumer would hand back or nack
  at its last attempts (`last_chance`) is dead-lettered here instead, with its reason
  (`delivery_attempts_exhausted` and the last error seen);
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
from .handlers import ATTEMPTS_EXHAUSTED, Handler
from .metrics import ConsumerMetrics, Health
from .policy import Applied, Backoff, DeadLetter, Defer, Fail, Retry
from .pubsub_io import LeaseKeeper, PartlyPublished, Prefetcher, PubSubUnavailable, Received, Subscription

__all__ = [
    "Consumer",
    "ConsumerStats",
    "DeadLetterFor",
    "DeadLetters",
    "Settlement",
    "last_chance",
    "sort_outcomes",
]

log = logging.getLogger(__name__)

PULL_TIMEOUT = 2.0  # seconds a pull waits when idle; bounds how long stopping takes
# Pulls under way at once: the emulator answers at most 100 messages a pull, and with one pull
# at a time the batch workers took 240-380 messages a batch on average here, with two 430-530.
PULLERS = 2


def last_chance(max_delivery_attempts: int | None) -> int | None:
    """The delivery attempt from which a message is dead-lettered here rather than handed back
    (None: the subscription has no dead-letter policy, nothing to get ahead of).

    Pub/Sub's count is best effort, so a tenth of the limit (at least one attempt) is kept in
    hand: with the 100 attempts `make setup` sets, attempts 90 to 100.
    """
    if not max_delivery_attempts:
        return None
    return max(1, max_delivery_attempts - max(1, max_delivery_attempts // 10))


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
        max_delivery_attempts: int | None = None,
        metrics: ConsumerMetrics | None = None,
        health: Health | None = None,
        defer_refused: int | None = None,
    ) -> None:
        """`max_delivery_attempts`: the subscription's dead-letter policy (None: it has none).
        `defer_refused`: seconds to defer a message whose dead letter Pub/Sub refuses for good,
        instead of nacking it; for a subscription with no dead-letter policy to cap redeliveries."""
        self._subscription = subscription
        self._defer_refused = defer_refused
        self._handler = handler
        self._dead_letters = dead_letters
        self._settings = settings
        self._stop = stop
        self._dead_letter_for = dead_letter_for
        self._max_attempts = max_delivery_attempts
        self._last_chance = last_chance(max_delivery_attempts)
        self._backoff = Backoff(settings.retry_initial, settings.retry_maximum)
        self._leases = LeaseKeeper(subscription, settings.ack_deadline, lease_tick, leased_for=leased_for)
        # Deferred messages (ack id -> (monotonic time the deferral ends, when the message was
        # published)): handed back at exit, so nothing stays invisible after this consumer is gone.
        self._deferred: dict[str, tuple[float, datetime]] = {}
        self._metrics = metrics
        self._health = health
        self.stats = ConsumerStats()
        self._lock = threading.Lock()  # the stats, the deferrals and the workers' state below
        self._draining = threading.Event()  # a stop: pull no more, settle what is held
        self._halt = threading.Event()  # the workers stop: the grace period is over, or a failure
        self._failure: BaseException | None = None  # what stopped a worker, raised by `run`
        self._busy = 0  # workers holding a batch
        self._last_activity = 0.0  # monotonic time of the last progress (idle exit)
        self._next_report = 0.0  # monotonic time of the next progress line
        self._rounds: dict[int, float] = {}  # each worker's last round (liveness: the oldest)

    def run(self) -> ConsumerStats:
        """Consume until the stop event is set or, with `exit_after_idle`, nothing came for that long.

        Then pull no more, and settle what was pulled within `stop_grace` seconds; hand back
        only what is left. Raises `FatalError` (after handing every held message back) when
        nothing can work; an exception in a worker (a forced exit, a bug outside the handler) is
        raised here too.
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
        try:
            while not self._halt.wait(0.1):
                if self._stop.is_set():
                    break
                if idle_limit is not None and self._idle_for() >= idle_limit:
                    log.info("no message for %.0f s, exiting", idle_limit)
                    break
            self._drain(prefetcher, workers)  # a second signal interrupts this: forced after all
        finally:
            self._halt.set()
            self._release_all(prefetcher)
        if self._failure is not None:
            raise self._failure
        return self.stats

    def _drain(self, prefetcher: Prefetcher, workers: Sequence[threading.Thread]) -> None:
        """Pull no more; let the workers settle what is held until the grace period ends (they
        hand back what they are still retrying then), and wait for them."""
        self._draining.set()
        prefetcher.close()
        grace = self._settings.stop_grace
        if not self._halt.is_set() and self._leases.held():
            log.info("stopping: settling %d held messages within %.0f s", len(self._leases.held()), grace)
        deadline = time.monotonic() + grace
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        self._halt.set()
        for worker in workers:
            worker.join()

    def _release_all(self, prefetcher: Prefetcher) -> None:
        """At exit, hand back everything still leased: what was deferred, what was pulled ahead
        or is in the batches of workers a forced exit did not wait for, and then what the pulls
        under way bring. Each step runs whatever the one before it raised (a forced exit during
        a hand-back still hands back the rest); the first exception is raised at the end."""
        first: BaseException | None = None
        for step in (self._hand_back_deferred, self._hand_back_held, prefetcher.stop, self._hand_back_held):
            try:
                step()
            except BaseException as exc:  # a forced exit (KeyboardInterrupt) included
                first = first or exc
        self._leases.stop()
        if first is not None:
            raise first

    def _hand_back_deferred(self) -> None:
        deferred = self._still_deferred()
        if deferred:
            log.info("stopping: handing %d deferred messages back to Pub/Sub", len(deferred))
            self._subscription.nack(deferred)

    def _hand_back_held(self) -> None:
        unsettled = self._leases.held()
        if unsettled:
            log.info("stopping: handing %d pulled, unsettled messages back to Pub/Sub", len(unsettled))
            self._hand_back_ids(unsettled)

    def _work(self, worker: int, prefetcher: Prefetcher, take_timeout: float) -> None:
        """One batch worker: take a batch, settle it, repeat until halted, or drained at a stop."""
        try:
            while not self._halt.is_set():
                self._round(worker)
                self._report()
                batch = prefetcher.take(self._settings.batch_size, take_timeout)
                if not batch:
                    if self._draining.is_set() and prefetcher.drained():
                        return
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

        Retries go on through a stop until its grace period ends; then what is still unsettled
        is given up (`_give_up`). Whatever else stops this early (a `FatalError`, a forced exit)
        hands the messages not yet settled back to Pub/Sub: no lease is ever left held.
        """
        pending: Sequence[Received] = batch
        attempt = 0
        deferred = 0
        last_error = ""
        try:
            while pending:
                pending, deferred_now, last_error = self._attempt(pending)
                deferred += deferred_now
                if not pending:
                    break
                self._count("retried", len(pending))
                self._round(worker)
                if self._halt.is_set():
                    break
                delay = self._backoff.delay(attempt)
                attempt += 1
                log.warning("%d messages hit a transient failure; retry %d in %.1f s", len(pending), attempt, delay)
                if self._halt.wait(delay):
                    break
        except BaseException:
            if pending:
                self._hand_back(pending)
            raise
        if pending:
            log.info("stopping: %d unfinished messages", len(pending))
            self._give_up(pending, last_error)
        return deferred < len(batch)

    def _attempt(self, batch: Sequence[Received]) -> tuple[list[Received], int, str]:
        """Handle the batch once and settle what can be settled: the messages to retry, how many
        were deferred, and the last transient error."""
        try:
            outcomes = self._handler.handle(batch)
            settlement = sort_outcomes(batch, outcomes)
        except FatalError:
            raise
        except Exception as exc:  # a bug must not stop the pipeline: nack, Pub/Sub caps the attempts
            log.exception("unexpected error while handling %d messages; nacking them", len(batch))
            self._nack([(message, f"unexpected error: {exc!r}") for message in batch])
            return [], 0, ""
        # Dead letters first: the only step that can fail; nothing is settled before it.
        published, refused, unpublished = self._publish_dead_letters(settlement.dead)
        self._ack(settlement.applied, published)
        for seconds, messages in settlement.deferred.items():
            self._defer(messages, seconds)
        for message, reason in settlement.failed:
            log.error("message %s failed: %s", message.message_id, reason)
        deferred = sum(len(m) for m in settlement.deferred.values())
        if self._defer_refused is not None and refused:
            self._defer([message for message, _ in refused], self._defer_refused)
            deferred, refused = deferred + len(refused), []
        self._nack(settlement.failed, dead_letter_last_chance=True)
        self._nack(refused, dead_letter_last_chance=False)  # Pub/Sub would refuse another one too
        if self._health is not None:  # readiness: a transient store failure means Cassandra is not
            self._health.set_ready(cassandra=not settlement.retry, pubsub=not unpublished if settlement.dead else None)
        last_error = next((r.reason for r in outcomes if isinstance(r, Retry)), "dead-letter publish failed")
        return settlement.retry + unpublished, deferred, last_error

    def _publish_dead_letters(
        self, dead: list[tuple[Received, DeadLetter]]
    ) -> tuple[list[tuple[Received, DeadLetter]], list[tuple[Received, str]], list[Received]]:
        """Publish the dead letters: (published, refused for good with why, to retry)."""
        if not dead:
            return [], [], []
        letters = [self._dead_letter_for(message, reason, self._subscription.name) for message, reason in dead]
        try:
            refusals = self._dead_letters.publish(letters)
        except PartlyPublished as exc:  # the rest is retried; what went out is not sent again
            log.warning("dead-letter publish failed part-way, will retry %d: %s", len(dead) - len(exc.published), exc)
            refusals = [None if p in exc.published else exc.refusals.get(p, "") for p in range(len(dead))]
        except PubSubUnavailable as exc:
            log.warning("dead-letter publish of %d messages failed, will retry: %s", len(dead), exc)
            return [], [], [message for message, _ in dead]
        published: list[tuple[Received, DeadLetter]] = []
        refused: list[tuple[Received, str]] = []
        unpublished: list[Received] = []
        for (message, reason), refusal in zip(dead, refusals, strict=True):
            if refusal is None:
                published.append((message, reason))
            elif not refusal:
                unpublished.append(message)
            else:
                # Pub/Sub will never take this dead letter (e.g. too many attributes): nack it,
                # and the subscription's dead-letter policy moves it as it is.
                log.error("dead letter for %s refused, nacking: %s", message.message_id, refusal)
                refused.append((message, refusal))
        return published, refused, unpublished

    def _give_up(self, messages: Sequence[Received], why: str) -> None:
        """What could not be settled before a stop: handed back, but for the messages at their
        last chance, which are dead-lettered here (a hand-back would let the policy move them)."""
        dead = self._at_last_chance(messages, why)
        if dead:
            try:
                published, _, _ = self._publish_dead_letters(dead)
            except FatalError as exc:
                log.error("could not dead-letter %d messages at their last attempts: %s", len(dead), exc)
                published = []
            self._ack([], published)
            settled = {message.ack_id for message, _ in published}
            messages = [m for m in messages if m.ack_id not in settled]
        if messages:
            self._hand_back(messages)

    def _at_last_chance(self, messages: Sequence[Received], why: str) -> list[tuple[Received, DeadLetter]]:
        limit = self._last_chance
        if limit is None:
            return []
        return [
            (m, DeadLetter(ATTEMPTS_EXHAUSTED, f"delivery attempt {m.delivery_attempt} of {self._max_attempts}: {why}"))
            for m in messages
            if m.delivery_attempt >= limit
        ]

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
            self._deferred.update((m.ack_id, (until, m.publish_time)) for m in messages)
        self._count("deferred", len(ack_ids))

    def _nack(self, failed: Sequence[tuple[Received, str]], *, dead_letter_last_chance: bool = True) -> None:
        """A failure of these messages: redelivered by Pub/Sub, which counts the attempts; those
        at their last chance are dead-lettered here instead, with the failure as their reason."""
        if not failed:
            return
        dead: list[tuple[Received, DeadLetter]] = []
        if dead_letter_last_chance and self._last_chance is not None:
            for message, why in failed:
                dead += self._at_last_chance([message], why)
        published: list[tuple[Received, DeadLetter]] = []
        if dead:
            published, _, _ = self._publish_dead_letters(dead)
            self._ack([], published)
        settled = {message.ack_id for message, _ in published}
        rest = [message for message, _ in failed if message.ack_id not in settled]
        if rest:
            self._hand_back(rest)
            self._count("nacked", len(rest))

    def _count(self, outcome: str, amount: int) -> None:
        """One place for the counts of the summary line and of the metrics, so they agree."""
        with self._lock:
            setattr(self.stats, outcome, getattr(self.stats, outcome) + amount)
        if self._metrics is not None:
            self._metrics.count(outcome, amount)

    def _round(self, worker: int) -> None:
        """This worker is alive; the liveness probe sees the worker that has gone longest
        without a round. The in-flight and deferral gauges: what the consumer holds."""
        if self._health is not None:
            with self._lock:
                self._rounds[worker] = time.monotonic()
                oldest = min(self._rounds.values())
            self._health.round(at=oldest)
        if self._metrics is not None:
            self._metrics.in_flight.set(len(self._leases.held()))
            count, published = self._deferral_state()
            self._metrics.deferred.set(count)
            age = (datetime.now(UTC) - published).total_seconds() if published is not None else 0.0
            self._metrics.oldest_deferred_age.set(max(0.0, age))

    def _pulled(self, ok: bool) -> None:
        if self._health is not None:
            self._health.set_ready(pubsub=ok)

    def _still_deferred(self) -> list[str]:
        """The ack ids whose deferral has not ended yet (the others are forgotten)."""
        now = time.monotonic()
        with self._lock:
            self._deferred = {ack_id: entry for ack_id, entry in self._deferred.items() if entry[0] > now}
            return list(self._deferred)

    def _deferral_state(self) -> tuple[int, datetime | None]:
        """How many messages are deferred now, and the publish time of the oldest of them."""
        now = time.monotonic()
        with self._lock:
            waiting = [published for until, published in self._deferred.values() if until > now]
        return len(waiting), min(waiting, default=None)

    def _hand_back(self, messages: Sequence[Received]) -> None:
        """Give messages back to Pub/Sub for immediate redelivery (not counted as a failure)."""
        self._hand_back_ids([m.ack_id for m in messages])

    def _hand_back_ids(self, ack_ids: Collection[str]) -> None:
        self._leases.release(ack_ids)
        self._subscription.nack(list(ack_ids))
