"""Telemetry: what the consumer tells about itself, through one observer interface.

The loop and the settlement report events (`counted`, `applied`, ...) to one `Telemetry`; the
stats line, the Prometheus series and the probes each implement it, and `Fanout` passes every
event to each of them. No `if metrics is not None` branch anywhere else.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from ..metrics import ConsumerMetrics
from ..probes import Health
from .stats import ConsumerStats

__all__ = ["Fanout", "HealthTelemetry", "MetricsTelemetry", "StatsTelemetry", "Telemetry"]


class Telemetry(Protocol):
    def counted(self, outcome: str, amount: int) -> None:
        """`amount` messages had this outcome (`received`, `applied`, `retried`, ...)."""

    def dead_lettered(self, reasons: Sequence[str]) -> None:
        """Dead letters were published (and their messages acked), one reason each."""

    def applied(self, latencies: Sequence[float]) -> None:
        """Messages were applied and acked, with their end-to-end latencies in seconds."""

    def alive(self, oldest_round: float) -> None:
        """The monotonic time of the oldest batch worker's last round."""

    def holding(self, in_flight: int, deferred: int, oldest_deferred_age: float) -> None:
        """What the consumer holds: leased and unsettled, deferred, and the oldest deferral's age."""

    def reachable(self, *, pubsub: bool | None = None, cassandra: bool | None = None) -> None:
        """Whether the services answered the last call (None: not known from that call)."""


class StatsTelemetry:
    """The counts of the progress and final lines (`ConsumerStats`), under a lock of their own."""

    def __init__(self) -> None:
        self.stats = ConsumerStats()
        self._lock = threading.Lock()

    @contextmanager
    def locked(self) -> Iterator[ConsumerStats]:
        with self._lock:
            yield self.stats

    def counted(self, outcome: str, amount: int) -> None:
        with self._lock:
            setattr(self.stats, outcome, getattr(self.stats, outcome) + amount)

    def dead_lettered(self, reasons: Sequence[str]) -> None:
        with self._lock:
            self.stats.dead_lettered.update(reasons)

    def applied(self, latencies: Sequence[float]) -> None:
        with self._lock:
            self.stats.latencies.extend(latencies)

    def alive(self, oldest_round: float) -> None:
        pass

    def holding(self, in_flight: int, deferred: int, oldest_deferred_age: float) -> None:
        pass

    def reachable(self, *, pubsub: bool | None = None, cassandra: bool | None = None) -> None:
        pass


class MetricsTelemetry:
    """The Prometheus series (`metrics.ConsumerMetrics`)."""

    def __init__(self, metrics: ConsumerMetrics) -> None:
        self._metrics = metrics

    def counted(self, outcome: str, amount: int) -> None:
        self._metrics.count(outcome, amount)

    def dead_lettered(self, reasons: Sequence[str]) -> None:
        self._metrics.count("dead_lettered", len(reasons))
        for reason in reasons:
            self._metrics.dead_lettered(reason)

    def applied(self, latencies: Sequence[float]) -> None:
        if latencies:
            self._metrics.applied(latencies)

    def alive(self, oldest_round: float) -> None:
        pass

    def holding(self, in_flight: int, deferred: int, oldest_deferred_age: float) -> None:
        self._metrics.in_flight.set(in_flight)
        self._metrics.deferred.set(deferred)
        self._metrics.oldest_deferred_age.set(oldest_deferred_age)

    def reachable(self, *, pubsub: bool | None = None, cassandra: bool | None = None) -> None:
        pass


class HealthTelemetry:
    """What the probes answer (`probes.Health`): liveness from the rounds, readiness from the calls."""

    def __init__(self, health: Health) -> None:
        self._health = health

    def counted(self, outcome: str, amount: int) -> None:
        pass

    def dead_lettered(self, reasons: Sequence[str]) -> None:
        pass

    def applied(self, latencies: Sequence[float]) -> None:
        pass

    def alive(self, oldest_round: float) -> None:
        self._health.round(at=oldest_round)

    def holding(self, in_flight: int, deferred: int, oldest_deferred_age: float) -> None:
        pass

    def reachable(self, *, pubsub: bool | None = None, cassandra: bool | None = None) -> None:
        self._health.set_ready(pubsub=pubsub, cassandra=cassandra)


class Fanout:
    """One `Telemetry` that passes every event to each of several."""

    def __init__(self, *parts: Telemetry) -> None:
        self._parts = parts

    def counted(self, outcome: str, amount: int) -> None:
        if amount:
            for part in self._parts:
                part.counted(outcome, amount)

    def dead_lettered(self, reasons: Sequence[str]) -> None:
        if reasons:
            for part in self._parts:
                part.dead_lettered(reasons)

    def applied(self, latencies: Sequence[float]) -> None:
        for part in self._parts:
            part.applied(latencies)

    def alive(self, oldest_round: float) -> None:
        for part in self._parts:
            part.alive(oldest_round)

    def holding(self, in_flight: int, deferred: int, oldest_deferred_age: float) -> None:
        for part in self._parts:
            part.holding(in_flight, deferred, oldest_deferred_age)

    def reachable(self, *, pubsub: bool | None = None, cassandra: bool | None = None) -> None:
        for part in self._parts:
            part.reachable(pubsub=pubsub, cassandra=cassandra)
