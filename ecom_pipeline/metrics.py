"""Prometheus: the pipeline's metrics, and the HTTP endpoint that serves them with two probes.

`GET /metrics` is the Prometheus text format (prometheus_client); `GET /healthz` answers 200
while the consumer loop makes rounds and 503 once it has made none for its liveness window;
`GET /readyz` answers 200 once Pub/Sub and Cassandra have answered and 503 while either is
unavailable. Nothing is created at import: `consumer_metrics` and `producer_metrics` register
the series, `serve` starts the server (a daemon thread), and only when a script is asked to.

With `--workers N`, each worker writes its series to files in PROMETHEUS_MULTIPROC_DIR
(prometheus_client's multiprocess mode) and the parent serves their sum.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app, multiprocess
from prometheus_client.process_collector import ProcessCollector

__all__ = [
    "MULTIPROCESS_DIR",
    "OUTCOMES",
    "ConsumerMetrics",
    "Health",
    "Probes",
    "ProducerMetrics",
    "WorkerProbes",
    "consumer_metrics",
    "producer_metrics",
    "serve",
]

log = logging.getLogger(__name__)
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable
OUTCOMES = ("received", "applied", "dead_lettered", "retried", "nacked", "deferred")
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Health:
    """What the probes answer: the loop's last round (monotonic time) and the services' state."""

    liveness_window: float
    cassandra_up: Callable[[], bool] = lambda: True  # asked at each probe: is a node connected?
    processes_up: Callable[[], bool] = lambda: True  # asked at each probe: are the workers alive?
    last_round: float = field(default_factory=time.monotonic)
    pubsub_ready: bool = False
    cassandra_ready: bool = False
    # Told (last round, ready) at each round: a `--workers` worker's slot in `WorkerProbes`.
    publish: Callable[[float, bool], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def round(self, at: float | None = None) -> None:
        """A round of the loop, now or at the monotonic time `at` (the oldest of its workers)."""
        with self._lock:
            self.last_round = last = time.monotonic() if at is None else at
        if self.publish is not None:
            self.publish(last, self.ready())

    def alive(self) -> bool:
        with self._lock:
            recent = time.monotonic() - self.last_round <= self.liveness_window
        return recent and self.processes_up()

    def ready(self) -> bool:
        with self._lock:
            answered = self.pubsub_ready and self.cassandra_ready
        return answered and self.cassandra_up()

    def set_ready(self, *, pubsub: bool | None = None, cassandra: bool | None = None) -> None:
        with self._lock:
            if pubsub is not None:
                self.pubsub_ready = pubsub
            if cassandra is not None:
                self.cassandra_ready = cassandra


class Probes(Protocol):
    """What the probes ask: `Health` for one process, `WorkerProbes` for `--workers`."""

    def alive(self) -> bool: ...

    def ready(self) -> bool: ...


class WorkerProbes:
    """The parent's probes with `--workers`: each worker's last round and readiness in shared
    memory (monotonic time is machine-wide on Linux). Alive while every worker process lives and
    each has made a round within its liveness window; ready while every worker is ready."""

    def __init__(self, slots: Any, liveness_window: float, processes_up: Callable[[], bool]) -> None:
        """`slots`: a shared array of 2 doubles per worker (`multiprocessing` `Array("d", 2 * n)`)."""
        self._slots = slots
        self._window = liveness_window
        self._processes_up = processes_up
        now = time.monotonic()
        with slots.get_lock():
            for index in range(len(slots) // 2):
                slots[2 * index], slots[2 * index + 1] = now, 0.0  # a worker is not ready until it says so

    @staticmethod
    def writer(slots: Any, index: int) -> Callable[[float, bool], None]:
        """What worker `index` gives its `Health.publish`."""

        def write(last_round: float, ready: bool) -> None:
            with slots.get_lock():
                slots[2 * index], slots[2 * index + 1] = last_round, 1.0 if ready else 0.0

        return write

    def alive(self) -> bool:
        now = time.monotonic()
        with self._slots.get_lock():
            rounds = list(self._slots[0::2])
        return all(now - last <= self._window for last in rounds) and self._processes_up()

    def ready(self) -> bool:
        with self._slots.get_lock():
            flags = list(self._slots[1::2])
        return all(flag == 1.0 for flag in flags) and self._processes_up()


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


class _Server(ThreadingMixIn, WSGIServer):
    """A thread per connection, none waited for at exit: a client that connects and sends
    nothing (a TCP probe) holds its own thread only, not the probes or the shutdown."""

    daemon_threads = True
    block_on_close = False


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


def _is_ipv6(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).version == 6
    except ValueError:
        return False


class _QuietHandler(WSGIRequestHandler):
    timeout = 10  # seconds a connection may stay silent before it is closed

    def log_message(self, format: str, *args: object) -> None:  # wsgiref's own signature
        """Scrapes every few seconds are not worth a log line each."""


def serve(address: str, port: int, health: Probes | None) -> Callable[[], None]:
    """Serve /metrics, /healthz and /readyz on a daemon thread; return a function that stops it.

    With PROMETHEUS_MULTIPROC_DIR set, /metrics is the sum over the worker processes' files,
    plus this process's own process metrics.
    """
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # unannotated upstream
        ProcessCollector(registry=registry)
        metrics_app = make_wsgi_app(registry)
    else:
        metrics_app = make_wsgi_app()

    def app(environ: dict[str, object], start_response: Callable[..., object]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if path in ("/healthz", "/readyz"):
            ok = health is None or (health.alive() if path == "/healthz" else health.ready())
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"unavailable\n"]
        return metrics_app(environ, start_response)  # type: ignore[no-any-return]  # prometheus_client's app is untyped

    ipv6 = _is_ipv6(address)  # wsgiref's server is IPv4 only unless told otherwise
    server_class = _IPv6Server if ipv6 else _Server
    server = make_server(address, port, app, server_class=server_class, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    log.info("metrics on http://%s:%d/metrics", f"[{address}]" if ipv6 else address, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop
