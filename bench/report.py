"""The bench's report: the table, the ratios and the chart, from each repeat's figures."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from .harness import Figures
from .scenarios.sustained import STALL

__all__ = ["LABELS", "RATIOS", "TARGETS", "chart", "cpu_paragraph", "report", "target_cell"]

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
    (
        "beside_batched_msgs",
        "the same batches again, beside the one-worker drains: mean of a load just before and one just after",
        "batched INSERTs, beside the drains",
    ),
    (
        "beside_paced_msgs",
        "the same batches shaped like the order drain's writes, paced at its rate, just after the drains",
        "batched INSERTs, paced at the drain's rate",
    ),
    (
        "ceiling_batched_shaped_msgs",
        "the same batches, shaped like the order drain's writes: calls of 550 rows, 4 at once, no Pub/Sub",
        "batched INSERTs, shaped like a drain",
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
    # The node's target below, taken apart: the drain's write shape alone (no Pub/Sub), then the
    # rest of the drain (Pub/Sub and the consumer on the same cores) against that shape.
    "node CPU per 10k, batched shaped like a drain / batched ceiling": (
        "ceiling_batched_shaped_window_node_cpu10k",
        "ceiling_batched_window_node_cpu10k",
    ),
    "node CPU per 10k, order drain / batched shaped like it": (
        "order_consumer_window_node_cpu10k",
        "ceiling_batched_shaped_window_node_cpu10k",
    ),
    # And by rate: the drain's writes alone at the drain's own rate, against the load beside it
    # (unpaced), then the drain against those writes at its rate.
    "node CPU per 10k, shaped like the order drain and paced at its rate / batched load beside it": (
        "beside_paced_window_node_cpu10k",
        "beside_batched_window_node_cpu10k",
    ),
    "node CPU per 10k, order drain / its writes alone at its rate": (
        "order_consumer_window_node_cpu10k",
        "beside_paced_window_node_cpu10k",
    ),
    # The targets below as they were taken until the loads beside the drains: against the ceiling
    # scenario's load, minutes after the drains; and how far apart the two loads beside them were.
    "order consumer CPU / the ceiling scenario's batched loader CPU, per 10k": (
        "order_consumer_window_cpu10k",
        "ceiling_batched_window_cpu10k",
    ),
    "node CPU per 10k, order drain / the ceiling scenario's batched load": (
        "order_consumer_window_node_cpu10k",
        "ceiling_batched_window_node_cpu10k",
    ),
    "batched loader CPU per 10k, the load before the drains / the one after": (
        "beside_batched_before_window_cpu10k",
        "beside_batched_after_window_cpu10k",
    ),
    "node CPU per 10k, the load before the drains / the one after": (
        "beside_batched_before_window_node_cpu10k",
        "beside_batched_after_window_node_cpu10k",
    ),
}

# Issue 26's, within each repeat as RATIOS, against the batched loads beside the one-worker drains
# (bench/scenarios/drains.py says why): name: (numerator, denominator, the most it may be).
TARGETS = {
    "order consumer CPU / batched loader CPU beside it, per 10k, working windows": (
        "order_consumer_window_cpu10k",
        "beside_batched_window_cpu10k",
        1.25,
    ),
    "payment consumer CPU / batched loader CPU beside it, per 10k, working windows": (
        "payment_consumer_window_cpu10k",
        "beside_batched_window_cpu10k",
        1.5,
    ),
    "node CPU per 10k, order drain / batched load beside it": (
        "order_consumer_window_node_cpu10k",
        "beside_batched_window_node_cpu10k",
        1.2,
    ),
}
SUSTAINED_AFTER = "order_consumer_2w_msgs"  # the sustained rate's row comes after the order drains'
SUSTAINED_AT_LEAST = 0.8  # sustained rate / order drain rate: below it, the README says what limits it
COMPACTED = " In the row, how long a Cassandra node compacted during a step (its log), taking the pipeline's cores."
STALLED = (
    f" A step stalled when the producer wrote nothing for {STALL} s: blocked in publish, its messages unconfirmed."
)

# The table's CPU columns, each a figure's suffix after the row's prefix (its key less `_msgs`).
CPU_COLUMNS = [
    ("cpu10k", "CPU s/10k, whole run"),
    ("window_cpu10k", "own CPU s/10k"),
    ("window_node_cpu10k", "node CPU s/10k"),
    ("window_emulator_cpu10k", "emulator CPU s/10k"),
    ("window_node_jit_cpu10k", "of the node's, JIT s/10k"),
]
CPU_LEGEND = (
    "CPU seconds per 10,000 messages (user + system): *whole run*, the process and its workers from"
    " start to exit; *own*, *node*, *emulator*, over the working window only: a consumer from its"
    " start-up done (its `consuming` line) to its last batch settled (its idle exit less the idle"
    " time), with the Cassandra node(s) and the emulator over that span; the batched loaders"
    " from connected to their last row written (building and validating the rows included), with the"
    " node and the emulator while the rows were written; the pull + ack ceilings' emulator over the pulls."
)
JIT_LEGEND = (
    " *Of the node's, JIT*: the part of the node's that its just-in-time compiler threads used (a JVM"
    " still compiling, not the work asked of it)."
)


def target_cell(value: float, most: float) -> str:
    """`≤ 1.25: held` when the value is at most the target, else `≤ 1.25: not met`."""
    return f"\u2264 {most:g}: {'held' if value <= most else 'not met'}"


def ratio_row(name: str, each: list[float], target: str = "") -> str:
    """One row of the ratio table: the median of the repeats' own ratios, each of them, the target."""
    return f"| {name} | {statistics.median(each):.2f} | {', '.join(f'{r:.2f}' for r in each)} | {target} |"


