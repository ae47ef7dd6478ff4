"""Scenario: the BASELINE consumers (bench/baseline_consumers.py, the original scripts' approach) on the same data."""

from __future__ import annotations

import logging

from ..harness import PY, Bench, Figures, Plan, last_json, produce, run_process

__all__ = ["run"]

log = logging.getLogger(__name__)


def run(bench: Bench, plan: Plan, dlq: str) -> Figures:
    """Each baseline's rate, peak RSS and CPU per 10,000 messages, on `plan.baseline_n` messages."""
    log.info("baselines, %d messages each", plan.baseline_n)
    figures: Figures = {}
    orders, payments = bench.topic("baseline-orders"), bench.topic("baseline-payments")
    produce(bench, "order_data_producer.py", orders, plan.baseline_n)
    figures["baseline_orders_msgs"], figures["baseline_orders_rss_mib"], figures["baseline_orders_cpu10k"] = baseline(
        bench, "orders", orders, dlq, plan.baseline_n
    )
    produce(bench, "payments_data_producer.py", payments, plan.baseline_n, "--orphan-every", 0)
    figures["baseline_payments_msgs"], figures["baseline_payments_rss_mib"], figures["baseline_payments_cpu10k"] = (
        baseline(bench, "payments", payments, dlq, plan.baseline_n)
    )
    return figures


def baseline(bench: Bench, kind: str, topic: str, dlq: str, expected: int) -> tuple[float, float, float]:
    """The baseline's rate, its RSS, and its CPU seconds per 10,000 messages."""
    output, rss, cpu = run_process(
        [PY, "bench/baseline_consumers.py", kind, bench.subscription_path(topic), bench.topic_path(dlq)], bench.env
    )
    result = last_json(output)
    if result["processed"] < expected:
        raise RuntimeError(f"baseline {kind} processed {result['processed']} of {expected}")
    return result["processed"] / result["seconds"], rss, cpu / result["processed"] * 10_000
