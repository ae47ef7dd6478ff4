"""Scenario: the order consumer's end-to-end latency at a steady publish rate below its capacity."""

from __future__ import annotations

import logging

from ..harness import Bench, Figures, Plan, Watched, consumer_argv, final_figures, produce
from ..measure import CONSUMING

__all__ = ["run"]

log = logging.getLogger(__name__)


def run(bench: Bench, plan: Plan, dlq: str) -> Figures:
    """`latency_<q>_ms` for p50, p90, p99 and max: publish time to row written and acked, as
    the consumer measured it, at `plan.latency_rate` messages a second for `plan.latency_seconds`."""
    log.info("latency at %d msg/s for %d s", plan.latency_rate, plan.latency_seconds)
    figures: Figures = {}
    orders = bench.topic("latency")
    consumer = Watched(consumer_argv("order_data_consumer.py", orders, dlq, 5), bench.env)
    # Its start-up done (connected, checks passed) before the first message is published.
    consumer.wait_for_line(CONSUMING.pattern, timeout=120)
    produce(bench, "order_data_producer.py", orders, plan.latency_rate * plan.latency_seconds, rate=plan.latency_rate)
    consumer.wait(timeout=120)
    for key, value in final_figures(consumer.output).items():
        if key in {"p50", "p90", "p99", "max"}:
            figures[f"latency_{key}_ms"] = value
    return figures
