"""For `make bench` only: prepared INSERTs of mock orders, no Pub/Sub; one of the processes that
measure Cassandra's side of the ceiling. Prints one JSON line: {"rows", "started", "ended"}
(monotonic seconds, the same clock in every process, so that several processes' spans can be put
together and laid on the bench's CPU samples of the node), and "work_cpu": this process's CPU
seconds from connected to the last row written, building and validating the rows included (as a
consumer's drain window includes decoding and validating), its start-up excluded, and "rows_cpu":
the part of it spent building and validating the rows.

Usage: insert_load.py FIRST_ID COUNT --concurrency C   single statements, C in flight
       insert_load.py FIRST_ID COUNT --batched         the consumers' own write path: UNLOGGED
                                                       batches grouped by replica (FactStore)
       insert_load.py FIRST_ID COUNT --batched --calls K --call-rows R [--rate S]
                                                       the same, in calls of R rows from K
                                                       threads at once, as a consumer's batch
                                                       workers write (else one call of COUNT);
                                                       with --rate, no call begins before its
                                                       first row is due at S rows a second
(CASSANDRA_* from the environment)
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.query import PreparedStatement

from ecom_pipeline.cassandra_io import INSERT_ORDER, FactStore, connect, connect_session
from ecom_pipeline.config import CassandraSettings
from ecom_pipeline.messages import Order, order_values
from ecom_pipeline.mockdata import MockData

Row = TypeVar("Row")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first_id", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--concurrency", type=int, default=512)
    parser.add_argument("--batched", action="store_true", help="write as the consumers do, in batches")
    parser.add_argument("--calls", type=int, default=1, help="with --batched: calls in flight at once")
    parser.add_argument("--call-rows", type=int, default=0, help="with --batched: rows a call (0: all in one)")
    parser.add_argument("--rate", type=float, default=0.0, help="with --calls: rows a second at most (0: no limit)")
    args = parser.parse_args()
    settings = CassandraSettings.from_env(os.environ)  # the consumers' driver settings
    write: Callable[[list[tuple[object, ...]], int], None]
    if args.batched:
        store = connect(settings, reads=False)
        write = partial(write_in_calls, partial(write_batched, store), args.calls, args.call_rows, rate=args.rate)
        close = store.close
    else:
        cluster, session = connect_session(settings, settings.keyspace)
        write, close = partial(write_single, session, session.prepare(INSERT_ORDER), args.concurrency), cluster.shutdown
    work_started = time.process_time()
    orders = rows(args.first_id, args.count)
    rows_cpu = time.process_time() - work_started
    started = time.monotonic()
    write(orders, int(time.time() * 1e6))
    ended = time.monotonic()
    work_cpu = time.process_time() - work_started
    close()
    print(
        json.dumps(
            {"rows": len(orders), "started": started, "ended": ended, "work_cpu": work_cpu, "rows_cpu": rows_cpu}
        )
    )


def rows(first_id: int, count: int) -> list[tuple[object, ...]]:
    """The orders' row values, generated and validated as a consumer validates what it pulls (seed 7)."""
    mock = MockData(seed=7)
    return [order_values(Order.model_validate(mock.order(i))) for i in range(first_id, first_id + count)]


def write_batched(store: FactStore, orders: list[tuple[object, ...]], now: int) -> None:
    """Through the consumers' own write path: UNLOGGED batches grouped by replica."""

    def round_of(pending: list[tuple[tuple[object, ...], int]]) -> list[tuple[tuple[object, ...], int]]:
        errors = store.insert_orders(pending)
        return [row for row, error in zip(pending, errors, strict=True) if error is not None]

    write_all([(values, now) for values in orders], round_of)


def write_in_calls(
    write: Callable[[list[tuple[object, ...]], int], None],
    calls: int,
    call_rows: int,
    orders: list[tuple[object, ...]],
    now: int,
    rate: float = 0.0,
) -> None:
    """`orders` in calls of `call_rows` rows (0: one call), `calls` of them at once from as many
    threads, each thread taking the next rows as its call ends. `rate` (rows a second, 0: none):
    a call waits until its first row is due, as a steady stream would bring it."""
    size = call_rows or len(orders)
    if size >= len(orders):
        write(orders, now)
        return
    began = time.monotonic()
    starts = iter(range(0, len(orders), size))
    taking = threading.Lock()
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            while True:
                with taking:
                    start = next(starts, None)
                if start is None:
                    return
                if rate:
                    time.sleep(max(0.0, began + start / rate - time.monotonic()))
                write(orders[start : start + size], now)
        except BaseException as exc:  # raised in the main thread once every thread has ended
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def write_single(
    session: Session, insert: PreparedStatement, concurrency: int, orders: list[tuple[object, ...]], now: int
) -> None:
    """Single prepared INSERTs, `concurrency` in flight."""

    def round_of(pending: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
        results = execute_concurrent_with_args(
            session, insert, pending, concurrency=concurrency, raise_on_first_error=False
        )
        return [row for row, (ok, _) in zip(pending, results, strict=True) if not ok]

    write_all([(*values, now) for values in orders], round_of)


def write_all(rows: list[Row], write_round: Callable[[list[Row]], list[Row]]) -> None:
    """Rounds of writes until every row is written: a row that timed out under the load goes
    again, so every row counts; five rounds in a row that write none end it (the node is down)."""
    stalled = 0
    while rows:
        left = write_round(rows)
        stalled = stalled + 1 if len(left) == len(rows) else 0
        if stalled == 5:
            raise SystemExit(f"insert load: {len(left)} rows could not be written in five rounds; is the node up?")
        rows = left


if __name__ == "__main__":
    main()
