"""Read orders from Pub/Sub (`orders_data-sub`) and write each into ecom_store.orders_payments_facts.

Invalid orders go to `dlq_orders_data` with their reason. Configuration: GOOGLE_CLOUD_PROJECT,
PUBSUB_EMULATOR_HOST, CASSANDRA_HOSTS, CASSANDRA_PORT, CASSANDRA_KEYSPACE, ... (see README).
"""

from __future__ import annotations

import argparse
import os
import sys

from ecom_pipeline import cli
from ecom_pipeline.app import Kind
from ecom_pipeline.config import ORDERS_DLQ_TOPIC, ORDERS_TOPIC, subscription_for


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_consumer_arguments(parser, subscription_for(ORDERS_TOPIC), ORDERS_DLQ_TOPIC)
    args = parser.parse_args(argv)
    return cli.run_consumer_script(Kind.ORDERS, args, os.environ)


if __name__ == "__main__":
    sys.exit(main())
