"""Publish mock orders (JSON) to the Pub/Sub topic `orders_data`.

Order ids run from --start-id upwards. --rate 0 publishes as fast as batching allows.
Ctrl-C flushes what is pending and prints a summary.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ecom_pipeline import cli
from ecom_pipeline.config import ORDERS_TOPIC, PubSubSettings
from ecom_pipeline.mockdata import MockData
from ecom_pipeline.producer import order_messages, publish
from ecom_pipeline.pubsub_io import connect_publisher


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topic", default=ORDERS_TOPIC)
    parser.add_argument("--count", type=int, help="stop after N orders (default: until Ctrl-C)")
    parser.add_argument("--rate", type=float, default=10.0, help="orders per second; 0 = as fast as possible")
    parser.add_argument("--seed", type=int, help="same seed, same orders")
    parser.add_argument("--start-id", type=int, default=1, help="first order_id (default 1)")
    cli.add_log_level(parser)
    args = parser.parse_args(argv)
    cli.configure_logging(args.log_level)
    stop = cli.stop_on_signals()
    settings = PubSubSettings.from_env(os.environ)
    stats = publish(
        connect_publisher(), settings.topic_path(args.topic), order_messages(MockData(args.seed), args.start_id),
        count=args.count, rate=args.rate, stop=stop,
    )
    logging.getLogger("order_data_producer").info("final: %s", stats.summary())
    return 1 if stats.failed or stats.published < stats.submitted else 0


if __name__ == "__main__":
    sys.exit(main())
