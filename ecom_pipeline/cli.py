"""What the top-level scripts share: arguments, logging set-up, stop signals and exit statuses.

Exit statuses: 0 after a clean stop (Ctrl-C, SIGTERM, `--exit-after-idle`); 1 when something
needs a person (a missing topic, refused credentials, a bad variable: one error line says
what); 2 for a bad flag (argparse); 130 when a second signal forced the exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from prometheus_client import multiprocess

from .app import SCRIPTS, Kind, run_consumer
from .config import (
    ORDERS_DLQ_TOPIC,
    ORDERS_TOPIC,
    PAYMENTS_DLQ_TOPIC,
    PAYMENTS_TOPIC,
    CassandraSettings,
    ConsumerSettings,
    PubSubSettings,
    optional_integer,
    subscription_for,
)
from .consumer import PULL_TIMEOUT, ConsumerStats
from .errors import PipelineError
from .metrics import MULTIPROCESS_DIR, Health, Probes, WorkerProbes, consumer_metrics, producer_metrics, serve
from .mockdata import MockData
from .producer import publish
from .pubsub_io import connect_publisher, translate_error

__all__ = [
    "FORCED_EXIT",
    "ConsumerOptions",
    "HelpFormatter",
    "add_log_level",
    "add_producer_arguments",
    "configure_logging",
    "consumer_options",
    "consumer_parser",
    "ranged",
    "run_consumer_script",
    "run_producer_script",
    "stop_on_signals",
]

log = logging.getLogger(__name__)
FORCED_EXIT = 130  # the shell's status for "ended by SIGINT"
N = TypeVar("N", int, float)
# The slowest --rate: one message every 1000 s. Much slower, the wait between two messages
# outgrows what threading can wait for (OverflowError below about 1e-9 a second).
MIN_RATE = 0.001

# Where each consumer reads, and where its dead letters go, unless told otherwise.
CONSUMER_DEFAULTS = {
    Kind.ORDERS: (subscription_for(ORDERS_TOPIC), ORDERS_DLQ_TOPIC),
    Kind.PAYMENTS: (subscription_for(PAYMENTS_TOPIC), PAYMENTS_DLQ_TOPIC),
    Kind.REPLAY: (subscription_for(PAYMENTS_DLQ_TOPIC), PAYMENTS_DLQ_TOPIC),
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The script's docstring as written, and every option's default in `--help`."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # An option without a default says what "unset" means in its own help.
        return action.help if action.default is None else super()._get_help_string(action)


def ranged(kind: type[N], low: N, high: N | None = None, *, above: bool = False) -> Callable[[str], N]:
    """An argparse type: a `kind` from `low` (exclusive with `above`) to `high`, else a usage
    error that states the range."""
    if high is not None:
        wanted = f"{'an integer' if kind is int else 'a number'} between {low} and {high}"
    else:
        wanted = f"{'an integer' if kind is int else 'a number'} {'greater than' if above else 'at least'} {low}"

    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, not {text!r}") from None
        too_low = value <= low if above else value < low
        if value != value or too_low or (high is not None and value > high):  # value != value: NaN
            raise argparse.ArgumentTypeError(f"must be {wanted}, not {text!r}")
        return value

    parse.__name__ = kind.__name__  # what argparse names in its own messages
    return parse


def _rate(text: str) -> float:
    """The argparse type of --rate: 0 (as fast as possible) or at least MIN_RATE, else a usage error."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value == 0 or value >= MIN_RATE):  # NaN is neither
        raise argparse.ArgumentTypeError(
            f"must be 0 (as fast as possible) or a number at least {MIN_RATE}, not {text!r}"
        )
    return value


