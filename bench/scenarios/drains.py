"""Scenario: the project's order and payment consumers draining a backlog, with one worker and with two."""

from __future__ import annotations

import logging

from ..harness import PY, Bench, Figures, Plan, final_figures, run_process
from ..measure import StackCpu
from . import producers

__all__ = ["run"]

log = logging.getLogger(__name__)


def run(bench: Bench, plan: Plan, dlq: str) -> Figures:
    """Per worker count (suffix `_2w` for two): the producers' rates on the backlogs, and each
    consumer's rate, peak RSS and CPU per 10,000 messages (the order consumer's with the node(s)'
    and the emulator's)."""
    figures: Figures = {}
    bench.truncate()
    for workers, suffix in ((1, ""), (2, "_2w")):
        log.info("producers and the project's consumers (%d worker(s)), %d messages each", workers, plan.n)
        orders, payments = bench.topic("orders"), bench.topic("payments")
        figures.update(producers.publish(bench, "orders", orders, plan.n, suffix))
        result, figures[f"order_consumer{suffix}_rss_mib"] = consume(
            bench, "order_data_consumer.py", orders, dlq, plan.n, workers
        )
        figures[f"order_consumer{suffix}_msgs"] = result["rate"]
        figures[f"order_consumer{suffix}_cpu10k"] = result["cpu10k"]
        figures[f"order_consumer{suffix}_node_cpu10k"] = result["node_cpu10k"]
        figures[f"order_consumer{suffix}_emulator_cpu10k"] = result["emulator_cpu10k"]
        figures.update(producers.publish(bench, "payments", payments, plan.n, suffix))
        result, figures[f"payment_consumer{suffix}_rss_mib"] = consume(
            bench, "ingest_in_fact_table.py", payments, dlq, plan.n, workers
        )
        figures[f"payment_consumer{suffix}_msgs"] = result["rate"]
        figures[f"payment_consumer{suffix}_cpu10k"] = result["cpu10k"]
    return figures


def consume(
    bench: Bench, script: str, topic: str, dlq: str, expected: int, workers: int
) -> tuple[dict[str, float], float]:
    """The consumer's final figures, plus `cpu10k` (CPU seconds per 10,000 messages) and the
    node(s)' and emulator's (`node_cpu10k`, `emulator_cpu10k`) over the same run; its RSS."""
    stack = StackCpu()
    output, rss, cpu = run_process(
        [
            PY,
            script,
            "--subscription",
            f"{topic}-sub",
            "--dead-letter-topic",
            dlq,
            "--exit-after-idle",
            "3",
            "--workers",
            str(workers),
        ],
        bench.env,
    )
    figures = final_figures(output)
    if figures["applied"] != expected:
        raise RuntimeError(f"{script} applied {figures['applied']:.0f} of {expected}:\n{output[-2000:]}")
    node, emulator = stack.take()
    figures["cpu10k"] = cpu / expected * 10_000
    figures["node_cpu10k"], figures["emulator_cpu10k"] = node / expected * 10_000, emulator / expected * 10_000
    return figures, rss
