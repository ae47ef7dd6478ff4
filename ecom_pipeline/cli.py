"""What the top-level scripts share: arguments, logging set-up and stop signals."""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping

from .app import Kind, run_consumer
from .config import CassandraSettings, ConsumerSettings, PubSubSettings
from .consumer import ConsumerStats
from .errors import PipelineError
from .mockdata import MockData
from .producer import publish
from .pubsub_io import connect_publisher

__all__ = [
    "configure_logging", "stop_on_signals", "add_consumer_arguments", "consumer_settings", "add_log_level", "run_consumer_script",
    "add_producer_arguments", "run_producer_script",
]


def add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def configure_logging(level: str, tag: str = "") -> None:
    """Log lines to stderr; `tag` (e.g. a worker's name) goes in front of the logger's name."""
    prefix = f"[{tag}] " if tag else ""
    logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s")
    # The driver logs every failed reconnection attempt at WARNING; our retry log says enough.
    logging.getLogger("cassandra").setLevel(max(logging.getLevelName(level), logging.ERROR))


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM: the scripts finish what is in flight and exit 0."""
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        logging.getLogger(__name__).info("%s received, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    return stop


def add_consumer_arguments(parser: argparse.ArgumentParser, subscription: str, dead_letter_topic: str) -> None:
    parser.add_argument("--subscription", default=subscription, help=f"subscription to read (default {subscription})")
    parser.add_argument(
        "--dead-letter-topic", default=dead_letter_topic, help=f"topic for dead letters (default {dead_letter_topic})"
    )
    parser.add_argument("--batch-size", type=int, default=1000, help="messages per pull (default 1000)")
    parser.add_argument(
        "--exit-after-idle", type=float, metavar="SECONDS",
        help="exit 0 once no message has arrived for this long (default: run until stopped)",
    )
    parser.add_argument("--ack-deadline", type=int, default=60, help="lease of a pulled message, seconds")
    parser.add_argument("--stats-interval", type=float, default=5.0, help="seconds between progress lines")
    parser.add_argument(
        "--workers", type=int, default=1,
        help="consumer processes sharing the subscription (default 1); one Python process tops out at"
        " about one core, so use up to one per core",
    )
    add_log_level(parser)


def consumer_settings(args: argparse.Namespace) -> ConsumerSettings:
    return ConsumerSettings(
        subscription=args.subscription,
        dead_letter_topic=args.dead_letter_topic,
        batch_size=args.batch_size,
        exit_after_idle=args.exit_after_idle,
        ack_deadline=args.ack_deadline,
        stats_interval=args.stats_interval,
    )


def run_consumer_script(kind: Kind, args: argparse.Namespace, environ: Mapping[str, str], **options: float) -> int:
    """The body of the consumer scripts: logging, stop signals, settings, run; the exit status."""
    configure_logging(args.log_level)
    if args.workers < 1:
        logging.getLogger(__name__).error("--workers must be at least 1")
        return 2
    if args.workers > 1:
        return _run_workers(kind, args, environ, options)
    return _run_one(kind, args, environ, options)


def _run_one(
    kind: Kind, args: argparse.Namespace, environ: Mapping[str, str], options: Mapping[str, float],
    results: multiprocessing.SimpleQueue | None = None,
) -> int:
    stop = stop_on_signals()
    try:
        stats = run_consumer(
            kind, PubSubSettings.from_env(environ), CassandraSettings.from_env(environ),
            consumer_settings(args), stop, **options,
        )
    except (ValueError, PipelineError) as exc:
        logging.getLogger(__name__).error("%s", exc)
        return 1
    if results is not None:
        results.put(stats)
    return 0


def _worker(
    kind: Kind, args: argparse.Namespace, environ: Mapping[str, str], options: Mapping[str, float],
    results: multiprocessing.SimpleQueue,
) -> None:
    configure_logging(args.log_level, multiprocessing.current_process().name)
    raise SystemExit(_run_one(kind, args, environ, options, results))


def _run_workers(kind: Kind, args: argparse.Namespace, environ: Mapping[str, str], options: Mapping[str, float]) -> int:
    """`--workers N`: N consumer processes on the same subscription, each with its own clients
    (Pub/Sub shares the messages out between them). SIGINT and SIGTERM are passed on to every
    worker; the exit status is 0 only if every worker exited 0; one line sums them up."""
    log = logging.getLogger(__name__)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no gRPC state is forked
    results = context.SimpleQueue()
    workers = [
        context.Process(target=_worker, args=(kind, args, dict(environ), dict(options), results), name=f"worker-{i + 1}")
        for i in range(args.workers)
    ]
    for worker in workers:
        worker.start()

    def _forward(signum: int, _frame: object) -> None:
        log.info("%s received, stopping %d workers", signal.Signals(signum).name, len(workers))
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, signum)

    signal.signal(signal.SIGINT, _forward)
    signal.signal(signal.SIGTERM, _forward)
    parts: list[ConsumerStats] = []
    while any(w.is_alive() for w in workers) or not results.empty():
        if results.empty():
            time.sleep(0.2)  # a worker puts its stats just before it exits; read as they come
        else:
            parts.append(results.get())
    log.info("final: %d workers: %s", len(workers), ConsumerStats.merge(parts).summary())
    failed = [w.name for w in workers if w.exitcode != 0]
    if failed:
        log.error("%s did not exit cleanly", ", ".join(failed))
    return 1 if failed else 0


def add_producer_arguments(parser: argparse.ArgumentParser, topic: str, noun: str) -> None:
    parser.add_argument("--topic", default=topic, help=f"topic to publish to (default {topic})")
    parser.add_argument("--count", type=int, help=f"stop after N {noun} (default: until Ctrl-C)")
    parser.add_argument("--rate", type=float, default=10.0, help=f"{noun} per second; 0 = as fast as possible")
    parser.add_argument("--seed", type=int, help=f"same seed, same {noun}")
    parser.add_argument("--start-id", type=int, default=1, help="first id (default 1)")
    add_log_level(parser)


def run_producer_script(
    args: argparse.Namespace, messages: Callable[[MockData], Iterator[bytes]], environ: Mapping[str, str]
) -> int:
    """The body of the producer scripts: publish, flush, summarise; 1 if any publish failed."""
    configure_logging(args.log_level)
    stop = stop_on_signals()
    try:
        settings = PubSubSettings.from_env(environ)
    except ValueError as exc:
        logging.getLogger(__name__).error("%s", exc)
        return 1
    stats = publish(
        connect_publisher(), settings.topic_path(args.topic), messages(MockData(args.seed)),
        count=args.count, rate=args.rate, stop=stop,
    )
    logging.getLogger(__name__).info("final: %s", stats.summary())
    return 1 if stats.failed or stats.published < stats.submitted else 0
