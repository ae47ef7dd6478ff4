"""Publish mock orders (JSON) to the Pub/Sub topic `orders_data`.

Order ids run from --start-id upwards. --rate 0 publishes as fast as batching allows.
Ctrl-C flushes what is pending and prints a summary.
"""

from __future__ import annotations

import argparse
import os
import sys

from ecom_pipeline import cli
from ecom_pipeline.config import ORDERS_TOPIC
from ecom_pipeline.producer import order_messages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    cli.add_producer_arguments(parser, ORDERS_TOPIC, "orders")
    args = parser.parse_args(argv)
    return cli.run_producer_script(
        "order_data_producer", args, lambda mock: order_messages(mock, args.start_id), os.environ
    )


if __name__ == "__main__":
    sys.exit(main())
