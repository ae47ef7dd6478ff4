"""Read payments from Pub/Sub (`payments_data-sub`) and add each to its order's row.

A payment whose order does not exist (yet) goes to `dlq_payments_data` with error
`order_not_found` (`replay_dlq_payments.py` applies it once the order arrives); an invalid
payment goes there too, with its reason. Configuration as for order_data_consumer.py.
"""

from __future__ import annotations

import os
import sys

from ecom_pipeline import cli
from ecom_pipeline.app import Kind


def main(argv: list[str] | None = None) -> int:
    args = cli.consumer_parser(__doc__, Kind.PAYMENTS).parse_args(argv)
    return cli.run_consumer_script(cli.consumer_options(Kind.PAYMENTS, args), os.environ)


if __name__ == "__main__":
    sys.exit(main())
