"""Publish mock payments (JSON) to the Pub/Sub topic `payments_data`.

Payment k pays order `--start-id + k`, so it matches order_data_producer.py's orders; every
--orphan-every-th payment (default 5th) pays an order that does not exist yet (id + 1,000,000,000),
so a default run shows all three paths: insert, update and dead letter. Only a card's last four
digits are ever generated.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ecom_pipeline import cli
from ecom_pipeline.config import PAYMENTS_TOPIC, PubSubSettings
from ecom_pipeline.mockdata import MockData
from ecom_pipeline.producer import payment_messages, publish
from ecom_pipeline.pubsub_io import connect_publisher


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topic", default=PAYMENTS_TOPIC)
    parser.add_argument("--count", type=int, help="stop after N payments (default: until Ctrl-C)")
    parser.add_argument("--rate", type=float, default=10.0, help="payments per second; 0 = as fast as possible")
    parser.add_argument("--seed", type=int, help="same seed, same payments")
    parser.add_argument("--start-id", type=int, default=1, help="first payment_id and order_id paid (default 1)")
    parser.add_argument("--orphan-every", type=int, default=5, help="every Nth payment has no order yet; 0: none")
    cli.add_log_level(parser)
    args = parser.parse_args(argv)
    cli.configure_logging(args.log_level)
    stop = cli.stop_on_signals()
    settings = PubSubSettings.from_env(os.environ)
    stats = publish(
        connect_publisher(), settings.topic_path(args.topic),
        payment_messages(MockData(args.seed), args.start_id, args.orphan_every),
        count=args.count, rate=args.rate, stop=stop,
    )
    logging.getLogger("payments_data_producer").info("final: %s", stats.summary())
    return 1 if stats.failed or stats.published < stats.submitted else 0


if __name__ == "__main__":
    sys.exit(main())
