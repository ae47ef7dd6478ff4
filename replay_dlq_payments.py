"""Apply dead-lettered payments whose order has arrived since (`dlq_payments_data-sub`).

A payment whose order now exists is applied exactly as ingest_in_fact_table.py would, with its
original event time, and leaves the dead-letter topic. One still without its order, or invalid,
is republished to `dlq_payments_data` with `replay_attempts` + 1 and `replayed_at`, and is not
tried again before `--retry-interval` seconds. Run it continuously, or on a schedule with
`--exit-after-idle` (see README, "Late payments").
"""

from __future__ import annotations

import argparse
import os
import sys

from ecom_pipeline import cli
from ecom_pipeline.app import Kind
from ecom_pipeline.config import PAYMENTS_DLQ_TOPIC, subscription_for


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_consumer_arguments(parser, subscription_for(PAYMENTS_DLQ_TOPIC), PAYMENTS_DLQ_TOPIC)
    parser.add_argument(
        "--retry-interval", type=float, default=300.0,
        help="seconds before a payment whose order is still missing is tried again (default 300)",
    )
    args = parser.parse_args(argv)
    return cli.run_consumer_script(Kind.REPLAY, args, os.environ, replay_interval=args.retry_interval)


if __name__ == "__main__":
    sys.exit(main())
