"""`make bench`: throughput and latency of the pipeline on the real local stack, in one run.

On the same generated data (seed 7), each repeat measures:
- the producers' `--rate 0` publish rate;
- the project's order and payment consumers draining a backlog of N messages, with one worker
  process and with `--workers 2` (their busy-span rate, as printed in their final line), and
  their peak RSS (VmHWM, summed over worker processes);
- the BASELINE consumers (bench/baseline_consumers.py, the original scripts' approach);
- the raw ceilings: pull + bulk ack with no database, and prepared INSERTs through the driver
  (bench/insert_load.py) from one process and from two, and in the consumers' own UNLOGGED
  batches grouped by replica, with no Pub/Sub, on an empty table;
- each consumer's CPU seconds (user + system, its workers included) per 10,000 messages, and
  for the order consumer and the batched ceiling also the Cassandra node(s)' and the emulator's
  (from /proc, the stack's own processes): where the two cores went;
- end-to-end latency at a steady publish rate below capacity (publish time to row written and
  acked, measured by the consumer);
- payments racing 0-30 s ahead of their orders, healed by the DLQ replay (bench/racing.py):
  payment applied - order written, as seen by polling Cassandra.
Everything runs against keyspace `ecom_bench` and uuid-named topics, which are deleted at the end.
The table shows the median of the repeats, and ratios taken within each repeat; the figures go
to bench/results/latest.json and latest.png (`--results NAME` for another name; `--redraw`
redoes both from the JSON).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent import futures
from contextlib import suppress
from pathlib import Path
from typing import cast

from google.api_core import exceptions as google_exceptions
from google.cloud import pubsub_v1

from ecom_pipeline.admin import SCHEMA, apply_schema, replication_factor_from
from ecom_pipeline.cassandra_io import connect_session
from ecom_pipeline.config import CassandraSettings, PubSubSettings
from stack.emulator import PUBSUB
from stack.node import cassandra_node

from .racing import race

ROOT = Path(__file__).resolve().parent.parent

PY = sys.executable
KEYSPACE = "ecom_bench"
RESULTS = ROOT / "bench" / "results"
log = logging.getLogger("bench")


class Bench:
    """The bench's private topics, subscriptions and keyspace, and how to run a script on them."""

    def __init__(self) -> None:
        self.suffix = uuid.uuid4().hex[:8]
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        self.topics: list[str] = []
        self.env = {**os.environ, "CASSANDRA_KEYSPACE": KEYSPACE}
        self.pubsub = PubSubSettings.from_env(self.env)
        cassandra = CassandraSettings.from_env(self.env)
        apply_schema(cassandra, SCHEMA.read_text(), replication_factor_from(self.env))  # 3 on the local cluster
        self.cluster, self.session = connect_session(cassandra, KEYSPACE)

    def topic(self, name: str) -> str:
        """Create a new `bench-<name>-<suffix>-<k>` and its subscription; return the topic's name."""
        full = f"bench-{name}-{self.suffix}-{len(self.topics)}"
        self.publisher.create_topic(name=self.topic_path(full))
        self.subscriber.create_subscription(
            name=self.subscription_path(full), topic=self.topic_path(full), ack_deadline_seconds=60
        )
        self.topics.append(full)
        return full

    def topic_path(self, topic: str) -> str:
        return self.pubsub.topic_path(topic)

    def subscription_path(self, topic: str) -> str:
        return self.pubsub.subscription_path(f"{topic}-sub")

    def publish(self, topic: str, data: bytes) -> futures.Future[str]:
        future: futures.Future[str] = self.publisher.publish(self.topic_path(topic), data)
        return future

    def truncate(self) -> None:
        self.session.execute("TRUNCATE orders_payments_facts", timeout=120)

    def close(self) -> None:
        for topic in self.topics:
            with suppress(google_exceptions.NotFound):
                self.subscriber.delete_subscription(subscription=self.subscription_path(topic))
            with suppress(google_exceptions.NotFound):
                self.publisher.delete_topic(topic=self.topic_path(topic))
        self.subscriber.close()
        self.cluster.shutdown()


