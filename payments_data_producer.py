"""Publish mock payments (JSON) to the Pub/Sub topic `payments_data`.

Payment k pays order `--start-id + k`, so it matches order_data_producer.py's orders; every
--orphan-every-th payment (default 5th) pays an order that does not exist yet (id + 1,000,000,000),
so a default run shows all three paths: insert, update and dead letter. Only a card's last four
digits are ever generated. Ctrl-C flushes what is pending and prints a summary.
"""

from __future__ import annotations

import argparse
import os
import sys

from ecom_pipeline import cli
from ecom_pipeline.config import PAYMENTS_TOPIC
from ecom_pipeline.producer import payment_messages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    cli.add_producer_arguments(parser, PAYMENTS_TOPIC, "payments")
    parser.add_argument(
        "--orphan-every", type=cli.ranged(int, 0), default=5, help="every Nth payment has no order yet; 0: none"
    )
    args = parser.parse_args(argv)
    return cli.run_producer_script(
        "payments_data_producer",
        args,
        lambda mock: payment_messages(mock, args.start_id, args.orphan_every),
        os.environ,
    )


if __name__ == "__main__":
    sys.exit(main())
