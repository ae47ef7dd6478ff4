"""BASELINE, for the benchmark only: consumers written the way the original scripts were.

- orders:   streaming pull (`subscribe()`), and in the callback one synchronous INSERT, then ack;
- payments: synchronous pull of up to 10, then per message a SELECT and an UPDATE (or a publish
            to the DLQ when the order is missing), each waited for, then one ack for the batch.

No validation, no retries, no dead-letter reasons: the shape of the original code, so that
`make bench` can compare the project's consumers with it on the same data. Prints one JSON line:
{"processed": N, "seconds": busy time from the first message to the last}.

Usage: baseline_consumers.py orders|payments SUBSCRIPTION DLQ_TOPIC --idle SECONDS
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

from cassandra.cluster import Cluster, Session
from google.cloud import pubsub_v1

INSERT = (
    "INSERT INTO orders_payments_facts (order_id, customer_id, item, quantity, price, shipping_address,"
    " order_status, creation_date) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
SELECT = "SELECT order_id FROM orders_payments_facts WHERE order_id = ?"
UPDATE = (
    "UPDATE orders_payments_facts SET payment_id = ?, payment_method = ?, card_last_four = ?,"
    " payment_status = ?, payment_datetime = ? WHERE order_id = ?"
)


class Progress:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.processed = 0
        self.first: float | None = None
        self.last = time.monotonic()

    def tick(self, count: int = 1) -> None:
        with self.lock:
            now = time.monotonic()
            self.first = self.first or now
            self.last = now
            self.processed += count


def run_orders(session: Session, subscription: str, idle: float) -> Progress:
    insert = session.prepare(INSERT)
    progress = Progress()

    def callback(message: pubsub_v1.subscriber.message.Message) -> None:
        o = json.loads(message.data)
        session.execute(
            insert,
            (
                o["order_id"],
                o["customer_id"],
                o["item"],
                o["quantity"],
                o["price"],
                o["shipping_address"],
                o["order_status"],
                o["creation_date"],
            ),
        )
        message.ack()
        progress.tick()

    subscriber = pubsub_v1.SubscriberClient()
    future = subscriber.subscribe(subscription, callback)
    while time.monotonic() - progress.last < idle:
        time.sleep(0.2)
    future.cancel()
    future.result(timeout=30)
    subscriber.close()
    return progress


def run_payments(session: Session, subscription: str, dlq_topic: str, idle: float) -> Progress:
    select, update = session.prepare(SELECT), session.prepare(UPDATE)
    subscriber, publisher = pubsub_v1.SubscriberClient(), pubsub_v1.PublisherClient()
    progress = Progress()
    while time.monotonic() - progress.last < idle:
        response = subscriber.pull(subscription=subscription, max_messages=10, timeout=5)
        if not response.received_messages:
            continue
        for received in response.received_messages:
            p = json.loads(received.message.data)
            if session.execute(select, (p["order_id"],)).one():
                session.execute(
                    update,
                    (
                        p["payment_id"],
                        p["payment_method"],
                        p["card_last_four"],
                        p["payment_status"],
                        p["payment_datetime"],
                        p["order_id"],
                    ),
                )
            else:
                publisher.publish(dlq_topic, received.message.data).result()
        subscriber.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in response.received_messages])
        progress.tick(len(response.received_messages))
    subscriber.close()
    return progress


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["orders", "payments"])
    parser.add_argument("subscription", help="full subscription path")
    parser.add_argument("dlq_topic", help="full topic path")
    parser.add_argument("--idle", type=float, default=3.0)
    args = parser.parse_args()
    hosts = [host.strip() for host in os.environ.get("CASSANDRA_HOSTS", "127.0.0.1").split(",")]
    cluster = Cluster(hosts, port=int(os.environ.get("CASSANDRA_PORT", "9042")))
    session = cluster.connect(os.environ.get("CASSANDRA_KEYSPACE", "ecom_store"))
    if args.kind == "orders":
        progress = run_orders(session, args.subscription, args.idle)
    else:
        progress = run_payments(session, args.subscription, args.dlq_topic, args.idle)
    cluster.shutdown()
    busy = (progress.last - progress.first) if progress.first else 0.0
    print(json.dumps({"processed": progress.processed, "seconds": busy}))


if __name__ == "__main__":
    main()