def descendants(pid: int) -> list[int]:
    """The process and its children, grandchildren, ... (e.g. the workers of `--workers 2`)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with suppress(OSError):
                queue.extend(int(child) for child in task.read_text().split())
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes and all their descendants so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in {d for p in pids for d in descendants(p)}:
        with suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


class StackCpu:
    """CPU seconds used by the stack's Cassandra node(s) and by the emulator, between two calls
    of `take`: the processes this project started (their pid files), never looked up by name."""

    def __init__(self) -> None:
        nodes = int(os.environ.get("CASSANDRA_NODES", "1"))
        self.nodes = [pid for k in range(1, nodes + 1) if (pid := cassandra_node(k, nodes).pid()) is not None]
        self.emulator = [pid for pid in [PUBSUB.pid()] if pid is not None]
        self._last = self._now()

    def _now(self) -> tuple[float, float]:
        return cpu_seconds(self.nodes), cpu_seconds(self.emulator)

    def take(self) -> tuple[float, float]:
        """(node CPU seconds, emulator CPU seconds) since the last call (or since built)."""
        previous, self._last = self._last, self._now()
        return self._last[0] - previous[0], self._last[1] - previous[1]


def children_cpu() -> float:
    """User + system CPU seconds of this process's children that have ended (and been waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_process(argv: list[str], env: dict[str, str]) -> tuple[str, float, float]:
    """Run a script to completion; its output, its peak resident memory in MiB (summed over its
    worker processes, each at its own peak) and the CPU seconds (user + system) it and its
    workers used."""
    cpu_before = children_cpu()
    with tempfile.TemporaryFile() as log_file:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        peaks: dict[int, int] = {}
        while process.poll() is None:
            for pid in descendants(process.pid):
                with suppress(OSError):
                    high_water = re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
                    if high_water:
                        peaks[pid] = max(peaks.get(pid, 0), int(high_water.group(1)))
            time.sleep(0.1)
        log_file.seek(0)
        output = log_file.read().decode(errors="replace")
    peak_kib = sum(peaks.values())
    cpu = children_cpu() - cpu_before  # this child and what it reaped
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[1:3])} failed ({process.returncode}):\n{output[-2000:]}")
    return output, peak_kib / 1024, cpu


def final_figures(output: str) -> dict[str, float]:
    """rate, received, and latency percentiles from a script's `final:` line."""
    line = output.rsplit("final:", 1)[1].splitlines()[0]
    figures = {key: float(value) for key, value in re.findall(r"(\w+)=([\d.]+)", line)}
    return figures


def produce(bench: Bench, script: str, topic: str, count: int, *extra: object, rate: float = 0) -> float:
    output, _, _ = run_process(
        [PY, script, "--topic", topic, "--count", str(count), "--rate", str(rate), "--seed", "7", *map(str, extra)],
        bench.env,
    )
    return final_figures(output)["rate"]


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


def baseline(bench: Bench, kind: str, topic: str, dlq: str, expected: int) -> tuple[float, float, float]:
    """The baseline's rate, its RSS, and its CPU seconds per 10,000 messages."""
    output, rss, cpu = run_process(
        [PY, "bench/baseline_consumers.py", kind, bench.subscription_path(topic), bench.topic_path(dlq)], bench.env
    )
    result = json.loads(output.strip().splitlines()[-1])
    if result["processed"] < expected:
        raise RuntimeError(f"baseline {kind} processed {result['processed']} of {expected}")
    return result["processed"] / result["seconds"], rss, cpu / result["processed"] * 10_000


def ceiling_pull_ack(bench: Bench, topic: str, n: int, ack_late: bool = False) -> tuple[float, float]:
    """Unary pull of up to 1,000 and one bulk acknowledge, no database: Pub/Sub's side alone.
    `ack_late`: each pull's messages are acked after the next pull, as a consumer that writes
    before it acks has them outstanding while it pulls. The rate, and the emulator's CPU seconds
    per 10,000 messages."""
    path = bench.subscription_path(topic)
    stack = StackCpu()
    received, late = 0, list[str]()
    started = time.monotonic()
    while received < n:
        if time.monotonic() - started > 300:
            raise RuntimeError(f"pull + ack ceiling: only {received} of {n} messages came")
        with suppress(google_exceptions.DeadlineExceeded):
            response = bench.subscriber.pull(subscription=path, max_messages=1000, timeout=10, retry=None)
            ack_ids = [m.ack_id for m in response.received_messages]
            if ack_late:
                ack_ids, late = late, ack_ids
            if ack_ids:
                bench.subscriber.acknowledge(subscription=path, ack_ids=ack_ids)
            received += len(response.received_messages)
    if late:
        bench.subscriber.acknowledge(subscription=path, ack_ids=late)
    rate = received / (time.monotonic() - started)
    _, emulator = stack.take()
    return rate, emulator / received * 10_000


