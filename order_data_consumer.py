"""Read orders from Pub/Sub (`orders_data-sub`) and write each into ecom_store.orders_payments_facts.

Invalid orders go to `dlq_orders_data` with their reason. Configuration: GOOGLE_CLOUD_PROJECT,
PUBSUB_EMULATOR_HOST, CASSANDRA_HOSTS, CASSANDRA_PORT, CASSANDRA_KEYSPACE, ... (see README).
"""

from __future__ import annotations

import os
import sys

from ecom_pipeline import cli
from ecom_pipeline.app import Kind


def main(argv: list[str] | None = None) -> int:
    args = cli.consumer_parser(__doc__, Kind.ORDERS).parse_args(argv)
    return cli.run_consumer_script(cli.consumer_options(Kind.ORDERS, args), os.environ)


if __name__ == "__main__":
    sys.exit(main())
