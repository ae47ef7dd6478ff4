"""The drains scenario's order of work, on a fake bench: no service, no bench run."""

from __future__ import annotations

import pytest

from bench.harness import Plan
from bench.scenarios import ceilings, drains, producers


class RecordingBench:
    def __init__(self, calls: list[tuple[object, ...]]) -> None:
        self.calls = calls
        self.made = 0

    def topic(self, name: str) -> str:
        self.made += 1
        return f"{name}-{self.made}"

    def truncate(self) -> None:
        self.calls.append(("truncate",))


def test_the_one_worker_drains_lie_between_two_batched_loads_whose_mean_is_kept(monkeypatch):
    # The targets' denominators are the batched loader's and the node's cost per row, taken just
    # before the order drain and just after the payment drain, so that the machine's speed, which
    # wanders over minutes, is nearly the same for both figures of a ratio. Then the same writes
    # shaped like the order drain's and paced at its rate: the node's cost at that rate alone.
    calls: list[tuple[object, ...]] = []
    loads = iter(
        [
            (9_000.0, {"window_cpu10k": 0.6, "window_node_cpu10k": 1.1}),
            (11_000.0, {"window_cpu10k": 0.4, "window_node_cpu10k": 0.9}),
            (6_000.0, {"window_cpu10k": 0.7, "window_node_cpu10k": 1.4}),
        ]
    )

    def load(bench, n, **how):
        calls.append(("load", n, how))
        return next(loads)

    def publish(bench, kind, topic, n, suffix):
        calls.append(("publish", kind, topic))
        return {}

    def consume(bench, script, topic, dlq, n, workers):
        calls.append(("drain", script, topic, workers))
        return {"msgs": 6_500.0 if "order" in script else 5_000.0}

    monkeypatch.setattr(ceilings, "ceiling_inserts", load)
    monkeypatch.setattr(producers, "publish", publish)
    monkeypatch.setattr(drains, "consume", consume)
    figures = drains.run(RecordingBench(calls), Plan(n=10, baseline_n=5, latency_rate=3, latency_seconds=2), "dlq")  # type: ignore[arg-type]  # a fake Bench
    load_call = ("load", 10, {"processes": 1, "concurrency": 0, "batched": True})
    assert calls == [
        load_call,
        ("truncate",),
        ("publish", "orders", "orders-1"),
        ("drain", "order_data_consumer.py", "orders-1", 1),
        ("publish", "payments", "payments-2"),
        ("drain", "ingest_in_fact_table.py", "payments-2", 1),
        load_call,
        ("load", 10, {"processes": 1, "concurrency": 0, "batched": True, "calls": (4, 550), "rate": 6_500.0}),
        ("truncate",),
        ("publish", "orders", "orders-3"),
        ("drain", "order_data_consumer.py", "orders-3", 2),
        ("publish", "payments", "payments-4"),
        ("drain", "ingest_in_fact_table.py", "payments-4", 2),
    ]
    beside = {key: value for key, value in figures.items() if key.startswith("beside_")}
    assert beside == {
        "beside_batched_msgs": pytest.approx(10_000.0),
        "beside_batched_window_cpu10k": pytest.approx(0.5),
        "beside_batched_window_node_cpu10k": pytest.approx(1.0),
        "beside_batched_before_msgs": 9_000.0,
        "beside_batched_before_window_cpu10k": 0.6,
        "beside_batched_before_window_node_cpu10k": 1.1,
        "beside_batched_after_msgs": 11_000.0,
        "beside_batched_after_window_cpu10k": 0.4,
        "beside_batched_after_window_node_cpu10k": 0.9,
        "beside_paced_msgs": 6_000.0,
        "beside_paced_window_cpu10k": 0.7,
        "beside_paced_window_node_cpu10k": 1.4,
    }
    assert figures["order_consumer_msgs"] == 6_500.0
