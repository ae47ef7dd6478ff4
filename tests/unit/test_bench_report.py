"""The bench's report and harness loop on canned figures: no service, no bench run."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import pytest

from bench import run
from bench.harness import Plan, describe_stack, last_json
from bench.report import chart, report
from bench.scenarios import ceilings, drains, producers, sustained

# Every figure one repeat takes, at round values; a test changes the few it looks at.
CANNED: dict[str, float] = {
    "producer_orders_msgs": 20_000,
    "producer_payments_msgs": 19_000,
    "producer_orders_2w_msgs": 20_500,
    "producer_payments_2w_msgs": 19_500,
    "order_consumer_msgs": 8_000,
    "order_consumer_rss_mib": 90,
    "order_consumer_cpu10k": 5.0,
    "order_consumer_window_cpu10k": 4.5,
    "order_consumer_window_node_cpu10k": 1.5,
    "order_consumer_window_emulator_cpu10k": 2.0,
    "order_consumer_2w_msgs": 9_000,
    "order_consumer_2w_rss_mib": 170,
    "order_consumer_2w_cpu10k": 6.0,
    "order_consumer_2w_window_cpu10k": 5.2,
    "order_consumer_2w_window_node_cpu10k": 1.6,
    "order_consumer_2w_window_emulator_cpu10k": 2.1,
    "payment_consumer_msgs": 7_000,
    "payment_consumer_rss_mib": 95,
    "payment_consumer_cpu10k": 6.5,
    "payment_consumer_window_cpu10k": 6.0,
    "payment_consumer_window_node_cpu10k": 1.7,
    "payment_consumer_window_emulator_cpu10k": 2.2,
    "payment_consumer_2w_msgs": 8_000,
    "payment_consumer_2w_rss_mib": 180,
    "payment_consumer_2w_cpu10k": 7.5,
    "payment_consumer_2w_window_cpu10k": 7.0,
    "payment_consumer_2w_window_node_cpu10k": 1.8,
    "payment_consumer_2w_window_emulator_cpu10k": 2.3,
    "baseline_orders_msgs": 500,
    "baseline_orders_rss_mib": 80,
    "baseline_orders_cpu10k": 30.0,
    "baseline_payments_msgs": 250,
    "baseline_payments_rss_mib": 75,
    "baseline_payments_cpu10k": 40.0,
    "ceiling_pull_ack_msgs": 30_000,
    "ceiling_pull_ack_window_emulator_cpu10k": 1.0,
    "ceiling_pull_ack_late_msgs": 12_000,
    "ceiling_pull_ack_late_window_emulator_cpu10k": 3.0,
    "ceiling_inserts_1p_msgs": 14_000,
    "ceiling_inserts_2p_msgs": 15_000,
    "ceiling_batched_msgs": 16_000,
    "ceiling_batched_cpu10k": 4.0,
    "ceiling_batched_window_cpu10k": 3.0,
    "ceiling_batched_window_node_cpu10k": 1.2,
    "ceiling_batched_window_emulator_cpu10k": 0.1,
    "ceiling_batched_rows_cpu10k": 0.75,
    "ceiling_batched_shaped_msgs": 12_000,
    "ceiling_batched_shaped_window_node_cpu10k": 1.25,
    "ceiling_inserts_msgs": 16_000,
    "beside_batched_msgs": 15_000,
    "beside_batched_window_cpu10k": 3.0,
    "beside_batched_window_node_cpu10k": 1.25,
    "beside_batched_before_msgs": 14_000,
    "beside_batched_before_window_cpu10k": 3.3,
    "beside_batched_before_window_node_cpu10k": 1.375,
    "beside_batched_after_msgs": 16_000,
    "beside_batched_after_window_cpu10k": 2.7,
    "beside_batched_after_window_node_cpu10k": 1.25,
    "beside_paced_msgs": 9_000,
    "beside_paced_window_cpu10k": 3.2,
    "beside_paced_window_node_cpu10k": 1.875,
    "latency_p50_ms": 70,
    "latency_p90_ms": 110,
    "latency_p99_ms": 150,
    "latency_max_ms": 240,
    "racing_measured": 500,
    "racing_p50_s": 4.0,
    "racing_p99_s": 9.0,
    "racing_max_s": 12.0,
}


def repeat(**changes: float) -> dict[str, float]:
    return {**CANNED, **changes}


def table_of(runs: list[dict[str, float]]) -> list[str]:
    result = report(runs, 50_000, 5_000, 2_000, machine="2 cores (a CPU), 24 GiB", stack="Cassandra (one node)")
    return str(result["table"]).splitlines()


def test_the_table_opens_with_where_and_on_how_much_the_figures_were_taken():
    assert table_of([repeat(), repeat(), repeat()])[:2] == [
        "Machine: 2 cores (a CPU), 24 GiB. Cassandra (one node) and the Pub/Sub emulator on the same machine.",
        "N = 50,000 messages (5,000 for the baselines), median of 3 repeats.",
    ]


def test_a_row_shows_the_median_each_repeat_and_the_median_memory_and_cpu():
    runs = [
        repeat(order_consumer_msgs=8_100, order_consumer_rss_mib=88, order_consumer_cpu10k=5.04),
        repeat(order_consumer_msgs=7_200, order_consumer_rss_mib=95, order_consumer_cpu10k=4.44),
        repeat(order_consumer_msgs=9_900, order_consumer_rss_mib=91, order_consumer_cpu10k=6.0),
    ]
    rows = [line for line in table_of(runs) if line.startswith("| order_data_consumer.py (this project) |")]
    assert rows == [
        "| order_data_consumer.py (this project) | 8,100 | 8,100, 7,200, 9,900 | 91 MiB | 5.04 | 4.50 | 1.50 | 2.00 |"
    ]


def test_a_ratio_is_the_median_of_each_repeats_own_ratio_not_the_ratio_of_the_medians():
    # Medians 8,000 / 500 would be 16; the repeats' own ratios are 10, 25 and 40.
    runs = [
        repeat(order_consumer_msgs=5_000, baseline_orders_msgs=500),
        repeat(order_consumer_msgs=8_000, baseline_orders_msgs=320),
        repeat(order_consumer_msgs=10_000, baseline_orders_msgs=250),
    ]
    rows = [line for line in table_of(runs) if line.startswith("| order consumer / orders baseline |")]
    assert rows == ["| order consumer / orders baseline | 25.00 | 10.00, 25.00, 40.00 |  |"]
    result = report(runs, 50_000, 5_000, 2_000, machine="m", stack="s")
    assert result["ratios"]["order consumer / orders baseline"] == 25.0  # type: ignore[index]  # a dict of floats


def test_latency_and_racing_are_one_sentence_each():
    table = table_of([repeat(), repeat()])
    assert (
        "End-to-end latency of the order consumer at a steady 2,000 msg/s (publish time to row written and acked,"
        " median of the repeats): p50 70 ms, p90 110 ms, p99 150 ms, max 240 ms."
    ) in table
    [racing] = [line for line in table if line.startswith("Payments racing")]
    assert racing.endswith(
        "p50 4.0 s, p99 9.0 s, max 12.0 s (median of the repeats; p50/p99 of each: 4.0/9.0, 4.0/9.0)."
    )


def test_results_taken_before_a_measurement_existed_are_reported_without_it():
    older = {k: v for k, v in CANNED.items() if not k.startswith(("racing_", "ceiling_pull_ack_late"))}
    older = {k: v for k, v in older.items() if "_window_" not in k and k != "baseline_orders_rss_mib"}
    table = table_of([older])
    assert not any("racing" in line or "one pull late" in line for line in table)
    assert not any(line.startswith(("CPU seconds per 10,000", "Sustained rate")) for line in table)
    assert not any("\u2264" in line or "batched loader CPU" in line for line in table)
    assert table[3] == "| measurement | msg/s (median) | each repeat | peak RSS | CPU s/10k, whole run |"
    [baseline] = [line for line in table if line.startswith("| BASELINE orders:")]
    assert baseline == "| BASELINE orders: subscribe() callback, 1 sync INSERT each | 500 | 500 |  | 30.00 |"


def test_every_drain_and_the_batched_ceiling_show_their_own_their_nodes_and_their_emulators_cpu():
    table = table_of([repeat()])
    assert table[3] == (
        "| measurement | msg/s (median) | each repeat | peak RSS | CPU s/10k, whole run | own CPU s/10k"
        " | node CPU s/10k | emulator CPU s/10k |"
    )
    cells = {line.split(" | ")[0][2:]: line.split(" | ")[4:] for line in table if line.startswith("| ")}
    assert cells["ingest_in_fact_table.py --workers 2 (this project)"] == ["7.50", "7.00", "1.80", "2.30 |"]
    assert cells["ceiling: prepared INSERTs in UNLOGGED batches grouped by replica, 1 process, no Pub/Sub"] == [
        "4.00",
        "3.00",
        "1.20",
        "0.10 |",
    ]
    assert cells["ceiling: pull 1,000 + bulk ack, no database"] == ["", "", "", "1.00 |"]


def test_the_targets_are_ratios_within_each_repeat_with_their_verdicts():
    runs = [
        repeat(order_consumer_window_cpu10k=3.6, beside_batched_window_cpu10k=3.0),  # 1.2
        repeat(order_consumer_window_cpu10k=4.5, beside_batched_window_cpu10k=3.0),  # 1.5
        repeat(order_consumer_window_cpu10k=2.4, beside_batched_window_cpu10k=2.0),  # 1.2
    ]
    table = table_of(runs)
    rows = {line.split(" | ")[0][2:]: line for line in table if line.startswith("| ") and "per 10k" in line}
    assert rows["order consumer CPU / batched loader CPU beside it, per 10k, working windows"].endswith(
        "| 1.20 | 1.20, 1.50, 1.20 | \u2264 1.25: held |"
    )
    # payments: 6.0 / 3.0, 6.0 / 3.0, 6.0 / 2.0 -> median 2.0
    assert rows["payment consumer CPU / batched loader CPU beside it, per 10k, working windows"].endswith(
        "| 2.00 | 2.00, 2.00, 3.00 | \u2264 1.5: not met |"
    )
    # 1.5 / 1.25 in each repeat
    assert rows["node CPU per 10k, order drain / batched load beside it"].endswith(
        "| 1.20 | 1.20, 1.20, 1.20 | \u2264 1.2: held |"
    )


def test_the_targets_against_the_ceiling_scenarios_load_minutes_away_are_shown_without_a_verdict():
    runs = [repeat(order_consumer_window_cpu10k=3.6, ceiling_batched_window_cpu10k=2.4)]  # 1.5
    rows = {line.split(" | ")[0][2:]: line for line in table_of(runs) if line.startswith("| ")}
    assert rows["order consumer CPU / the ceiling scenario's batched loader CPU, per 10k"] == (
        "| order consumer CPU / the ceiling scenario's batched loader CPU, per 10k | 1.50 | 1.50 |  |"
    )
    # 1.5 / 1.2
    assert rows["node CPU per 10k, order drain / the ceiling scenario's batched load"].endswith("| 1.25 | 1.25 |  |")


def test_how_far_apart_the_two_loads_beside_the_drains_were_is_a_ratio_of_its_own():
    runs = [
        repeat(beside_batched_before_window_cpu10k=0.6, beside_batched_after_window_cpu10k=0.5),
        repeat(beside_batched_before_window_cpu10k=0.5, beside_batched_after_window_cpu10k=0.5),
    ]
    rows = {line.split(" | ")[0][2:]: line for line in table_of(runs) if line.startswith("| ")}
    assert rows["batched loader CPU per 10k, the load before the drains / the one after"].endswith(
        "| 1.10 | 1.20, 1.00 |  |"
    )
    assert rows["node CPU per 10k, the load before the drains / the one after"].endswith("| 1.10 | 1.10, 1.10 |  |")


SUSTAINED = {
    "seconds": 60,
    "drain_rate": 8_000.0,
    "rate": 6_800.0,
    "best": {
        "rate": 6_800.0,
        "published_rate": 6_790.0,
        "within_1s": 0.996,
        "p99_ms": 640.0,
        "backlog": 900.0,
        "consumer_cpu10k": 0.61,
        "producer_cpu10k": 0.35,
        "producer_cores": 0.24,
        "held": True,
    },
    "steps": [
        {"rate": 6_400.0, "held": True},
        {"rate": 8_000.0, "held": False},
        {"rate": 7_200.0, "held": False},
        {"rate": 6_800.0, "held": True},
    ],
}


def test_the_sustained_rate_is_a_row_a_ratio_against_the_drain_and_a_sentence_with_the_producers_cpu():
    result = report([repeat()], 50_000, 5_000, 2_000, machine="m", stack="s", sustained=SUSTAINED)
    table = str(result["table"]).splitlines()
    [row] = [line for line in table if "sustained: p99 < 1 s for 60 s" in line]
    assert table[table.index(row) - 1].startswith("| order_data_consumer.py --workers 2 (this project) |")
    assert row == (
        "| order_data_consumer.py (this project), sustained: p99 < 1 s for 60 s, backlog bounded | 6,800"
        " | once: 6,400 held, 8,000 not, 7,200 not, 6,800 held |  |  | 0.61 |  |  |"
    )
    [ratio] = [line for line in table if line.startswith("| sustained rate / order drain rate")]
    assert ratio.endswith("| 0.85 | 0.85 | \u2265 0.8: held |")  # 6,800 / 8,000
    [sentence] = [line for line in table if line.startswith("Sustained rate")]
    assert ": 6,800 msg/s (99.6% within 1 s, p99 640 ms over the last 100,000, 900 outstanding at the end)" in sentence
    assert "the producer, on the same two cores, used 0.35 CPU-seconds per 10,000 orders (0.24 cores)" in sentence


def test_a_sustained_search_where_nothing_held_says_so():
    nothing = {**SUSTAINED, "rate": 0.0, "best": None, "steps": [{"rate": 6_400.0, "held": False}]}
    table = table_of_sustained(nothing)
    assert any(line.endswith(": none of the rates tried held (6,400 msg/s the last).") for line in table)
    [ratio] = [line for line in table if line.startswith("| sustained rate / order drain rate")]
    assert ratio.endswith("| 0.00 | 0.00 | \u2265 0.8: not met: the README says what limits it |")


def table_of_sustained(sustained: dict[str, object]) -> list[str]:
    return str(
        report([repeat()], 50_000, 5_000, 2_000, machine="m", stack="s", sustained=sustained)["table"]
    ).splitlines()


def test_the_cpu_paragraph_adds_up_the_consumer_the_node_and_the_emulator():
    [paragraph] = [line for line in table_of([repeat()]) if line.startswith("CPU seconds per 10,000 orders")]
    assert "used 4.50 in the consumer, 1.50 in Cassandra and 2.00 in the emulator, 8.00 in all" in paragraph
    assert "the batched ceiling used 1.20 in Cassandra and 3.00 in its loader" in paragraph
    assert "(0.75 of it building and validating the rows, so 2.25 writing them)" in paragraph
    assert "with each pull's messages acked before the next pull and 3.00 with them acked one pull late" in paragraph


def test_the_nodes_jit_compiling_is_a_column_and_a_sentence_when_it_was_measured():
    measured = repeat(order_consumer_window_node_jit_cpu10k=0.07, ceiling_batched_window_node_jit_cpu10k=0.02)
    table = table_of([measured])
    assert table[3].endswith("| emulator CPU s/10k | of the node's, JIT s/10k |")
    [row] = [line for line in table if line.startswith("| order_data_consumer.py (this project) |")]
    assert row.endswith("| 4.50 | 1.50 | 2.00 | 0.07 |")
    [paragraph] = [line for line in table if line.startswith("CPU seconds per 10,000 orders")]
    assert "its just-in-time compiler used 0.07 in the drain and 0.02 in the ceiling." in paragraph
    unmeasured = " ".join(table_of([repeat()]))  # results taken before it was measured
    assert "JIT" not in unmeasured and "just-in-time" not in unmeasured


def test_the_nodes_target_is_taken_apart_into_the_write_shape_and_the_rest_of_the_drain():
    runs = [
        repeat(ceiling_batched_shaped_window_node_cpu10k=1.8),  # shape 1.8/1.2, the rest 1.5/1.8
        repeat(),  # shape 1.25/1.2, the rest 1.5/1.25
        repeat(ceiling_batched_shaped_window_node_cpu10k=1.5, order_consumer_window_node_cpu10k=3.0),
    ]
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:3] for line in table_of(runs) if " | " in line}
    assert rows["node CPU per 10k, batched shaped like a drain / batched ceiling"] == ["1.25", "1.50, 1.04, 1.25"]
    assert rows["node CPU per 10k, order drain / batched shaped like it"] == ["1.20", "0.83, 1.20, 2.00"]


def test_the_nodes_target_is_taken_apart_by_rate_too():
    # The load beside the drain costs the node 1.25 a row in each repeat; the drain 1.5 (then 2.4).
    runs = [
        repeat(),  # paced 1.875: by rate 1.875/1.25, the rest 1.5/1.875
        repeat(beside_paced_window_node_cpu10k=1.5),  # 1.5/1.25, 1.5/1.5
        repeat(beside_paced_window_node_cpu10k=2.0, order_consumer_window_node_cpu10k=2.4),  # 2/1.25, 2.4/2
    ]
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:3] for line in table_of(runs) if " | " in line}
    by_rate = "node CPU per 10k, shaped like the order drain and paced at its rate / batched load beside it"
    assert rows[by_rate] == ["1.50", "1.50, 1.20, 1.60"]
    assert rows["node CPU per 10k, order drain / its writes alone at its rate"] == ["1.00", "0.80, 1.00, 1.20"]
    label = "the same batches shaped like the order drain's writes, paced at its rate, just after the drains"
    assert rows[label] == ["9,000", "9,000, 9,000, 9,000"]


def test_redraw_reads_the_json_it_wrote(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(run, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(run, "ROOT", tmp_path)
    args = argparse.Namespace(n=50_000, baseline_n=5_000, latency_rate=2_000, results="latest")
    run.write_results([repeat()], args, SUSTAINED)
    first = (tmp_path / "results" / "latest.json").read_text()
    saved = json.loads(first)
    run.write_results(saved["runs"], args, saved["sustained"])
    assert (tmp_path / "results" / "latest.json").read_text() == first
    assert saved["sustained"]["rate"] == 6_800.0


def test_the_chart_is_a_png(tmp_path: Path):
    result = report([repeat()], 50_000, 5_000, 2_000, machine="m", stack="s", sustained=SUSTAINED)
    chart(result, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("environ", "described"),
    [
        ({}, "Cassandra 5.0.9 (one node)"),
        (
            {"CASSANDRA_NODES": "3", "CASSANDRA_REPLICATION_FACTOR": "3"},
            "Cassandra 5.0.9 (3 local nodes, replication 3, LOCAL_QUORUM)",
        ),
    ],
)
def test_the_stack_is_described_from_the_environment(environ, described):
    assert describe_stack(environ) == described


class FakeBench:
    def __init__(self) -> None:
        self.topics: list[str] = []
        self.made = 0
        self.dropped: list[str] = []

    def topic(self, name: str) -> str:
        self.made += 1
        self.topics.append(f"{name}-{self.made}")
        return self.topics[-1]

    def drop_all(self) -> None:
        self.dropped += self.topics
        self.topics = []


def test_a_repeat_runs_every_scenario_in_order_on_one_dead_letter_topic(monkeypatch):
    calls = []

    def scenario(name: str, figures: dict[str, float]):
        def run_it(bench, plan, dlq):
            calls.append((name, plan, dlq, bench.topic(name)))
            return figures

        return run_it

    monkeypatch.setattr(run, "SCENARIOS", [scenario("first", {"a": 1.0}), scenario("second", {"b": 2.0})])
    bench, plan = FakeBench(), Plan(n=10, baseline_n=5, latency_rate=3, latency_seconds=2)
    assert run.one_repeat(bench, plan) == {"a": 1.0, "b": 2.0}  # type: ignore[arg-type]  # a fake Bench
    assert calls == [("first", plan, "dlq-1", "first-2"), ("second", plan, "dlq-1", "second-3")]
    # The emulator keeps every message a subscription had, acked or not, until it is deleted.
    assert (bench.dropped, bench.topics) == (["dlq-1", "first-2", "second-3"], [])
    assert run.one_repeat(bench, plan) == {"a": 1.0, "b": 2.0}  # type: ignore[arg-type]  # a fake Bench
    assert bench.dropped[3:] == ["dlq-4", "first-5", "second-6"]


class WarmingBench(FakeBench):
    def __init__(self, calls: list[object]) -> None:
        super().__init__()
        self.calls = calls

    def truncate(self) -> None:
        self.calls.append(("truncate",))

    def drop_all(self) -> None:
        self.calls.append(("drop_all", *self.topics))
        super().drop_all()


QUIET = (1.0, 0.0)  # a drain that cost the node 1.0 CPU-s per 10k rows, none of it compiling


def warm_up_with(
    monkeypatch, orders: list[tuple[float, float]], payments: list[tuple[float, float]] | None = None
) -> tuple[dict[str, list[float]], list[object], WarmingBench]:
    """`run.warm_up` with the loads, publishes and drains recorded, the order drains costing the
    node `orders` in turn (its CPU per 10k rows, its JIT compiler's part), the payment drains
    `payments` (else QUIET each): what it returned, the calls in order, and the bench."""
    calls: list[object] = []
    figures = {
        "order_data_consumer.py": iter(orders),
        "ingest_in_fact_table.py": iter(payments or [QUIET] * len(orders)),
    }

    def load(bench, n, **how):
        calls.append(("load", n, how))
        return 1.0, {}

    def publish(bench, kind, topic, n, suffix):
        calls.append(("publish", kind, topic, n))
        return {}

    def consume(bench, script, topic, dlq, n, workers):
        calls.append(("drain", script, topic, dlq, n, workers))
        node, jit = next(figures[script])
        return {"window_node_cpu10k": node, "window_node_jit_cpu10k": jit}

    monkeypatch.setattr(ceilings, "ceiling_inserts", load)
    monkeypatch.setattr(producers, "publish", publish)
    monkeypatch.setattr(drains, "consume", consume)
    bench = WarmingBench(calls)
    kept = run.warm_up(bench, Plan(n=10, baseline_n=5, latency_rate=3, latency_seconds=2))  # type: ignore[arg-type]  # a fake Bench
    return kept, calls, bench


def test_the_node_is_warmed_up_by_batched_loads_then_drains_until_its_compiler_is_quiet_and_cost_flat(monkeypatch):
    # A fresh node's drains after two loads, as measured: the compiler's part falls to 5 % at the
    # fourth, whose cost is within a tenth of the third's.
    orders = [(2.0, 0.8), (1.6, 0.4), (1.3, 0.12), (1.2, 0.06), (1.2, 0.01)]
    kept, calls, bench = warm_up_with(monkeypatch, orders)
    assert kept == {
        "warm_up_drains_node_cpu10k": [2.0, 1.6, 1.3, 1.2],
        "warm_up_drains_node_jit_cpu10k": [0.8, 0.4, 0.12, 0.06],
        "warm_up_payment_drains_node_cpu10k": [1.0] * 4,
        "warm_up_payment_drains_node_jit_cpu10k": [0.0] * 4,
    }
    load = ("load", 10, {"processes": 1, "concurrency": 0, "batched": True})
    # Each round deletes its topics at its end: the emulator keeps every message a subscription
    # has had until it is deleted, and eight rounds of 100,000 would hold most of its heap.
    rounds = [
        call
        for k in range(4)
        for dlq, orders, payments in [(f"dlq-{3 * k + 1}", f"orders-{3 * k + 2}", f"payments-{3 * k + 3}")]
        for call in (
            ("truncate",),
            ("publish", "orders", orders, 10),
            ("drain", "order_data_consumer.py", orders, dlq, 10, 1),
            ("publish", "payments", payments, 10),
            ("drain", "ingest_in_fact_table.py", payments, dlq, 10, 1),
            ("drop_all", dlq, orders, payments),
        )
    ]
    assert calls == [load, load, *rounds]
    assert bench.topics == []


def test_the_warm_up_goes_on_while_the_nodes_cost_still_falls_with_its_compiler_quiet(monkeypatch):
    # The warm-up of the run of record of ef14000, whose first repeat then cost the node the most.
    orders = [(3.88, 1.94), (2.09, 0.46), (1.49, 0.06), (1.2, 0.02), (1.15, 0.01), (1.1, 0.01)]
    kept, _, _ = warm_up_with(monkeypatch, orders)
    assert kept["warm_up_drains_node_cpu10k"] == [3.88, 2.09, 1.49, 1.2, 1.15]
    assert kept["warm_up_drains_node_jit_cpu10k"] == [1.94, 0.46, 0.06, 0.02, 0.01]


def test_the_warm_up_goes_on_while_the_payment_drains_compile(monkeypatch):
    # The run of record of bb89840 warmed the node with order drains only: its first repeat's
    # payment drain cost the node 3.62 CPU-s per 10k rows, 1.28 of it compiling (then 0.04, 0.02).
    orders = [(1.4, 0.06), (1.3, 0.04), (1.3, 0.03), (1.3, 0.02), (1.3, 0.02)]
    payments = [(3.6, 1.3), (2.0, 0.3), (1.5, 0.1), (1.4, 0.05), (1.4, 0.0)]
    kept, _, _ = warm_up_with(monkeypatch, orders, payments)
    assert kept["warm_up_payment_drains_node_cpu10k"] == [3.6, 2.0, 1.5, 1.4]
    assert kept["warm_up_payment_drains_node_jit_cpu10k"] == [1.3, 0.3, 0.1, 0.05]
    assert kept["warm_up_drains_node_cpu10k"] == [1.4, 1.3, 1.3, 1.3]


def test_the_warm_up_stops_after_its_last_drain_even_when_the_compiler_never_quietens(monkeypatch):
    kept, _, _ = warm_up_with(monkeypatch, [(1.0, 0.5)] * 9)
    assert kept["warm_up_drains_node_cpu10k"] == [1.0] * 8
    assert kept["warm_up_drains_node_jit_cpu10k"] == [0.5] * 8


@pytest.mark.parametrize(
    ("costs", "compiling", "warm"),
    [
        ([], [], False),
        ([1.0], [0.05], False),  # one drain: whether its cost still falls is not known yet
        ([1.0, 1.0], [0.5, 0.05], True),  # 5 % of the node's CPU: at most the share
        ([1.0, 1.0], [0.5, 0.06], False),
        ([2.0, 2.0], [0.5, 0.1], True),  # a share, not an amount
        ([1.0, 1.0], [0.0, 0.5], False),  # only the last drain's compiler counts
        # The run of record of ef14000 stopped here: the compiler quiet, the cost still falling by 29 %.
        ([3.88, 2.09, 1.49], [1.94, 0.46, 0.06], False),
        ([2.0, 1.8], [0.5, 0.0], True),  # a tenth less than the drain before: no longer falling
        ([2.0, 1.79], [0.5, 0.0], False),
        ([1.0, 1.3], [0.5, 0.0], True),  # dearer: not falling either
    ],
)
def test_the_node_is_warm_when_its_compiler_is_quiet_and_its_cost_no_longer_falls(costs, compiling, warm):
    assert run.warmed(costs, compiling) is warm


def test_a_helper_scripts_figures_are_its_last_json_line_even_with_a_log_line_after_it():
    output = 'connecting\n{"rows": 5}\n{"rows": 10, "started": 1.5}\nWARNING cassandra.cluster: host marked down'
    assert last_json(output) == {"rows": 10, "started": 1.5}
    with pytest.raises(RuntimeError, match="no JSON line"):
        last_json("only logs\n")


def test_a_failed_sustained_search_leaves_the_repeats_figures_to_be_written(monkeypatch):
    def failing(bench, plan, dlq, drain_rate):
        raise RuntimeError("order_data_consumer.py failed (1)")

    monkeypatch.setattr(sustained, "run", failing)
    plan = Plan(n=10, baseline_n=5, latency_rate=3, latency_seconds=2)
    assert run.sustained_rate(FakeBench(), plan, [repeat()]) is None  # type: ignore[arg-type]  # a fake Bench
    assert run.sustained_rate(FakeBench(), replace(plan, sustain_steps=0), [repeat()]) is None  # type: ignore[arg-type]  # a fake Bench


def row_and_sentence(sustained_result: dict[str, object]) -> tuple[str, str]:
    """The sustained rate's row of the table, and its sentence below the table."""
    table = table_of_sustained(sustained_result)
    [row] = [line for line in table if "sustained: p99 < 1 s for 60 s" in line]
    [sentence] = [line for line in table if line.startswith("Sustained rate")]
    return row, sentence


def test_a_step_during_which_a_node_compacted_says_for_how_long_in_the_row_and_the_sentence_says_why():
    compacted = {
        **SUSTAINED,
        "steps": [
            {"rate": 6_400.0, "held": True, "compacting_s": 0.0},
            {"rate": 8_000.0, "held": False, "compacting_s": 5.66},
            {"rate": 7_200.0, "held": False, "compacting_s": float("nan")},  # a stalled step's
            {"rate": 6_800.0, "held": True},  # taken before the bench read the node's log
        ],
    }
    row, sentence = row_and_sentence(compacted)
    assert "| once: 6,400 held, 8,000 not (a node compacting 5.7 s), 7,200 not, 6,800 held |" in row
    assert sentence.endswith(
        " In the row, how long a Cassandra node compacted during a step (its log), taking the pipeline's cores."
    )
    assert "compacting" not in row_and_sentence(SUSTAINED)[1]


def test_a_stalled_step_is_named_so_in_the_row_and_the_sentence_says_what_stalled_means():
    stalled = {
        **SUSTAINED,
        "steps": [
            {"rate": 8_000.0, "held": False, "stalled": True},
            {"rate": 6_400.0, "held": True},
            {"rate": 8_000.0, "held": False},
            {"rate": 7_200.0, "held": False},
            {"rate": 6_800.0, "held": True},
        ],
    }
    row, sentence = row_and_sentence(stalled)
    assert "| once: 8,000 stalled, 6,400 held, 8,000 not, 7,200 not, 6,800 held |" in row
    assert sentence.endswith(
        " A step stalled when the producer wrote nothing for 30 s: blocked in publish, its messages unconfirmed."
    )
    assert "stalled" not in row_and_sentence(SUSTAINED)[1]  # no stalled step, no such sentence
