"""The bench's report: the table, the ratios and the chart, from each repeat's figures."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import cast

from .harness import Figures

__all__ = ["LABELS", "RATIOS", "chart", "cpu_paragraph", "report"]

LABELS = [  # key, row label, chart label
    ("producer_orders_msgs", "order_data_producer.py --rate 0", "order producer"),
    ("producer_payments_msgs", "payments_data_producer.py --rate 0", "payment producer"),
    ("order_consumer_msgs", "order_data_consumer.py (this project)", "order_data_consumer.py"),
    ("order_consumer_2w_msgs", "order_data_consumer.py --workers 2 (this project)", "order consumer, 2 workers"),
    ("baseline_orders_msgs", "BASELINE orders: subscribe() callback, 1 sync INSERT each", "BASELINE orders"),
    ("payment_consumer_msgs", "ingest_in_fact_table.py (this project)", "ingest_in_fact_table.py"),
    ("payment_consumer_2w_msgs", "ingest_in_fact_table.py --workers 2 (this project)", "payment consumer, 2 workers"),
    ("baseline_payments_msgs", "BASELINE payments: pull 10, sync SELECT + UPDATE each", "BASELINE payments"),
    ("ceiling_pull_ack_msgs", "ceiling: pull 1,000 + bulk ack, no database", "ceiling: pull + ack"),
    (
        "ceiling_pull_ack_late_msgs",
        "ceiling: pull 1,000 + bulk ack after the next pull, no database",
        "ceiling: pull + ack one pull late",
    ),
    (
        "ceiling_inserts_1p_msgs",
        "ceiling: prepared INSERTs, 1 process, 512 in flight, no Pub/Sub",
        "ceiling: INSERTs, 1 process",
    ),
    (
        "ceiling_inserts_2p_msgs",
        "ceiling: prepared INSERTs, 2 processes, 256 in flight each, no Pub/Sub",
        "ceiling: INSERTs, 2 processes",
    ),
    (
        "ceiling_batched_msgs",
        "ceiling: prepared INSERTs in UNLOGGED batches grouped by replica, 1 process, no Pub/Sub",
        "ceiling: batched INSERTs",
    ),
]

RATIOS = {  # name: (numerator, denominator); computed within each repeat, then the median
    "order consumer / orders baseline": ("order_consumer_msgs", "baseline_orders_msgs"),
    "order consumer, 2 workers / orders baseline": ("order_consumer_2w_msgs", "baseline_orders_msgs"),
    "payment consumer / payments baseline": ("payment_consumer_msgs", "baseline_payments_msgs"),
    "payment consumer, 2 workers / payments baseline": ("payment_consumer_2w_msgs", "baseline_payments_msgs"),
    "order consumer / batched INSERT ceiling": ("order_consumer_msgs", "ceiling_batched_msgs"),
    "order consumer / best INSERT ceiling": ("order_consumer_msgs", "ceiling_inserts_msgs"),
    "order consumer, 2 workers / best INSERT ceiling": ("order_consumer_2w_msgs", "ceiling_inserts_msgs"),
    "payment consumer / order consumer": ("payment_consumer_msgs", "order_consumer_msgs"),
    "best INSERT ceiling / orders baseline": ("ceiling_inserts_msgs", "baseline_orders_msgs"),
}


def report(
    runs: list[Figures], n: int, baseline_n: int, latency_rate: int, *, machine: str, stack: str
) -> dict[str, object]:
    """The results as bench/results/*.json holds them: the runs, their medians and ratios, and
    the Markdown table; `machine` and `stack` describe where they were taken."""
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    lines = [
        f"Machine: {machine}. {stack} and the Pub/Sub emulator on the same machine.",
        f"N = {n:,} messages ({baseline_n:,} for the baselines), median of {len(runs)} repeats.",
        "",
        "| measurement | msg/s (median) | each repeat | peak RSS | CPU s / 10k msgs |",
        "|---|---:|---|---:|---:|",
    ]
    for key, label, _ in LABELS:
        if key not in median:  # a measurement added after these results were taken
            continue
        rss_key, cpu_key = key.replace("_msgs", "_rss_mib"), key.replace("_msgs", "_cpu10k")
        rss = f"{median[rss_key]:.0f} MiB" if rss_key in median else ""
        cpu = f"{median[cpu_key]:.1f}" if cpu_key in median else ""
        repeats = ", ".join(f"{r[key]:,.0f}" for r in runs)
        lines.append(f"| {label} | {median[key]:,.0f} | {repeats} | {rss} | {cpu} |")
    ratios = {}
    lines += ["", "| ratio, within each repeat | median | each repeat |", "|---|---:|---|"]
    for name, (top, bottom) in RATIOS.items():
        each = [run[top] / run[bottom] for run in runs]
        ratios[name] = statistics.median(each)
        lines.append(f"| {name} | {ratios[name]:.2f} | {', '.join(f'{r:.2f}' for r in each)} |")
    latency = [
        f"{q} {median[f'latency_{q}_ms']:.0f} ms" for q in ("p50", "p90", "p99", "max") if f"latency_{q}_ms" in median
    ]
    lines += [
        "",
        f"End-to-end latency of the order consumer at a steady {latency_rate:,} msg/s (publish time to "
        "row written and acked, median of the repeats): " + ", ".join(latency) + ".",
    ]
    if "order_consumer_node_cpu10k" in median:
        lines += ["", cpu_paragraph(median)]
    if "racing_p99_s" in median:
        per_repeat = ", ".join(f"{r['racing_p50_s']:.1f}/{r['racing_p99_s']:.1f}" for r in runs)
        lines += [
            "",
            "Payments racing 0-30 s ahead of their orders (500 a repeat, the three consumer scripts running): "
            f"payment applied - order written, p50 {median['racing_p50_s']:.1f} s, p99 {median['racing_p99_s']:.1f} s, "
            f"max {median['racing_max_s']:.1f} s (median of the repeats; p50/p99 of each: {per_repeat}).",
        ]
    return {
        "machine": machine,
        "n": n,
        "baseline_n": baseline_n,
        "latency_rate": latency_rate,
        "runs": runs,
        "median": median,
        "ratios": ratios,
        "table": "\n".join(lines),
    }


def cpu_paragraph(median: dict[str, float]) -> str:
    """Where the CPU went, per 10,000 orders: the order consumer's drain against the ceiling's."""
    consumer, node, emulator = (median[f"order_consumer_{k}"] for k in ("cpu10k", "node_cpu10k", "emulator_cpu10k"))
    return (
        "CPU seconds per 10,000 orders over each whole run (medians; start-up and the idle wait"
        f" included): the order consumer's drain used {consumer:.2f} in the consumer, {node:.2f} in"
        f" Cassandra and {emulator:.2f} in the emulator, {consumer + node + emulator:.2f} in all; the"
        f" batched ceiling used {median['ceiling_batched_node_cpu10k']:.2f} in Cassandra (its loader"
        f" {median['ceiling_batched_cpu10k']:.2f}, generating the orders included)."
    ) + (
        " The emulator alone, pull + ack with no database, used"
        f" {median['ceiling_pull_ack_emulator_cpu10k']:.2f} with each pull's messages acked before the"
        f" next pull and {median['ceiling_pull_ack_late_emulator_cpu10k']:.2f} with them acked one pull"
        " late: its pull rebuilds its whole list of undelivered messages whenever any delivered one is"
        " still unacked, as a consumer's always are while it writes."
        if "ceiling_pull_ack_late_emulator_cpu10k" in median
        else ""
    )


def chart(result: dict[str, object], path: Path) -> None:
    """The rates as bars (log scale) beside the latency percentiles, as a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    median = cast(dict[str, float], result["median"])  # latest.json as written by write_results
    figure, (bars, latency) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [2.2, 1]})
    rows = [row for row in LABELS[::-1] if row[0] in median]  # top to bottom in the table's order
    colours = {"BASELINE": "#d98c8c", "ceiling": "#b5b5b5"}
    values = [median[key] for key, _, _ in rows]
    positions = range(len(rows))
    bars.barh(
        positions,
        values,
        color=[next((c for k, c in colours.items() if short.startswith(k)), "#7a9cc6") for _, _, short in rows],
    )
    bars.set_yticks(positions, [short for _, _, short in rows])
    bars.set_xscale("log")
    bars.set_xlim(right=max(values) * 4)
    bars.set_xlabel("messages per second (log scale, median of the repeats)")
    for y, value in zip(positions, values, strict=True):
        bars.text(value * 1.05, y, f"{value:,.0f}", va="center", fontsize=8)
    quantiles = [q for q in ("p50", "p90", "p99", "max") if f"latency_{q}_ms" in median]
    latency.plot(quantiles, [median[f"latency_{q}_ms"] for q in quantiles], marker="o", color="#7a9cc6")
    latency.set_ylim(bottom=0)
    latency.set_ylabel("ms, publish time to row written and acked")
    latency.set_title(f"order consumer at {result['latency_rate']:,} msg/s", fontsize=10)
    figure.suptitle(f"make bench: {result['machine']}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
