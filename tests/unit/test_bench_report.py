"""The bench's report and harness loop on canned figures: no service, no bench run."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import run
from bench.harness import Plan, describe_stack
from bench.report import chart, report

# Every figure one repeat takes, at round values; a test changes the few it looks at.
CANNED: dict[str, float] = {
    "producer_orders_msgs": 20_000,
    "producer_payments_msgs": 19_000,
    "producer_orders_2w_msgs": 20_500,
    "producer_payments_2w_msgs": 19_500,
    "order_consumer_msgs": 8_000,
    "order_consumer_rss_mib": 90,
    "order_consumer_cpu10k": 5.0,
    "order_consumer_node_cpu10k": 1.5,
    "order_consumer_emulator_cpu10k": 2.0,
    "order_consumer_2w_msgs": 9_000,
    "order_consumer_2w_rss_mib": 170,
    "order_consumer_2w_cpu10k": 6.0,
    "order_consumer_2w_node_cpu10k": 1.6,
    "order_consumer_2w_emulator_cpu10k": 2.1,
    "payment_consumer_msgs": 7_000,
    "payment_consumer_rss_mib": 95,
    "payment_consumer_cpu10k": 6.5,
    "payment_consumer_2w_msgs": 8_000,
    "payment_consumer_2w_rss_mib": 180,
    "payment_consumer_2w_cpu10k": 7.5,
    "baseline_orders_msgs": 500,
    "baseline_orders_rss_mib": 80,
    "baseline_orders_cpu10k": 30.0,
    "baseline_payments_msgs": 250,
    "baseline_payments_rss_mib": 75,
    "baseline_payments_cpu10k": 40.0,
    "ceiling_pull_ack_msgs": 30_000,
    "ceiling_pull_ack_emulator_cpu10k": 1.0,
    "ceiling_pull_ack_late_msgs": 12_000,
    "ceiling_pull_ack_late_emulator_cpu10k": 3.0,
    "ceiling_inserts_1p_msgs": 14_000,
    "ceiling_inserts_2p_msgs": 15_000,
    "ceiling_batched_msgs": 16_000,
    "ceiling_batched_cpu10k": 4.0,
    "ceiling_batched_node_cpu10k": 1.2,
    "ceiling_inserts_msgs": 16_000,
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
    assert rows == ["| order_data_consumer.py (this project) | 8,100 | 8,100, 7,200, 9,900 | 91 MiB | 5.0 |"]


def test_a_ratio_is_the_median_of_each_repeats_own_ratio_not_the_ratio_of_the_medians():
    # Medians 8,000 / 500 would be 16; the repeats' own ratios are 10, 25 and 40.
    runs = [
        repeat(order_consumer_msgs=5_000, baseline_orders_msgs=500),
        repeat(order_consumer_msgs=8_000, baseline_orders_msgs=320),
        repeat(order_consumer_msgs=10_000, baseline_orders_msgs=250),
    ]
    rows = [line for line in table_of(runs) if line.startswith("| order consumer / orders baseline |")]
    assert rows == ["| order consumer / orders baseline | 25.00 | 10.00, 25.00, 40.00 |"]
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
    older = {k: v for k, v in older.items() if k not in ("order_consumer_node_cpu10k", "baseline_orders_rss_mib")}
    table = table_of([older])
    assert not any("racing" in line or "one pull late" in line for line in table)
    assert not any(line.startswith("CPU seconds per 10,000 orders") for line in table)
    [baseline] = [line for line in table if line.startswith("| BASELINE orders:")]
    assert baseline == "| BASELINE orders: subscribe() callback, 1 sync INSERT each | 500 | 500 |  | 30.0 |"


def test_the_cpu_paragraph_adds_up_the_consumer_the_node_and_the_emulator():
    [paragraph] = [line for line in table_of([repeat()]) if line.startswith("CPU seconds per 10,000 orders")]
    assert "used 5.00 in the consumer, 1.50 in Cassandra and 2.00 in the emulator, 8.50 in all" in paragraph
    assert "with each pull's messages acked before the next pull and 3.00 with them acked one pull late" in paragraph


def test_the_chart_is_a_png(tmp_path: Path):
    result = report([repeat()], 50_000, 5_000, 2_000, machine="m", stack="s")
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

    def topic(self, name: str) -> str:
        self.topics.append(name)
        return f"{name}-{len(self.topics)}"


def test_a_repeat_runs_every_scenario_in_order_on_one_dead_letter_topic(monkeypatch):
    calls = []

    def scenario(name: str, figures: dict[str, float]):
        def run_it(bench, plan, dlq):
            calls.append((name, plan, dlq))
            return figures

        return run_it

    monkeypatch.setattr(run, "SCENARIOS", [scenario("first", {"a": 1.0}), scenario("second", {"b": 2.0})])
    bench, plan = FakeBench(), Plan(n=10, baseline_n=5, latency_rate=3, latency_seconds=2)
    assert run.one_repeat(bench, plan) == {"a": 1.0, "b": 2.0}  # type: ignore[arg-type]  # a fake Bench
    assert calls == [("first", plan, "dlq-1"), ("second", plan, "dlq-1")] and bench.topics == ["dlq"]
