"""The scripts' arguments: argparse types with ranges, the consumer's and the producers' options.

Parsed once, here; what the options mean is for the modules below them. `metrics_port` reads the
one option that may also come from the environment (METRICS_PORT).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from ..app import Kind
from ..config import (
    ORDERS_DLQ_TOPIC,
    ORDERS_TOPIC,
    PAYMENTS_DLQ_TOPIC,
    PAYMENTS_TOPIC,
    ConsumerSettings,
    optional_integer,
    subscription_for,
)
from ..metrics import MULTIPROCESS_DIR

__all__ = [
    "ConsumerOptions",
    "HelpFormatter",
    "add_log_level",
    "add_metrics_arguments",
    "add_producer_arguments",
    "consumer_options",
    "consumer_parser",
    "metrics_port",
    "ranged",
]

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
