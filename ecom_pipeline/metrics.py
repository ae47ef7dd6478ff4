"""Prometheus series: the consumers' and the producers' metrics, created only when a script asks.

Nothing is created at import: `consumer_metrics` and `producer_metrics` register the series
(`http_server.py` serves them). With `--workers N`, each worker writes its
series to files in PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode) and the
parent serves their sum.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "MULTIPROCESS_DIR",
    "OUTCOMES",
    "ConsumerMetrics",
    "ProducerMetrics",
    "consumer_metrics",
    "producer_metrics",
]

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable
OUTCOMES = ("received", "applied", "dead_lettered", "retried", "nacked", "deferred")
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ConsumerMetrics:
    """A consumer's series, labelled with its script and subscription."""

    def __init__(self, registry: CollectorRegistry, script: str, subscription: str) -> None:
        messages = Counter(
            "ecom_pipeline_messages",
            "Messages by what became of them",
            ["script", "subscription", "outcome"],
            registry=registry,
        )
        self._messages = {o: messages.labels(script, subscription, o) for o in OUTCOMES}
        self._dead_letters = Counter(
            "ecom_pipeline_dead_letters",
            "Dead letters by reason (their error attribute)",
            ["script", "subscription", "reason"],
            registry=registry,
        )
        self._labels = (script, subscription)
        self.write_seconds = Histogram(
            "ecom_pipeline_write_seconds",
            "Duration of one Cassandra call (a batch of rows)",
            buckets=_SECONDS,
            registry=registry,
        )
        self.end_to_end_seconds = Histogram(
            "ecom_pipeline_end_to_end_seconds", "Publish time to applied and acked", buckets=_SECONDS, registry=registry
        )
        self.in_flight = Gauge(
            "ecom_pipeline_in_flight_messages",
            "Messages pulled and not yet settled",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.last_applied = Gauge(
            "ecom_pipeline_last_applied_timestamp_seconds",
            "Unix time of the last applied message",
            multiprocess_mode="max",
            registry=registry,
        )
        self.deferred = Gauge(
            "ecom_pipeline_deferred_messages",
            "Messages held deferred (the replay's dead letters waiting for their order)",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.oldest_deferred_age = Gauge(
            "ecom_pipeline_oldest_deferred_age_seconds",
            "Age of the oldest deferred message, since it was published to the subscription's topic",
            multiprocess_mode="livemax",
            registry=registry,
        )
        for outcome in OUTCOMES:
            self._messages[outcome].inc(0)  # every series exists from the start, at 0

    def count(self, outcome: str, amount: int = 1) -> None:
        if amount:
            self._messages[outcome].inc(amount)

    def dead_lettered(self, reason: str) -> None:
        self._dead_letters.labels(*self._labels, reason).inc()

    def applied(self, latencies: Iterable[float]) -> None:
        for seconds in latencies:
            self.end_to_end_seconds.observe(seconds)
        self.last_applied.set(time.time())


class ProducerMetrics:
    """A producer's series, labelled with its script and topic."""

    def __init__(self, registry: CollectorRegistry, script: str, topic: str) -> None:
        self.published = Counter(
            "ecom_pipeline_published", "Messages published and confirmed", ["script", "topic"], registry=registry
        ).labels(script, topic)
        self.failures = Counter(
            "ecom_pipeline_publish_failures", "Publishes that failed", ["script", "topic"], registry=registry
        ).labels(script, topic)
        self.published.inc(0)
        self.failures.inc(0)


def consumer_metrics(script: str, subscription: str) -> ConsumerMetrics:
    """The consumer's series in prometheus_client's default registry (or the multiprocess files)."""
    return ConsumerMetrics(REGISTRY, script, subscription)


def producer_metrics(script: str, topic: str) -> ProducerMetrics:
    return ProducerMetrics(REGISTRY, script, topic)
