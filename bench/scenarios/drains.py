"""Scenario: the project's order and payment consumers draining a backlog, with one worker and with two."""

from __future__ import annotations

import logging

from ..harness import Bench, Figures, Plan, Watched, consumer_argv, final_figures
from ..measure import EMULATOR, NODE, NODE_JIT, StackCpu, busy_windows, own_cpu
from . import ceilings, producers

__all__ = ["BESIDE", "IDLE_EXIT", "run"]

log = logging.getLogger(__name__)
IDLE_EXIT = 3  # seconds: a drained consumer exits after this long with no message
# The batched load's figures kept beside the one-worker drains, as `beside_batched_` + the key.
# In the run of record of ef14000 the ceiling scenario's batched loader, minutes after the drains,
# cost 0.76, 0.62 and 0.48 CPU-s per 10,000 rows in its three repeats, and its row building alone
# (pure Python, the same rows each time) 0.234, 0.168 and 0.136: the machine's own speed wandered
# over minutes, as much as the targets' margins. Two loads, one just before the order drain and
# one just after the payment drain, put the targets' two figures about a minute apart.
BESIDE = ("msgs", "window_cpu10k", "window_node_cpu10k")
# The node's CPU per row rises as the rows come slower, whoever sends them: the same writes as a
# drain's (calls of 550, 4 at once), paced by hand at 9,000-9,900 (unpaced), 5,000 and 3,000 rows/s
# with nothing else running, cost it 1.07-1.23, 1.64-1.67 and 1.85-2.00 CPU-s per 10,000 rows,
# most of the extra in its shared pool of request threads (6.5, 9.7 and 13.9 context switches a row:
# a thread that finds no work waits in short sleeps before it parks). So after the drains, the same
# writes once more, paced at the order drain's own rate, as `beside_paced_` + the key: the node's
# cost at that rate with no Pub/Sub and no consumer on the cores.


def run(bench: Bench, plan: Plan, dlq: str) -> Figures:
    """Per consumer and worker count (`order_consumer`, `payment_consumer`; suffix `_2w` for two
    workers): the producers' rates on the backlogs, and each consumer's rate, peak RSS and CPU per
    10,000 messages over the whole run (`_cpu10k`) and over its drain window: its own
    (`_window_cpu10k`), the node(s)' and the emulator's (`_window_node_cpu10k`, `_window_emulator_cpu10k`),
    and the part of the node's that its just-in-time compiler used (`_window_node_jit_cpu10k`).
    Around the one-worker drains, a batched load of as many rows just before and just after them
    (bench/insert_load.py, as the ceiling scenario's): its rate, loader's and node's CPU per 10,000
    rows as `beside_batched_before_`, `beside_batched_after_` and their mean `beside_batched_`;
    then the same shaped like the order drain's writes and paced at its rate, as `beside_paced_`."""
    before = beside_load(bench, plan, "before")
    bench.truncate()
    figures = drain_both(bench, plan, dlq, 1, "")
    after = beside_load(bench, plan, "after")
    for key in BESIDE:
        figures[f"beside_batched_before_{key}"] = before[key]
        figures[f"beside_batched_after_{key}"] = after[key]
        figures[f"beside_batched_{key}"] = (before[key] + after[key]) / 2
    paced = beside_load(bench, plan, "after", pace=figures["order_consumer_msgs"])
    figures.update({f"beside_paced_{key}": value for key, value in paced.items()})
    bench.truncate()  # the two workers' drains on an empty table too, as the one worker's
    figures.update(drain_both(bench, plan, dlq, 2, "_2w"))
    return figures


def drain_both(bench: Bench, plan: Plan, dlq: str, workers: int, suffix: str) -> Figures:
    """The orders published and drained, then the payments: the producers' and consumers' figures."""
    log.info("producers and the project's consumers (%d worker(s)), %d messages each", workers, plan.n)
    figures: Figures = {}
    for kind, script, name in (
        ("orders", "order_data_consumer.py", "order_consumer"),
        ("payments", "ingest_in_fact_table.py", "payment_consumer"),
    ):
        topic = bench.topic(kind)
        figures.update(producers.publish(bench, kind, topic, plan.n, suffix))
        figures.update(
            {
                f"{name}{suffix}_{key}": value
                for key, value in consume(bench, script, topic, dlq, plan.n, workers).items()
            }
        )
    return figures


def beside_load(bench: Bench, plan: Plan, when: str, pace: float = 0.0) -> Figures:
    """A batched load of plan.n rows, as the ceiling scenario's (it empties the table first), or
    with `pace`, shaped like the order drain's writes and paced at that many rows a second: its
    figures in BESIDE."""
    log.info("batched load %s the one-worker drains, %d rows, paced at %.0f/s (0: not)", when, plan.n, pace)
    if pace:
        rate, cpu = ceilings.ceiling_inserts(
            bench, plan.n, processes=1, concurrency=0, batched=True, calls=ceilings.CONSUMER_CALLS, rate=pace
        )
    else:
        rate, cpu = ceilings.ceiling_inserts(bench, plan.n, processes=1, concurrency=0, batched=True)
    figures = {"msgs": rate} | cpu
    return {key: figures[key] for key in BESIDE}


def consume(bench: Bench, script: str, topic: str, dlq: str, expected: int, workers: int) -> Figures:
    """The consumer's `msgs` (its busy-span rate), `rss_mib`, and CPU seconds per 10,000 messages:
    `cpu10k` over the whole run (start-up and the idle exit included), `window_cpu10k`,
    `window_node_cpu10k`, `window_emulator_cpu10k` and `window_node_jit_cpu10k` over its drain
    window only."""
    watched = Watched(
        consumer_argv(script, topic, dlq, IDLE_EXIT, "--workers", workers),
        bench.env,
        stack=StackCpu(),
    )
    watched.wait(timeout=3600)
    final = final_figures(watched.output)
    if final["applied"] != expected:
        raise RuntimeError(f"{script} applied {final['applied']:.0f} of {expected}:\n{watched.output[-2000:]}")
    # The drain window: each process from its "consuming" line (imports, connecting and the start
    # checks done; the backlog is waiting, so its first pull follows at once) to its last settled
    # batch (its idle-exit line less the idle time), both timed by the lines' own stamps (to the
    # millisecond). Its CPU at those moments is interpolated from /proc samples taken every 0.1 s
    # and as each line arrives: the start falls in busy time, so it is exact to about 0.1 s x
    # one core at worst, and the end falls in the idle wait, where the CPU barely moves. The
    # parent of `--workers` (which only waits for them) counts over the whole span. The node's and
    # the emulator's CPU is taken over the same span (the first worker's start to the last one's
    # end): their work for the consumer's start-up checks, and whatever they do after the drain,
    # is left out, as the ceiling's window leaves out theirs before and after its writes.
    timeline = watched.sampler.timeline
    own, span = own_cpu(
        timeline, watched.sampler.tags(), busy_windows(watched.lines, IDLE_EXIT, watched.wall_minus_monotonic)
    )
    per10k = 10_000 / expected
    return {
        "msgs": final["rate"],
        "rss_mib": watched.rss_mib,
        "cpu10k": watched.cpu * per10k,
        "window_cpu10k": own * per10k,
        "window_node_cpu10k": timeline.between(NODE, span) * per10k,
        "window_emulator_cpu10k": timeline.between(EMULATOR, span) * per10k,
        "window_node_jit_cpu10k": timeline.between(NODE_JIT, span) * per10k,
    }