def report(
    runs: list[Figures],
    n: int,
    baseline_n: int,
    latency_rate: int,
    *,
    machine: str,
    stack: str,
    sustained: Mapping[str, Any] | None = None,
) -> dict[str, object]:
    """The results as bench/results/*.json holds them: the runs, their medians and ratios, the
    sustained-rate search (once a run; bench/scenarios/sustained.py), and the Markdown table;
    `machine` and `stack` describe where they were taken."""
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    columns = [(suffix, title) for suffix, title in CPU_COLUMNS if any(k.endswith(f"_{suffix}") for k in median)]
    lines = [
        f"Machine: {machine}. {stack} and the Pub/Sub emulator on the same machine.",
        f"N = {n:,} messages ({baseline_n:,} for the baselines), median of {len(runs)} repeats.",
        "",
        "| measurement | msg/s (median) | each repeat | peak RSS |" + "".join(f" {t} |" for _, t in columns),
        "|---|---:|---|---:|" + "---:|" * len(columns),
    ]
    for key, label, _ in LABELS:
        if key not in median:  # a measurement added after these results were taken
            continue
        prefix = key.removesuffix("_msgs")
        rss = f"{median[f'{prefix}_rss_mib']:.0f} MiB" if f"{prefix}_rss_mib" in median else ""
        cpu = [f"{median[f'{prefix}_{s}']:.2f}" if f"{prefix}_{s}" in median else "" for s, _ in columns]
        repeats = ", ".join(f"{r[key]:,.0f}" for r in runs)
        lines.append(f"| {label} | {median[key]:,.0f} | {repeats} | {rss} |" + "".join(f" {c} |" for c in cpu))
        if key == SUSTAINED_AFTER and sustained is not None:
            lines.append(sustained_row(sustained, [s for s, _ in columns]))
    if SUSTAINED_AFTER not in median and sustained is not None:
        lines.append(sustained_row(sustained, [s for s, _ in columns]))
    if columns[1:]:
        lines += ["", CPU_LEGEND + (JIT_LEGEND if any(s == "window_node_jit_cpu10k" for s, _ in columns) else "")]
    ratios = {}
    lines += ["", "| ratio, within each repeat | median | each repeat | target |", "|---|---:|---|---|"]
    for name, (top, bottom, most) in [(k, (*v, None)) for k, v in RATIOS.items()] + list(TARGETS.items()):
        if top in median and bottom in median:  # else taken before that measurement existed
            each = [run[top] / run[bottom] for run in runs]
            ratios[name] = statistics.median(each)
            lines.append(ratio_row(name, each, "" if most is None else target_cell(ratios[name], most)))
    if sustained is not None and "order_consumer_msgs" in median:
        name = "sustained rate / order drain rate (median of the repeats; the sustained rate is taken once)"
        ratios[name] = float(sustained["rate"]) / median["order_consumer_msgs"]
        held = "held" if ratios[name] >= SUSTAINED_AT_LEAST else "not met: the README says what limits it"
        lines.append(ratio_row(name, [ratios[name]], f"\u2265 {SUSTAINED_AT_LEAST:g}: {held}"))
    latency = [
        f"{q} {median[f'latency_{q}_ms']:.0f} ms" for q in ("p50", "p90", "p99", "max") if f"latency_{q}_ms" in median
    ]
    lines += [
        "",
        f"End-to-end latency of the order consumer at a steady {latency_rate:,} msg/s (publish time to "
        "row written and acked, median of the repeats): " + ", ".join(latency) + ".",
    ]
    if sustained is not None:
        lines += ["", sustained_paragraph(sustained)]
    if "order_consumer_window_node_cpu10k" in median and "ceiling_batched_window_node_cpu10k" in median:
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
        "sustained": dict(sustained) if sustained is not None else None,
        "table": "\n".join(lines),
    }


