"""`make bench`: throughput and latency of the pipeline on the real local stack, in one run.

On the same generated data (seed 7), each repeat measures:
- the producers' `--rate 0` publish rate;
- the project's order and payment consumers draining a backlog of N messages, with one worker
  process and with `--workers 2` (their busy-span rate, as printed in their final line), and
  their peak RSS (VmHWM, summed over worker processes);
- the BASELINE consumers (bench/baseline_consumers.py, the original scripts' approach);
- the raw ceilings: pull + bulk ack with no database, and prepared INSERTs through the driver
  (bench/insert_load.py) from one process and from two, and in the consumers' own UNLOGGED
  batches grouped by replica, with no Pub/Sub, on an empty table: in one call, and in calls
  shaped like the order consumer's writes in a drain;
- the same batched load again just before the one-worker order drain and just after the payment
  drain (bench/scenarios/drains.py): issue 26's CPU targets are taken against the mean of those
  two, about a minute from the drains, as the machine's speed wanders over minutes; then once
  more, shaped like the order drain's writes and paced at its rate: the node's cost per row at
  that rate with nothing else on the cores;
- each consumer's CPU seconds (user + system, its workers included) per 10,000 messages over its
  whole run, and over its drain window only (start-up and the idle exit left out) its own, the
  Cassandra node(s)' and the emulator's (from /proc, the stack's own processes), and the same for
  the batched ceiling's loader and node: where the two cores went, part by part;
- end-to-end latency at a steady publish rate below capacity (publish time to row written and
  acked, measured by the consumer);
- payments racing 0-30 s ahead of their orders, healed by the DLQ replay (bench/scenarios/racing.py):
  payment applied - order written, as seen by polling Cassandra.
Before the first repeat, the node is warmed up with WARM_UP_LOADS batched loads and then rounds
of an order drain and a payment drain until, in each of the last round's two drains, its
just-in-time compiler used at most WARM_UP_JIT_SHARE of the node's CPU and the drain cost the
node no less than WARM_UP_FLAT of the same drain in the round before (at most WARM_UP_ROUNDS
of them), none of them kept: a cold JVM compiles its write and read paths during the first
repeat's drains, while that repeat's ceilings (later) run warm.
Once a run, after the repeats: the sustained rate, the highest steady publish rate the order
consumer keeps up with (p99 under 1 s, backlog bounded) for `--sustain-seconds` (60), in
`--sustain-steps` (4) steps from 0.8 x the order drain's median rate (bench/scenarios/sustained.py),
with the producer's CPU beside it.
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
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from .harness import ROOT, Bench, Figures, Plan, Scenario, describe_machine, describe_stack
from .measure import StackCpu
from .report import chart, report
from .scenarios import baselines, ceilings, drains, latency, racing, sustained

RESULTS = ROOT / "bench" / "results"
# One repeat, in this order. Every scenario gets topics of its own: after a streaming-pull client
# (the orders baseline) goes away, the emulator keeps handing some later messages to its dead
# stream for a while.
SCENARIOS: list[Scenario] = [drains.run, baselines.run, ceilings.run, latency.run, racing.run]
log = logging.getLogger("bench")
# Measured here: after one load of 50,000 rows into a freshly started node, the next one still
# cost the node 1.94 CPU-s per 10,000 rows; after two, 0.86, as warm loads do (0.84-0.90).
WARM_UP_LOADS = 2
# But a drain's writes kept getting cheaper for the node after those two loads: 2.35, 2.02, 1.60
# and 1.41 CPU-s per 10,000 rows in four drains in a row, and both fresh-clone runs' first repeat
# cost the node about twice its others. The node's threads said why: on a fresh node, loads and
# drains in turn, its JIT compiler threads used 49, 41, 25, 13, 5, 9, 12 and then 2-5 % of its CPU,
# while the costs wandered by 15 % with or without it. So drains follow until the compiler is down
# to WARM_UP_JIT_SHARE, read from its own threads rather than guessed from the costs.
WARM_UP_ROUNDS, WARM_UP_JIT_SHARE = 8, 0.05
# And the compiler going quiet was not enough: the run of record of ef14000 stopped at drains
# costing the node 3.88, 2.09 and 1.49 CPU-s per 10,000 rows (its compiler at 4 % in the last),
# and its first repeat then cost the node the most (1.66 against 1.43 and 1.47) with a p99 of
# 1,328 ms at 2,000 orders/s (344 and 214 in the others). So the last drain must also cost the
# node at least WARM_UP_FLAT of the one before: no longer falling beyond the costs' own wander.
WARM_UP_FLAT = 0.9
# And order drains alone left the payments' reads cold: in the run of record of bb89840 the first
# repeat's payment drain cost the node 3.62 CPU-s per 10,000 rows, 1.28 of it compiling (then
# 2.02 and 1.39, the compiler 0.04 and 0.02). So each warm-up round drains orders then their
# payments, and both must be warm.
WARM_UP_KEYS = {  # in the JSON: the warm-up drains' node CPU per 10k rows, and its JIT compiler's part
    "order_consumer": ("warm_up_drains_node_cpu10k", "warm_up_drains_node_jit_cpu10k"),
    "payment_consumer": ("warm_up_payment_drains_node_cpu10k", "warm_up_payment_drains_node_jit_cpu10k"),
}


def one_repeat(bench: Bench, plan: Plan) -> Figures:
    """Every scenario once, on a new dead-letter topic shared by this repeat's consumers; the
    repeat's topics are deleted at its end, to free the emulator's memory (Bench.drop_all)."""
    dlq = bench.topic("dlq")
    figures: Figures = {}
    try:
        for scenario in SCENARIOS:
            figures.update(scenario(bench, plan, dlq))
    finally:
        bench.drop_all()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000, help="backlog size for the project's consumers")
    parser.add_argument("--baseline-n", type=int, default=5_000, help="backlog size for the (slow) baselines")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-rate", type=int, default=2_000, help="steady publish rate for the latency run")
    parser.add_argument("--latency-seconds", type=int, default=15)
    parser.add_argument(
        "--sustain-seconds", type=int, default=60, help="length of each step of the sustained-rate search (once a run)"
    )
    parser.add_argument(
        "--sustain-steps", type=int, default=4, help="steps of the sustained-rate search (0: no sustained rate)"
    )
    parser.add_argument("--redraw", action="store_true", help="only redo the table and chart from the JSON")
    parser.add_argument("--results", default="latest", help="name of the JSON and PNG in bench/results")
    args = parser.parse_args()
    if args.redraw:
        saved = json.loads((RESULTS / f"{args.results}.json").read_text())
        args.n, args.baseline_n, args.latency_rate = saved["n"], saved["baseline_n"], saved.get("latency_rate", 2_000)
        warmed_up = {key: saved[key] for keys in WARM_UP_KEYS.values() for key in keys if key in saved}
        return write_results(saved["runs"], args, saved.get("sustained"), warmed_up)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench: %(message)s")
    logging.getLogger("cassandra").setLevel(logging.ERROR)

    plan = Plan(
        args.n, args.baseline_n, args.latency_rate, args.latency_seconds, args.sustain_seconds, args.sustain_steps
    )
    try:
        StackCpu()  # before anything runs: every CPU column needs the stack's own processes
    except RuntimeError as exc:
        log.error("%s", exc)
        return 2
    bench = Bench()
    runs = []
    try:
        warmed_up = warm_up(bench, plan)
        for repeat in range(args.repeat):
            log.info("repeat %d of %d", repeat + 1, args.repeat)
            runs.append(one_repeat(bench, plan))
        found = sustained_rate(bench, plan, runs)
    finally:
        bench.close()
    return write_results(runs, args, found, warmed_up)


def warm_up(bench: Bench, plan: Plan) -> dict[str, list[float]]:
    """Batched loads, then rounds of an order drain and a payment drain until both are `warmed`,
    before the first repeat, so every repeat measures a node that has compiled its write and read
    paths (just-in-time). The drains' node CPU per 10,000 rows, and its JIT compiler's part, are
    returned for the results (WARM_UP_KEYS); nothing else of them is kept."""
    for load in range(WARM_UP_LOADS):
        log.info("warming the node up: batched load %d of %d, %d rows, not measured", load + 1, WARM_UP_LOADS, plan.n)
        ceilings.ceiling_inserts(bench, plan.n, processes=1, concurrency=0, batched=True)
    kept: dict[str, list[float]] = {key: [] for keys in WARM_UP_KEYS.values() for key in keys}
    rounds = 0
    while rounds < WARM_UP_ROUNDS and not all(warmed(kept[cost], kept[jit]) for cost, jit in WARM_UP_KEYS.values()):
        dlq = bench.topic("dlq")
        bench.truncate()
        figures = drains.drain_both(bench, plan, dlq, 1, "")
        bench.drop_all()  # 100,000 messages a round, kept by the emulator until deleted (Bench.drop_all)
        rounds += 1
        for name, (cost, jit) in WARM_UP_KEYS.items():
            kept[cost].append(figures[f"{name}_window_node_cpu10k"])
            kept[jit].append(figures[f"{name}_window_node_jit_cpu10k"])
            log.info(
                "warming the node up: round %d, %s: the node's CPU per 10k rows %.2f, its JIT compiler's %.2f of it",
                rounds,
                name,
                kept[cost][-1],
                kept[jit][-1],
            )
    return kept


def warmed(
    costs: Sequence[float], compiling: Sequence[float], share: float = WARM_UP_JIT_SHARE, flat: float = WARM_UP_FLAT
) -> bool:
    """Whether the JIT compiler used at most `share` of the node's CPU in the last drain, and that
    drain cost the node at least `flat` of the one before (so at least two drains)."""
    return len(costs) >= 2 and compiling[-1] <= share * costs[-1] and costs[-1] >= flat * costs[-2]


def sustained_rate(bench: Bench, plan: Plan, runs: list[Figures]) -> dict[str, object] | None:
    """Once a run, after the repeats: the search starts from the order drain's median rate."""
    if plan.sustain_steps <= 0:
        return None
    drain_rate = statistics.median(run["order_consumer_msgs"] for run in runs)
    try:
        return sustained.run(bench, plan, bench.topic("dlq"), drain_rate)
    except (RuntimeError, ValueError, OSError, subprocess.TimeoutExpired):
        # The repeats' figures are still worth writing; the table then has no sustained-rate row.
        log.exception("the sustained-rate search failed; the results are written without it")
        return None


def write_results(
    runs: list[Figures],
    args: argparse.Namespace,
    found: Mapping[str, Any] | None = None,
    warmed_up: Mapping[str, list[float]] | None = None,
) -> int:
    """The JSON and the chart in bench/results, and the table printed."""
    result = report(
        runs,
        args.n,
        args.baseline_n,
        args.latency_rate,
        machine=describe_machine(),
        stack=describe_stack(os.environ),
        sustained=found,
    )
    result.update(warmed_up or {})
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.results}.json").write_text(json.dumps(result, indent=2) + "\n")
    chart(result, RESULTS / f"{args.results}.png")
    print(result["table"])
    print(f"\nwritten: {RESULTS.relative_to(ROOT)}/{args.results}.json, {args.results}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
