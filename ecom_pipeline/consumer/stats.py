"""The consumer's counts and latencies: what its progress and final lines say."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["ConsumerStats"]


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