def sustained_row(sustained: Mapping[str, Any], suffixes: list[str]) -> str:
    """The sustained rate as a row of the table: the steps tried in its `each repeat` column, the
    consumer's own CPU at that rate in the `own` column."""
    steps = ", ".join(f"{s['rate']:,.0f} {verdict(s)}{compacting(s)}" for s in sustained["steps"])
    best = sustained["best"]
    cpu = [f"{best['consumer_cpu10k']:.2f}" if best and suffix == "window_cpu10k" else "" for suffix in suffixes]
    label = f"order_data_consumer.py (this project), sustained: p99 < 1 s for {sustained['seconds']} s, backlog bounded"
    return f"| {label} | {sustained['rate']:,.0f} | once: {steps} |  |" + "".join(f" {c} |" for c in cpu)


def compacting(step: Mapping[str, Any]) -> str:
    """How long a node compacted during the step, if it did (older results lack the figure)."""
    seconds = step.get("compacting_s", 0.0)
    return f" (a node compacting {seconds:.1f} s)" if seconds > 0 else ""  # NaN: not measured


def verdict(step: Mapping[str, Any]) -> str:
    """held, not (held), or stalled (bench/scenarios/sustained.py)."""
    return "stalled" if step.get("stalled") else "held" if step["held"] else "not"


def sustained_paragraph(sustained: Mapping[str, Any]) -> str:
    """What the sustained rate means, the producer's CPU beside it, and what a stalled step was."""
    stalled = any(step.get("stalled") for step in sustained["steps"])
    compacted = any(compacting(step) for step in sustained["steps"])
    return _sustained_sentences(sustained) + (STALLED if stalled else "") + (COMPACTED if compacted else "")


def _sustained_sentences(sustained: Mapping[str, Any]) -> str:
    best = sustained["best"]
    opening = (
        f"Sustained rate (once a run, {len(sustained['steps'])} steps of {sustained['seconds']} s): the highest steady"
        " publish rate at which the order consumer (one process) applied at least 99 % of the orders within 1 s of"
        " their publish time, with at most one second's worth of them outstanding when the last was published and"
        " the producer keeping the rate"
    )
    if not best:
        return opening + f": none of the rates tried held ({sustained['steps'][-1]['rate']:,.0f} msg/s the last)."
    return opening + (
        f": {sustained['rate']:,.0f} msg/s ({best['within_1s']:.1%} within 1 s, p99 {best['p99_ms']:.0f} ms over the"
        f" last 100,000, {best['backlog']:,.0f} outstanding at the end). Beside it the producer, on the same two"
        f" cores, used {best['producer_cpu10k']:.2f} CPU-seconds per 10,000 orders ({best['producer_cores']:.2f}"
        f" cores), and the consumer {best['consumer_cpu10k']:.2f}."
    )


def cpu_paragraph(median: dict[str, float]) -> str:
    """Where the CPU went, per 10,000 orders: the order consumer's drain against the ceiling's."""
    consumer, node, emulator = (
        median[f"order_consumer_window_{k}"] for k in ("cpu10k", "node_cpu10k", "emulator_cpu10k")
    )
    return (
        (
            "CPU seconds per 10,000 orders over the working windows (medians): the order consumer's drain used"
            f" {consumer:.2f} in the consumer, {node:.2f} in Cassandra and {emulator:.2f} in the emulator,"
            f" {consumer + node + emulator:.2f} in all; the batched ceiling used"
            f" {median['ceiling_batched_window_node_cpu10k']:.2f} in Cassandra and"
            f" {median['ceiling_batched_window_cpu10k']:.2f} in its loader"
            + (
                f" ({median['ceiling_batched_rows_cpu10k']:.2f} of it building and validating the rows, so"
                f" {median['ceiling_batched_window_cpu10k'] - median['ceiling_batched_rows_cpu10k']:.2f} writing them)"
                if "ceiling_batched_rows_cpu10k" in median
                else ""
            )
            + "."
        )
        + (
            f" Of the node's, its just-in-time compiler used {median['order_consumer_window_node_jit_cpu10k']:.2f}"
            f" in the drain and {median['ceiling_batched_window_node_jit_cpu10k']:.2f} in the ceiling."
            if "order_consumer_window_node_jit_cpu10k" in median and "ceiling_batched_window_node_jit_cpu10k" in median
            else ""
        )
        + (
            " The emulator alone, pull + ack with no database, used"
            f" {median['ceiling_pull_ack_window_emulator_cpu10k']:.2f} with each pull's messages acked before the"
            f" next pull and {median['ceiling_pull_ack_late_window_emulator_cpu10k']:.2f} with them acked one pull"
            " late: its pull rebuilds its whole list of undelivered messages whenever any delivered one is"
            " still unacked, as a consumer's always are while it writes."
            if "ceiling_pull_ack_late_window_emulator_cpu10k" in median
            else ""
        )
    )


CPU_ROWS = [  # the chart's CPU panel: row prefix, label
    ("order_consumer", "order consumer"),
    ("order_consumer_2w", "order consumer, 2 workers"),
    ("payment_consumer", "payment consumer"),
    ("payment_consumer_2w", "payment consumer, 2 workers"),
    ("ceiling_batched", "batched ceiling (loader)"),
    ("beside_batched", "batched, beside the drains (loader)"),
    ("ceiling_batched_shaped", "batched, shaped like a drain"),
    ("beside_paced", "batched, paced at the drain's rate"),
]


def chart(result: dict[str, object], path: Path) -> None:
    """The rates as bars (log scale, the sustained rate among them), the CPU per 10,000 messages
    by component over the working windows, and the latency percentiles, as a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    median = cast(dict[str, float], result["median"])  # latest.json as written by write_results
    sustained = cast(dict[str, Any] | None, result.get("sustained"))
    figure, (bars, cpu, latency) = plt.subplots(1, 3, figsize=(17, 5.5), gridspec_kw={"width_ratios": [2.2, 1.2, 1]})
    rows = [(short, median[key]) for key, _, short in LABELS if key in median]
    if sustained is not None and sustained["rate"] > 0:  # none held: no bar on a log scale
        rows.insert(
            next((k + 1 for k, (short, _) in enumerate(rows) if short == "order consumer, 2 workers"), len(rows)),
            ("order consumer, sustained", float(sustained["rate"])),
        )
    rows.reverse()  # top to bottom in the table's order
    colours = {"BASELINE": "#d98c8c", "ceiling": "#b5b5b5", "order consumer, sustained": "#4f7a3a"}
    values = [value for _, value in rows]
    positions = range(len(rows))
    bars.barh(
        positions,
        values,
        color=[next((c for k, c in colours.items() if short.startswith(k)), "#7a9cc6") for short, _ in rows],
    )
    bars.set_yticks(positions, [short for short, _ in rows])
    bars.set_xscale("log")
    bars.set_xlim(right=max(values) * 4)
    bars.set_xlabel("messages per second (log scale, median of the repeats)")
    for y, (_, value) in enumerate(rows):
        bars.text(value * 1.05, y, f"{value:,.0f}", va="center", fontsize=8)
    cpu_rows = [(prefix, label) for prefix, label in CPU_ROWS[::-1] if f"{prefix}_window_cpu10k" in median]
    left = [0.0] * len(cpu_rows)
    for suffix, name, colour in (
        ("window_cpu10k", "consumer / loader", "#7a9cc6"),
        ("window_node_cpu10k", "Cassandra node", "#e0a35a"),
        ("window_emulator_cpu10k", "emulator", "#b5b5b5"),
    ):
        widths = [median.get(f"{prefix}_{suffix}", 0.0) for prefix, _ in cpu_rows]
        cpu.barh(range(len(cpu_rows)), widths, left=left, color=colour, label=name)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    cpu.set_yticks(range(len(cpu_rows)), [label for _, label in cpu_rows])
    cpu.set_xlabel("CPU seconds per 10,000 messages, working window")
    if cpu_rows:
        cpu.set_xlim(right=max(left) * 2.2)  # room for the legend beside the bars
        cpu.legend(fontsize=8, loc="lower right")
    quantiles = [q for q in ("p50", "p90", "p99", "max") if f"latency_{q}_ms" in median]
    latency.plot(quantiles, [median[f"latency_{q}_ms"] for q in quantiles], marker="o", color="#7a9cc6")
    latency.set_ylim(bottom=0)
    latency.set_ylabel("ms, publish time to row written and acked")
    latency.set_title(f"order consumer at {result['latency_rate']:,} msg/s", fontsize=10)
    figure.suptitle(f"make bench: {result['machine']}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
