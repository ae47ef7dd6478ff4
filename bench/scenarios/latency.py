"""Scenario: the order consumer's end-to-end latency at a steady publish rate below its capacity."""

from __future__ import annotations

import logging
import subprocess
import time

from ..harness import ROOT, Bench, Figures, Plan, consumer_argv, final_figures, produce

__all__ = ["run"]

log = logging.getLogger(__name__)


def run(bench: Bench, plan: Plan, dlq: str) -> Figures:
    """`latency_<q>_ms` for p50, p90, p99 and max: publish time to row written and acked, as
    the consumer measured it, at `plan.latency_rate` messages a second for `plan.latency_seconds`."""
    log.info("latency at %d msg/s for %d s", plan.latency_rate, plan.latency_seconds)
    figures: Figures = {}
    orders = bench.topic("latency")
    consumer = subprocess.Popen(
        consumer_argv("order_data_consumer.py", orders, dlq, 5),
        cwd=ROOT,
        env=bench.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    time.sleep(3)  # the consumer connects before the first message is published
    produce(bench, "order_data_producer.py", orders, plan.latency_rate * plan.latency_seconds, rate=plan.latency_rate)
    output = consumer.communicate(timeout=120)[0].decode(errors="replace")
    for key, value in final_figures(output).items():
        if key in {"p50", "p90", "p99", "max"}:
            figures[f"latency_{key}_ms"] = value
    return figures
