"""The loop: batch worker threads, the stop and its grace period, the idle exit, the shutdown order.

Each batch worker takes a batch from the prefetcher (`flow.py`), lets the handler decide one
outcome per message, has the settlement carry them out (`settlement.py`), and retries in place
what failed transiently, with backoff, for as long as the outage lasts. Batches overlap:
Cassandra always has the next batch's writes while one batch's slowest write finishes; each
message is still acked only after its own write, and every write carries its version's
timestamp, so the order in which batches finish does not matter.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from ..config import ConsumerSettings
from ..errors import FatalError
from ..handlers import Handler
from ..metrics import ConsumerMetrics
from ..policy import Backoff
from ..probes import Health
from ..pubsub_io import Received, Subscription
from .deferrals import Deferrals
from .flow import Prefetcher
from .leases import LeaseKeeper
from .settlement import DeadLetterFor, DeadLetters, Settler, Unsettled, sort_outcomes
from .stats import ConsumerStats
from .telemetry import Fanout, HealthTelemetry, MetricsTelemetry, StatsTelemetry, Telemetry

__all__ = ["PULLERS", "PULL_TIMEOUT", "Consumer"]

log = logging.getLogger(__name__)

PULL_TIMEOUT = 2.0  # seconds a pull waits when idle; bounds how long stopping takes
# Pulls under way at once: the emulator answers at most 100 messages a pull, and with one pull
# at a time the batch workers took 240-380 messages a batch on average here, with two 430-530.
PULLERS = 2
YOUNG_COLLECTION_EVERY = 20_000  # new objects between the garbage collector's young collections


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
        `defer_refused`: see `Settler`. `metrics` and `health`, when given, are kept up to date."""
        self._subscription = subscription
        self._handler = handler
        self._settings = settings
        self._stop = stop
        self._backoff = Backoff(settings.retry_initial, settings.retry_maximum)
        self._leases = LeaseKeeper(subscription, settings.ack_deadline, lease_tick, leased_for=leased_for)
        self._deferrals = Deferrals()
        self._stats = StatsTelemetry()
        parts: list[Telemetry] = [self._stats]
        if metrics is not None:
            parts.append(MetricsTelemetry(metrics))
        if health is not None:
            parts.append(HealthTelemetry(health))
        self._telemetry = Fanout(*parts)
        self._settler = Settler(
            subscription,
            dead_letters,
            dead_letter_for,
            self._leases,
            self._deferrals,
            self._telemetry,
            max_delivery_attempts=max_delivery_attempts,
            defer_refused=defer_refused,
        )
        self._lock = threading.Lock()  # the workers' state below
        self._draining = threading.Event()  # a stop: pull no more, settle what is held
        self._halt = threading.Event()  # the workers stop: the grace period is over, or a failure
        self._failure: BaseException | None = None  # what stopped a worker, raised by `run`
        self._busy = 0  # workers holding a batch
        self._last_activity = 0.0  # monotonic time of the last progress (idle exit)
        self._next_report = 0.0  # monotonic time of the next progress line
        self._rounds: dict[int, float] = {}  # each worker's last round (liveness: the oldest)

    @property
    def stats(self) -> ConsumerStats:
        return self._stats.stats

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
            on_pull=lambda ok: self._telemetry.reachable(pubsub=ok),
            pullers=PULLERS,
        )
        workers = [
            threading.Thread(target=self._work, args=(i, prefetcher, min(pull_timeout, 0.5)), name=f"batch-{i}")
            for i in range(self._settings.batches_in_flight)
        ]
        # What start-up allocated (modules, clients, the driver's metadata: some 86,000 objects)
        # lives as long as the process. Frozen, the collector's full collections scan only what
        # the run allocates (the driver's garbage cycles are collected as before): in a drain of
        # 50,000 orders they took 0.17-0.21 CPU-s instead of 0.44-0.60. Unfrozen when the run ends.
        gc.freeze()
        # Thousands of messages are in flight at once, so a young collection every 700 new
        # objects (the default) mostly rescans the same live batches and promotes them, which
        # then costs older collections too: collecting every 20,000, the same drain spent 0.25-0.34
        # CPU-s in the collector instead of 0.49-0.56 (a collection pauses for ~15 ms, not ~0.1).
        thresholds = gc.get_threshold()
        gc.set_threshold(YOUNG_COLLECTION_EVERY, *thresholds[1:])
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
            try:
                self._release_all(prefetcher)
            finally:
                gc.set_threshold(*thresholds)
                gc.unfreeze()
        if self._failure is not None:
            raise self._failure
        return self.stats

    def _drain(self, prefetcher: Prefetcher, workers: Sequence[threading.Thread]) -> None:
        """Pull no more; let the workers settle what is held until the grace period ends (they
        hand back what they are still retrying then), and wait for them."""
        self._draining.set()
        prefetcher.close()
        grace = self._settings.stop_grace
        held = self._leases.count()
        if not self._halt.is_set() and held:
            log.info("stopping: settling %d held messages within %.0f s", held, grace)
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
        deferred = self._deferrals.still_deferred()
        if deferred:
            log.info("stopping: handing %d deferred messages back to Pub/Sub", len(deferred))
            self._subscription.nack(deferred)

    def _hand_back_held(self) -> None:
        unsettled = self._leases.held()
        if unsettled:
            log.info("stopping: handing %d pulled, unsettled messages back to Pub/Sub", len(unsettled))
            self._settler.hand_back_ids(unsettled)

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
                with self._stats.locked() as stats:
                    stats.first_received = stats.first_received or time.monotonic()
                self._telemetry.counted("received", len(batch))
                progressed = False
                try:
                    progressed = self._process(batch, worker)
                finally:
                    with self._stats.locked() as stats:
                        stats.last_settled = time.monotonic()
                    with self._lock:
                        self._busy -= 1
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
        with self._stats.locked() as stats:
            line = stats.summary()
        log.info("%s", line)

    def _idle_for(self) -> float:
        """Seconds since the last progress; 0 while a worker holds a batch."""
        with self._lock:
            return 0.0 if self._busy else time.monotonic() - self._last_activity

    def _process(self, batch: Sequence[Received], worker: int) -> bool:
        """Settle every message of the batch; retry in place what failed transiently. True if
        anything but a deferral came of it (progress, for the idle exit).

        Retries go on through a stop until its grace period ends; then what is still unsettled
        is given up (`Settler.give_up`). Whatever else stops this early (a `FatalError`, a forced
        exit) hands the messages not yet settled back to Pub/Sub: no lease is ever left held.
        """
        pending: Sequence[Received] = batch
        attempt = 0
        deferred = 0
        last_error = ""
        try:
            while pending:
                left = self._attempt(pending)
                pending, last_error = left.retry, left.last_error
                deferred += left.deferred
                if not pending:
                    break
                self._telemetry.counted("retried", len(pending))
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
                self._settler.hand_back(pending)
            raise
        if pending:
            log.info("stopping: %d unfinished messages", len(pending))
            self._settler.give_up(pending, last_error)
        return deferred < len(batch)

    def _attempt(self, batch: Sequence[Received]) -> Unsettled:
        """Handle the batch once and settle what can be settled."""
        try:
            settlement = sort_outcomes(batch, self._handler.handle(batch))
        except FatalError:
            raise
        except Exception as exc:  # a bug must not stop the pipeline: nack, Pub/Sub caps the attempts
            log.exception("unexpected error while handling %d messages; nacking them", len(batch))
            self._settler.fail(batch, f"unexpected error: {exc!r}")
            return Unsettled([], 0, "")
        return self._settler.settle(settlement)

    def _round(self, worker: int) -> None:
        """This worker is alive; the liveness probe sees the worker that has gone longest
        without a round. The in-flight and deferral gauges: what the consumer holds."""
        with self._lock:
            self._rounds[worker] = time.monotonic()
            oldest = min(self._rounds.values())
        self._telemetry.alive(oldest)
        count, published = self._deferrals.state()
        age = (datetime.now(UTC) - published).total_seconds() if published is not None else 0.0
        self._telemetry.holding(self._leases.count(), count, max(0.0, age))
