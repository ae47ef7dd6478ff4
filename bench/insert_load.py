"""For `make bench` only: prepared INSERTs of mock orders, no Pub/Sub; one of the processes that
measure Cassandra's side of the ceiling. Prints one JSON line: {"rows", "started", "ended"}
(wall-clock seconds, so that several processes' spans can be put together).

Usage: insert_load.py FIRST_ID COUNT --concurrency C   single statements, C in flight
       insert_load.py FIRST_ID COUNT --batched         the consumers' own write path: UNLOGGED
                                                       batches grouped by replica (FactStore)
(CASSANDRA_* from the environment)
"""

from __future__ import annotations

import argparse
import json
import os
import time

from cassandra.concurrent import execute_concurrent_with_args

from ecom_pipeline.cassandra_io import INSERT_ORDER, connect, connect_session
from ecom_pipeline.config import CassandraSettings
from ecom_pipeline.messages import Order, order_values
from ecom_pipeline.mockdata import MockData


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first_id", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--concurrency", type=int, default=512)
    parser.add_argument("--batched", action="store_true", help="write as the consumers do, in batches")
    args = parser.parse_args()
    settings = CassandraSettings.from_env(os.environ)  # the consumers' driver settings
    mock, now = MockData(seed=7), int(time.time() * 1e6)
    orders = [
        order_values(Order.model_validate(mock.order(i))) for i in range(args.first_id, args.first_id + args.count)
    ]
    if args.batched:
        store = connect(settings, reads=False)
        started = time.time()
        pending_orders = [(values, now) for values in orders]
        while pending_orders:  # a row that timed out under the load is written again
            errors = store.insert_orders(pending_orders)
            pending_orders = [row for row, error in zip(pending_orders, errors, strict=True) if error is not None]
        ended = time.time()
        store.close()
    else:
        cluster, session = connect_session(settings, settings.keyspace)
        insert = session.prepare(INSERT_ORDER)
        started = time.time()
        pending: list[tuple[object, ...]] = [(*values, now) for values in orders]
        while pending:  # a row that timed out under the load is written again, so every row counts
            results = execute_concurrent_with_args(
                session, insert, pending, concurrency=args.concurrency, raise_on_first_error=False
            )
            pending = [row for row, (ok, _) in zip(pending, results, strict=True) if not ok]
        ended = time.time()
        cluster.shutdown()
    print(json.dumps({"rows": len(orders), "started": started, "ended": ended}))


if __name__ == "__main__":
    main()