def add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level")
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="json: one object per line with severity, message and time (what Google Cloud Logging reads)",
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `severity`, `message`, `time` (RFC 3339, UTC), `logger`, `worker`."""

    def __init__(self, tag: str = "") -> None:
        super().__init__()
        self._tag = tag

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "severity": record.levelname,
            "message": record.getMessage() + (f"\n{self.formatException(record.exc_info)}" if record.exc_info else ""),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "logger": record.name,
        }
        if self._tag:
            entry["worker"] = self._tag
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, tag: str = "", log_format: str = "text") -> None:
    """Log lines to stderr; `tag` (e.g. a worker's name) goes in front of the logger's name."""
    prefix = f"[{tag}] " if tag else ""
    logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s")
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter(tag))
    # The driver logs every failed connection attempt, with a traceback; the pipeline's own
    # retry line says what happened and what it does next. DEBUG shows the driver's view too.
    logging.getLogger("cassandra").setLevel(logging.DEBUG if level == "DEBUG" else logging.CRITICAL)


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGUSR1}


def stop_on_signals(*, worker: bool = False) -> threading.Event:
    """An event set by SIGINT or SIGTERM: the scripts finish what is in flight and exit 0.

    SIGTERM is one stop however many copies of it arrive (`kill -TERM -PGID` and systemd's
    KillMode=control-group reach a `--workers` worker directly and again through its parent).
    A second SIGINT (Ctrl-C) forces the exit, once: KeyboardInterrupt, the consumer stops waiting,
    hands every message it holds back to Pub/Sub, and exits with FORCED_EXIT; later signals are
    ignored, so the hand-backs run to their end.

    A `--workers` worker ignores SIGINT (a terminal's Ctrl-C reaches the whole process group) and
    is forced by the SIGUSR1 its parent sends on a second Ctrl-C.
    """
    stop = threading.Event()
    forced = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if not stop.is_set():
            stop.set()  # set before logging: a second signal can interrupt this handler's own logging
            log.info("%s received, stopping (Ctrl-C again to force)", name)
        elif signum != signal.SIGTERM:
            _force(signum, _frame)

    def _force(signum: int, _frame: object) -> None:
        stop.set()
        if forced.is_set():
            return
        forced.set()
        log.warning("%s received again: forced exit, handing back what is held", signal.Signals(signum).name)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.SIG_IGN if worker else _stop)
    signal.signal(signal.SIGTERM, _stop)
    if worker:
        signal.signal(signal.SIGUSR1, _force)
    # A `--workers` worker starts with them blocked (see `_run_workers`): what came meanwhile is
    # delivered now, to the handlers above.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    return stop


@dataclass(frozen=True)
class ConsumerOptions:
    """What a consumer script was asked to do, as parsed once from its arguments."""

    kind: Kind
    settings: ConsumerSettings
    workers: int
    log_level: str
    log_format: str = "text"
    metrics_port: int | None = None  # --metrics-port; unset: METRICS_PORT, else no endpoint
    metrics_address: str = "127.0.0.1"


def consumer_parser(description: str | None, kind: Kind) -> argparse.ArgumentParser:
    """The arguments of a consumer script, with the design's subscription and dead-letter topic."""
    subscription, dead_letter_topic = CONSUMER_DEFAULTS[kind]
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    parser.add_argument("--subscription", default=subscription, help="subscription to read")
    parser.add_argument("--dead-letter-topic", default=dead_letter_topic, help="topic for dead letters")
    parser.add_argument("--batch-size", type=ranged(int, 1, 1000), default=1000, help="messages per pull (1-1000)")
    parser.add_argument(
        "--batches-in-flight",
        type=ranged(int, 1, 8),
        default=ConsumerSettings.batches_in_flight,
        metavar="N",
        help="batches written at once, each acked when its own writes are done (1-8); memory holds up to N + 2 batches",
    )
    parser.add_argument(
        "--exit-after-idle",
        type=ranged(float, 0, above=True),
        metavar="SECONDS",
        help="exit 0 once no message has arrived for this long (unset: run until stopped)",
    )
    parser.add_argument(
        "--ack-deadline",
        type=ranged(int, 10, 600),
        default=60,
        metavar="SECONDS",
        help="lease kept on a message while it is processed (10-600); a consumer that dies lets its"
        " messages go after this long",
    )
    parser.add_argument(
        "--stop-grace",
        type=ranged(float, 0, 600),
        default=ConsumerSettings.stop_grace,
        metavar="SECONDS",
        help="on a stop, pull no more and settle what is held for up to this long (retrying through"
        " an outage), then hand back the rest (0-600; keep it under the platform's own grace period)",
    )
    parser.add_argument(
        "--stats-interval",
        type=ranged(float, 0, above=True),
        default=5.0,
        metavar="SECONDS",
        help="seconds between progress lines",
    )
    parser.add_argument(
        "--workers",
        type=ranged(int, 1, 64),
        default=1,
        help="consumer processes sharing the subscription; one Python process tops out at about one"
        " core, so use up to one per core",
    )
    add_metrics_arguments(parser)
    add_log_level(parser)
    return parser


def add_metrics_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port",
        type=ranged(int, 1, 65535),
        metavar="PORT",
        help="serve /metrics, /healthz and /readyz on this port (unset: METRICS_PORT, else none)",
    )
    parser.add_argument("--metrics-address", default="127.0.0.1", help="address of the metrics endpoint")


def metrics_port(flag: int | None, environ: Mapping[str, str]) -> int | None:
    """The flag, else METRICS_PORT (a `ValueError` naming it when it is not a port), else None.

    With a port, PROMETHEUS_MULTIPROC_DIR, when set, must be a directory: prometheus_client then
    keeps every series in files there (its multiprocess mode), fails on the first one if it is
    missing, and writes them into the working directory if it is empty.
    """
    port = flag if flag is not None else optional_integer(environ, "METRICS_PORT", low=1, high=65535, noun="a port")
    directory = environ.get(MULTIPROCESS_DIR)
    if port is not None and directory is not None and not os.path.isdir(directory):
        raise ValueError(
            f"{MULTIPROCESS_DIR}={directory} is not a directory (prometheus_client keeps its series there; "
            "create it, or unset it for a single process)"
        )
    return port


def consumer_options(kind: Kind, args: argparse.Namespace) -> ConsumerOptions:
    settings = ConsumerSettings(
        subscription=args.subscription,
        dead_letter_topic=args.dead_letter_topic,
        batch_size=args.batch_size,
        batches_in_flight=args.batches_in_flight,
        exit_after_idle=args.exit_after_idle,
        ack_deadline=args.ack_deadline,
        stats_interval=args.stats_interval,
        stop_grace=args.stop_grace,
    )
    return ConsumerOptions(
        kind=kind,
        settings=settings,
        workers=args.workers,
        log_level=args.log_level,
        log_format=args.log_format,
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
    )


def run_consumer_script(options: ConsumerOptions, environ: Mapping[str, str]) -> int:
    """The body of the consumer scripts: logging, stop signals, settings, run; the exit status."""
    configure_logging(options.log_level, log_format=options.log_format)
    try:
        # Read once, here: with --workers a bad variable is one line, not one per worker.
        options = replace(options, metrics_port=metrics_port(options.metrics_port, environ))
        pubsub, cassandra = PubSubSettings.from_env(environ), CassandraSettings.from_env(environ)
    except ValueError as exc:
        log.error("%s", exc)
        return 1
    if options.workers > 1:
        return _run_workers(options, pubsub, cassandra)
    return _run_one(options, pubsub, cassandra)


def _serve_metrics(address: str, port: int, health: Probes | None) -> Callable[[], None]:
    """Start the metrics endpoint; an `OSError` that names the option (a name with no address,
    an address not of this machine, a port taken) is the caller's."""
    try:
        return serve(address, port, health)
    except OSError as exc:
        raise OSError(
            f"cannot serve metrics on --metrics-address {address!r}, port {port}: {exc.strerror or exc}"
        ) from exc


def _serve(options: ConsumerOptions, health: Probes | None) -> Callable[[], None] | None:
    """Start the metrics endpoint if asked; `OSError` (e.g. the port is taken) is the caller's."""
    if options.metrics_port is None:
        return None
    return _serve_metrics(options.metrics_address, options.metrics_port, health)


def _run_one(
    options: ConsumerOptions,
    pubsub: PubSubSettings,
    cassandra: CassandraSettings,
    results: multiprocessing.SimpleQueue[ConsumerStats] | None = None,
    probe: Callable[[float, bool], None] | None = None,
) -> int:
    """One consumer: the script itself, or a `--workers` worker (`results`: where its stats go;
    `probe`: where its liveness and readiness go; the parent serves the metrics and probes)."""
    worker = results is not None
    stop = stop_on_signals(worker=worker)
    stop_server = None
    try:
        metrics = health = None
        if options.metrics_port is not None:
            metrics = consumer_metrics(SCRIPTS[options.kind], options.settings.subscription)
            # Stuck: no round of the loop for three times the longest a healthy round takes.
            health = Health(liveness_window=liveness_window(cassandra), publish=probe)
            if not worker:
                stop_server = _serve(options, health)
        stats = run_consumer(options.kind, pubsub, cassandra, options.settings, stop, metrics=metrics, health=health)
    except (ValueError, PipelineError, OSError) as exc:  # ValueError: a variable; OSError: the port
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.warning("forced exit")
        return FORCED_EXIT
    finally:
        if stop_server is not None:
            stop_server()
    if results is not None:
        results.put(stats)
    return 0


def liveness_window(cassandra: CassandraSettings) -> float:
    """Stuck: no round of the loop for three times the longest a healthy round takes."""
    return 3 * max(PULL_TIMEOUT, cassandra.request_timeout)


def _worker(
    options: ConsumerOptions,
    pubsub: PubSubSettings,
    cassandra: CassandraSettings,
    results: multiprocessing.SimpleQueue[ConsumerStats],
    slots: Any,
    index: int,
) -> None:
    configure_logging(options.log_level, multiprocessing.current_process().name, options.log_format)
    raise SystemExit(_run_one(options, pubsub, cassandra, results, WorkerProbes.writer(slots, index)))


def _run_workers(options: ConsumerOptions, pubsub: PubSubSettings, cassandra: CassandraSettings) -> int:
    """`--workers N`: N consumer processes on the same subscription, each with its own clients
    (Pub/Sub shares the messages out between them). SIGINT and SIGTERM are passed on to every
    worker; the exit status is 0 only if every worker exited 0; one line sums them up.

    With metrics, the workers write their series to files in a directory of their own
    (PROMETHEUS_MULTIPROC_DIR, set before they start) and this process serves the sum; its
    probes answer for every worker (`WorkerProbes`): /healthz 503 once one is gone or has made
    no round within its liveness window, /readyz 503 while one is not ready. A worker that exits
    is marked dead for prometheus_client, so its live gauges leave the sum.
    """
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no gRPC state is forked
    results = context.SimpleQueue()
    slots = context.Array("d", 2 * options.workers)
    workers = [
        context.Process(target=_worker, args=(options, pubsub, cassandra, results, slots, i), name=f"worker-{i + 1}")
        for i in range(options.workers)
    ]
    metrics_dir = None
    stop_server = None
    if options.metrics_port is not None:
        metrics_dir = tempfile.mkdtemp(prefix="ecom-pipeline-metrics-")
        os.environ[MULTIPROCESS_DIR] = metrics_dir  # inherited by the workers spawned below

        def every_worker() -> bool:
            return all(w.is_alive() for w in workers)

        health = WorkerProbes(slots, liveness_window(cassandra), processes_up=every_worker)
        try:
            stop_server = _serve(options, health)
        except OSError as exc:
            log.error("%s", exc)
            shutil.rmtree(metrics_dir, ignore_errors=True)
            return 1
    # A stop that comes while the workers start must neither kill a worker that has no handler
    # yet (it would exit -15: "did not exit cleanly") nor this process before `_forward` is in
    # place: the signals stay pending until then. A spawned worker inherits the mask, and
    # `stop_on_signals` unblocks them once its handlers are installed.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        for worker in workers:
            worker.start()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        raise

    stopping = threading.Event()

    def _forward(signum: int, _frame: object) -> None:
        """The first signal stops the workers (SIGTERM); a second Ctrl-C forces them (SIGUSR1);
        another SIGTERM is the same stop (see stop_on_signals)."""
        if stopping.is_set() and signum == signal.SIGTERM:
            return
        passed_on = signal.SIGUSR1 if stopping.is_set() else signal.SIGTERM
        stopping.set()
        log.info(
            "%s received, %s %d workers",
            signal.Signals(signum).name,
            "forcing" if passed_on == signal.SIGUSR1 else "stopping",
            len(workers),
        )
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, passed_on)

    signal.signal(signal.SIGINT, _forward)
    signal.signal(signal.SIGTERM, _forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    parts: list[ConsumerStats] = []
    marked: set[int] = set()
    while any(w.is_alive() for w in workers) or not results.empty():
        if metrics_dir is not None:  # an exited worker's live gauges (in flight) leave the sum
            for worker in workers:
                if worker.pid is not None and worker.exitcode is not None and worker.pid not in marked:
                    marked.add(worker.pid)
                    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]  # unannotated upstream
        if results.empty():
            time.sleep(0.2)  # a worker puts its stats just before it exits; read as they come
        else:
            parts.append(results.get())
    log.info("final: %d workers: %s", len(workers), ConsumerStats.merge(parts).summary())
    if stop_server is not None and metrics_dir is not None:
        stop_server()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    failed = [w.name for w in workers if w.exitcode != 0]
    if failed:
        log.error("%s did not exit cleanly", ", ".join(failed))
    return 1 if failed else 0


