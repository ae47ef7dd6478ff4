"""Scenario: the raw ceilings, each side alone: Pub/Sub's pull and ack with no database, and
Cassandra's prepared INSERTs with no Pub/Sub (single statements, and the consumers' batches)."""

from __future__ import annotations

import logging
import time
from contextlib import suppress

from google.api_core import exceptions as google_exceptions

from ..harness import PY, Bench, Figures, Plan, Watched, last_json, produce
from ..measure import EMULATOR, NODE, NODE_JIT, StackCpu, children_cpu

__all__ = ["run"]

log = logging.getLogger(__name__)
# The order consumer's writes in a drain, for a load shaped like them: its batch workers
# (`--batches-in-flight`, 4) each write what one take brought, about 550 rows on average here (a
# pull brings at most 100; the workers take what the pullers have buffered meanwhile).
CONSUMER_CALLS = (4, 550)


def run(bench: Bench, plan: Plan, dlq: str) -> Figures:
    """Pull + ack rates (acked at once, and one pull late) with the emulator's CPU over the pulls,
    the INSERT rates from one process and from two, the batched rate with its loader's, node's and
    emulator's CPU, the same shaped like the order consumer's writes (`ceiling_batched_shaped_`),
    and the best of them."""
    log.info("raw ceilings, %d messages each", plan.n)
    n = plan.n
    figures: Figures = {}
    orders = bench.topic("ceiling")
    produce(bench, "order_data_producer.py", orders, n)
    figures["ceiling_pull_ack_msgs"], figures["ceiling_pull_ack_window_emulator_cpu10k"] = ceiling_pull_ack(
        bench, orders, n
    )
    late = bench.topic("ceiling-late")
    produce(bench, "order_data_producer.py", late, n)
    figures["ceiling_pull_ack_late_msgs"], figures["ceiling_pull_ack_late_window_emulator_cpu10k"] = ceiling_pull_ack(
        bench, late, n, ack_late=True
    )
    figures["ceiling_inserts_1p_msgs"], _ = ceiling_inserts(bench, n, processes=1, concurrency=512)
    figures["ceiling_inserts_2p_msgs"], _ = ceiling_inserts(bench, n, processes=2, concurrency=256)
    figures["ceiling_batched_msgs"], cpu = ceiling_inserts(bench, n, processes=1, concurrency=0, batched=True)
    figures.update({f"ceiling_batched_{key}": value for key, value in cpu.items()})
    figures["ceiling_batched_shaped_msgs"], cpu = ceiling_inserts(
        bench, n, processes=1, concurrency=0, batched=True, calls=CONSUMER_CALLS
    )
    figures.update({f"ceiling_batched_shaped_{key}": value for key, value in cpu.items()})
    figures["ceiling_inserts_msgs"] = max(
        figures["ceiling_inserts_1p_msgs"], figures["ceiling_inserts_2p_msgs"], figures["ceiling_batched_msgs"]
    )
    return figures


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
    bench: Bench,
    n: int,
    processes: int,
    concurrency: int,
    batched: bool = False,
    calls: tuple[int, int] = (1, 0),
    rate: float = 0.0,
) -> tuple[float, Figures]:
    """Prepared INSERTs of n orders through the driver from `processes` processes at once, no
    Pub/Sub: Cassandra's side alone, on an empty table as the consumers had it. `batched`: in
    the consumers' own UNLOGGED batches grouped by replica, else single statements; `calls`
    (threads, rows a call), with `batched`: in calls of that many rows, that many at once (else
    all of a process's rows in one call), and with `rate`, each process paced at that many rows a
    second. The rate, and CPU seconds per 10,000 rows: the loading processes' over their whole
    runs (`cpu10k`, generating the rows included) and over their work (`window_cpu10k`:
    connected to the last row written, as each measured itself; `rows_cpu10k`: the part of it
    that built and validated the rows), and the node(s)' and the emulator's while the rows were
    written (`window_node_cpu10k`, `window_emulator_cpu10k`), and the part of the node's that its
    just-in-time compiler used (`window_node_jit_cpu10k`)."""
    bench.truncate()
    cpu_before = children_cpu()
    share = n // processes
    threads, call_rows = calls
    mode = (
        ["--batched", "--calls", str(threads), "--call-rows", str(call_rows), "--rate", str(rate)]
        if batched
        else ["--concurrency", str(concurrency)]
    )
    stack = StackCpu()
    loads = [
        Watched([PY, "-m", "bench.insert_load", str(1 + k * share), str(share), *mode], bench.env, stack=stack)
        for k in range(processes)
    ]
    spans = []
    for load in loads:
        load.wait(timeout=600)
        spans.append(last_json(load.output))
    loader = children_cpu() - cpu_before  # every load has ended: nothing else of ours ran meanwhile
    written = (min(s["started"] for s in spans), max(s["ended"] for s in spans))
    rows = sum(s["rows"] for s in spans)
    per10k = 10_000 / rows
    # Each load's sampler took the node's and the emulator's CPU too, until its load exited: the
    # one that finished writing last covers the whole span.
    timeline = max(zip(spans, loads, strict=True), key=lambda pair: pair[0]["ended"])[1].sampler.timeline
    return float(rows / (written[1] - written[0])), {
        "cpu10k": loader * per10k,
        "window_cpu10k": sum(s["work_cpu"] for s in spans) * per10k,
        "rows_cpu10k": sum(s["rows_cpu"] for s in spans) * per10k,
        "window_node_cpu10k": timeline.between(NODE, written) * per10k,
        "window_emulator_cpu10k": timeline.between(EMULATOR, written) * per10k,
        "window_node_jit_cpu10k": timeline.between(NODE_JIT, written) * per10k,
    }
