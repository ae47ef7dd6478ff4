"""Scenario: payments racing ahead of their orders: how soon after its order is each payment applied?

With the three consumer scripts running (orders, payments, the DLQ replay), `count` payments
are published at `rate` per second, each 0 to `max_ahead` seconds (uniformly) before its own
order. The payment consumer dead-letters each payment whose order is not there yet; the replay
applies it once the order is written. Cassandra is polled every 0.1 s for every row: the first
time a row is seen is "order written", the first time it has its payment "payment applied".
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import subprocess
import sys
import time

from ecom_pipeline.mockdata import MockData
from ecom_pipeline.producer import ORPHAN_ID_OFFSET

from ..harness import ROOT, Bench, Figures, Plan

__all__ = ["race", "run"]

log = logging.getLogger(__name__)
FIRST_ID = 3 * ORPHAN_ID_OFFSET  # far from every other phase's ids


def run(bench: Bench, plan: Plan, dlq: str) -> Figures:
    """`racing_p50_s`, `racing_p99_s`, `racing_max_s` and `racing_measured`: 500 payments at 20
    a second, up to 30 s ahead (the plan's sizes do not apply; the race has its own topics)."""
    log.info("payments racing 0-30 s ahead of their orders, all three consumer scripts running")
    return race(bench)


def race(bench: Bench, count: int = 500, rate: float = 20.0, max_ahead: float = 30.0) -> dict[str, float]:
    """p50, p99 and max of (payment applied - order written), in seconds, and how many were measured."""
    orders, payments, dlq = bench.topic("race-orders"), bench.topic("race-payments"), bench.topic("race-dlq")
    scripts = [
        subprocess.Popen(
            [sys.executable, script, "--subscription", f"{source}-sub", "--dead-letter-topic", dlq],
            cwd=ROOT,
            env=bench.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for script, source in (
            ("order_data_consumer.py", orders),
            ("ingest_in_fact_table.py", payments),
            ("replay_dlq_payments.py", dlq),
        )
    ]
    try:
        time.sleep(3)  # the three connect before the first message is published
        mock, draw = MockData(seed=11), random.Random(11)
        events = []
        for k in range(count):
            order_id = FIRST_ID + k
            paid_at = k / rate
            events.append((paid_at, payments, json.dumps(mock.payment(order_id, order_id)).encode()))
            events.append((paid_at + draw.uniform(0, max_ahead), orders, json.dumps(mock.order(order_id)).encode()))
        events.sort(key=lambda event: event[0])
        lags = _publish_and_watch(bench, events, count)
    finally:
        for script in scripts:
            script.terminate()
        for script in scripts:
            script.wait(60)
    return {
        "racing_measured": float(len(lags)),
        "racing_p50_s": statistics.median(lags),
        "racing_p99_s": sorted(lags)[min(len(lags) - 1, int(0.99 * len(lags)))],
        "racing_max_s": max(lags),
    }


def _publish_and_watch(bench: Bench, events: list[tuple[float, str, bytes]], count: int) -> list[float]:
    ids = ",".join(str(FIRST_ID + k) for k in range(count))
    query = f"SELECT order_id, payment_id FROM orders_payments_facts WHERE order_id IN ({ids})"
    order_seen: dict[int, float] = {}
    payment_seen: dict[int, float] = {}
    started = time.monotonic()
    deadline = started + events[-1][0] + 600
    pending = list(events)
    while len(payment_seen) < count:
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError(f"racing payments: only {len(payment_seen)} of {count} applied in time")
        while pending and started + pending[0][0] <= now:
            _, topic, data = pending.pop(0)
            bench.publish(topic, data)
        for row in bench.session.execute(query, timeout=30):
            order_seen.setdefault(row.order_id, now)
            if row.payment_id is not None:
                payment_seen.setdefault(row.order_id, now)
        time.sleep(0.1)
    return [payment_seen[order_id] - order_seen[order_id] for order_id in payment_seen]