def add_producer_arguments(parser: argparse.ArgumentParser, topic: str, noun: str) -> None:
    parser.add_argument("--topic", default=topic, help="topic to publish to")
    parser.add_argument("--count", type=ranged(int, 0), help=f"stop after N {noun} (unset: until Ctrl-C)")
    parser.add_argument(
        "--rate",
        type=_rate,
        default=10.0,
        help=f"{noun} per second: 0 = as fast as possible, else at least {MIN_RATE} (one every 1000 s)",
    )
    parser.add_argument("--seed", type=int, help=f"same seed, same {noun}")
    parser.add_argument("--start-id", type=ranged(int, 1, 2**62), default=1, help="first id")
    add_metrics_arguments(parser)
    add_log_level(parser)


def run_producer_script(
    script: str, args: argparse.Namespace, messages: Callable[[MockData], Iterator[bytes]], environ: Mapping[str, str]
) -> int:
    """The body of the producer scripts: publish, flush, summarise; 1 if any publish failed."""
    configure_logging(args.log_level, log_format=args.log_format)
    stop = stop_on_signals()
    stop_server = None
    try:
        settings = PubSubSettings.from_env(environ)
        publisher = connect_publisher(settings)
        port = metrics_port(args.metrics_port, environ)
        metrics = None
        if port is not None:
            metrics = producer_metrics(script, args.topic)
            stop_server = _serve_metrics(args.metrics_address, port, None)
    except (ValueError, PipelineError, OSError) as exc:
        log.error("%s", exc)
        return 1
    try:
        stats = publish(
            publisher,
            settings.topic_path(args.topic),
            messages(MockData(args.seed)),
            count=args.count,
            rate=args.rate,
            stop=stop,
            metrics=metrics,
        )
    except KeyboardInterrupt:
        log.warning("forced exit: messages not yet confirmed may not have been published")
        return FORCED_EXIT
    finally:
        if stop_server is not None:
            stop_server()
    if stats.fatal is not None:
        log.error("%s", translate_error(stats.fatal, f"publish to {args.topic}", f"topic {args.topic}"))
    log.info("final: %s", stats.summary())
    return 1 if stats.failed or stats.published < stats.submitted else 0