def ceiling_inserts(
    bench: Bench, n: int, processes: int, concurrency: int, batched: bool = False
) -> tuple[float, float, float]:
    """Prepared INSERTs of n orders through the driver from `processes` processes at once, no
    Pub/Sub: Cassandra's side alone, on an empty table as the consumers had it. `batched`: in
    the consumers' own UNLOGGED batches grouped by replica, else single statements. The rate,
    and CPU seconds per 10,000 rows of the loading processes and of the node(s)."""
    bench.truncate()
    cpu_before = children_cpu()
    stack = StackCpu()
    share = n // processes
    mode = ["--batched"] if batched else ["--concurrency", str(concurrency)]
    loads = [
        subprocess.Popen(
            [PY, "-m", "bench.insert_load", str(1 + k * share), str(share), *mode],
            cwd=ROOT,
            env=bench.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for k in range(processes)
    ]
    spans = []
    for load in loads:
        out, err = load.communicate(timeout=600)
        if load.returncode != 0:
            raise RuntimeError(f"insert load failed:\n{err.decode(errors='replace')[-2000:]}")
        spans.append(json.loads(out.decode().strip().splitlines()[-1]))
    node, _ = stack.take()
    loader = children_cpu() - cpu_before
    seconds = max(s["ended"] for s in spans) - min(s["started"] for s in spans)
    rows = sum(s["rows"] for s in spans)
    return float(rows / seconds), loader / rows * 10_000, node / rows * 10_000


def one_repeat(bench: Bench, n: int, baseline_n: int, latency_rate: int, latency_seconds: int) -> dict[str, float]:
    # Every phase gets topics of its own: after a streaming-pull client (the orders baseline) goes
    # away, the emulator keeps handing some later messages to its dead stream for a while.
    figures: dict[str, float] = {}
    dlq = bench.topic("dlq")
    bench.truncate()
    for workers, suffix in ((1, ""), (2, "_2w")):
        log.info("producers and the project's consumers (%d worker(s)), %d messages each", workers, n)
        orders, payments = bench.topic("orders"), bench.topic("payments")
        figures[f"producer_orders{suffix}_msgs"] = produce(bench, "order_data_producer.py", orders, n)
        result, figures[f"order_consumer{suffix}_rss_mib"] = consume(
            bench, "order_data_consumer.py", orders, dlq, n, workers
        )
        figures[f"order_consumer{suffix}_msgs"] = result["rate"]
        figures[f"order_consumer{suffix}_cpu10k"] = result["cpu10k"]
        figures[f"order_consumer{suffix}_node_cpu10k"] = result["node_cpu10k"]
        figures[f"order_consumer{suffix}_emulator_cpu10k"] = result["emulator_cpu10k"]
        figures[f"producer_payments{suffix}_msgs"] = produce(
            bench, "payments_data_producer.py", payments, n, "--orphan-every", 0
        )
        result, figures[f"payment_consumer{suffix}_rss_mib"] = consume(
            bench, "ingest_in_fact_table.py", payments, dlq, n, workers
        )
        figures[f"payment_consumer{suffix}_msgs"] = result["rate"]
        figures[f"payment_consumer{suffix}_cpu10k"] = result["cpu10k"]

    log.info("baselines, %d messages each", baseline_n)
    orders, payments = bench.topic("baseline-orders"), bench.topic("baseline-payments")
    produce(bench, "order_data_producer.py", orders, baseline_n)
    figures["baseline_orders_msgs"], figures["baseline_orders_rss_mib"], figures["baseline_orders_cpu10k"] = baseline(
        bench, "orders", orders, dlq, baseline_n
    )
    produce(bench, "payments_data_producer.py", payments, baseline_n, "--orphan-every", 0)
    figures["baseline_payments_msgs"], figures["baseline_payments_rss_mib"], figures["baseline_payments_cpu10k"] = (
        baseline(bench, "payments", payments, dlq, baseline_n)
    )

    log.info("raw ceilings, %d messages each", n)
    orders = bench.topic("ceiling")
    produce(bench, "order_data_producer.py", orders, n)
    figures["ceiling_pull_ack_msgs"], figures["ceiling_pull_ack_emulator_cpu10k"] = ceiling_pull_ack(bench, orders, n)
    late = bench.topic("ceiling-late")
    produce(bench, "order_data_producer.py", late, n)
    figures["ceiling_pull_ack_late_msgs"], figures["ceiling_pull_ack_late_emulator_cpu10k"] = ceiling_pull_ack(
        bench, late, n, ack_late=True
    )
    figures["ceiling_inserts_1p_msgs"], _, _ = ceiling_inserts(bench, n, processes=1, concurrency=512)
    figures["ceiling_inserts_2p_msgs"], _, _ = ceiling_inserts(bench, n, processes=2, concurrency=256)
    figures["ceiling_batched_msgs"], figures["ceiling_batched_cpu10k"], figures["ceiling_batched_node_cpu10k"] = (
        ceiling_inserts(bench, n, processes=1, concurrency=0, batched=True)
    )
    figures["ceiling_inserts_msgs"] = max(
        figures["ceiling_inserts_1p_msgs"], figures["ceiling_inserts_2p_msgs"], figures["ceiling_batched_msgs"]
    )

    log.info("latency at %d msg/s for %d s", latency_rate, latency_seconds)
    orders = bench.topic("latency")
    consumer = subprocess.Popen(
        [
            PY,
            "order_data_consumer.py",
            "--subscription",
            f"{orders}-sub",
            "--dead-letter-topic",
            dlq,
            "--exit-after-idle",
            "5",
        ],
        cwd=ROOT,
        env=bench.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    time.sleep(3)  # the consumer connects before the first message is published
    produce(bench, "order_data_producer.py", orders, latency_rate * latency_seconds, rate=latency_rate)
    output = consumer.communicate(timeout=120)[0].decode(errors="replace")
    for key, value in final_figures(output).items():
        if key in {"p50", "p90", "p99", "max"}:
            figures[f"latency_{key}_ms"] = value

    log.info("payments racing 0-30 s ahead of their orders, all three consumer scripts running")
    figures.update(race(bench))
    return figures


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


def cassandra_nodes() -> str:
    nodes = int(os.environ.get("CASSANDRA_NODES", "1"))
    if nodes == 1:
        return "Cassandra 5.0.9 (one node)"
    factor = os.environ.get("CASSANDRA_REPLICATION_FACTOR", "1")
    return f"Cassandra 5.0.9 ({nodes} local nodes, replication {factor}, LOCAL_QUORUM)"


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    memory = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    memory_gib = int(memory.group(1)) / 2**20 if memory else 0.0
    return f"{os.cpu_count()} cores ({cpu}), {memory_gib:.0f} GiB, Python {platform.python_version()}"


def report(runs: list[dict[str, float]], n: int, baseline_n: int, latency_rate: int) -> dict[str, object]:
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    lines = [
        f"Machine: {machine()}. {cassandra_nodes()} and the Pub/Sub emulator on the same machine.",
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
        "machine": machine(),
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000, help="backlog size for the project's consumers")
    parser.add_argument("--baseline-n", type=int, default=5_000, help="backlog size for the (slow) baselines")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-rate", type=int, default=2_000, help="steady publish rate for the latency run")
    parser.add_argument("--latency-seconds", type=int, default=15)
    parser.add_argument("--redraw", action="store_true", help="only redo the table and chart from the JSON")
    parser.add_argument("--results", default="latest", help="name of the JSON and PNG in bench/results")
    args = parser.parse_args()
    if args.redraw:
        saved = json.loads((RESULTS / f"{args.results}.json").read_text())
        args.n, args.baseline_n, args.latency_rate = saved["n"], saved["baseline_n"], saved.get("latency_rate", 2_000)
        return write_results(saved["runs"], args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench: %(message)s")
    logging.getLogger("cassandra").setLevel(logging.ERROR)

    bench = Bench()
    runs = []
    try:
        for repeat in range(args.repeat):
            log.info("repeat %d of %d", repeat + 1, args.repeat)
            runs.append(one_repeat(bench, args.n, args.baseline_n, args.latency_rate, args.latency_seconds))
    finally:
        bench.close()
    return write_results(runs, args)


def write_results(runs: list[dict[str, float]], args: argparse.Namespace) -> int:
    result = report(runs, args.n, args.baseline_n, args.latency_rate)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.results}.json").write_text(json.dumps(result, indent=2) + "\n")
    chart(result, RESULTS / f"{args.results}.png")
    print(result["table"])
    print(f"\nwritten: {RESULTS.relative_to(ROOT)}/{args.results}.json, {args.results}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
