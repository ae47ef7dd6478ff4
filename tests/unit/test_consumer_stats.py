"""ConsumerStats: the summary line and how the stats of several worker processes add up."""

from __future__ import annotations

from collections import Counter

from ecom_pipeline.consumer import ConsumerStats


def stats(received: int, first: float | None, last: float | None, latencies: list[float], **dead: int) -> ConsumerStats:
    part = ConsumerStats(
        received=received, applied=received - sum(dead.values()), first_received=first, last_settled=last
    )
    part.dead_lettered.update(dead)
    part.latencies.extend(latencies)
    return part


def test_merge_adds_counts_and_spans_from_the_first_receive_to_the_last_settle() -> None:
    merged = ConsumerStats.merge(
        [
            stats(100, 10.0, 12.0, [0.1, 0.2], invalid_json=2),
            stats(300, 11.0, 14.0, [0.3], invalid_json=1, order_not_found=4),
        ]
    )
    assert (merged.received, merged.applied) == (400, 393)
    assert merged.dead_lettered == Counter(invalid_json=3, order_not_found=4)
    assert (merged.first_received, merged.last_settled) == (10.0, 14.0)
    assert sorted(merged.latencies) == [0.1, 0.2, 0.3]
    assert "received=400 applied=393 dead_lettered=7 (invalid_json=3, order_not_found=4)" in merged.summary()
    assert "rate=100 msg/s over 4.00 s busy" in merged.summary()


def test_merge_of_idle_workers_has_no_span_and_no_latency() -> None:
    merged = ConsumerStats.merge([stats(0, None, None, []), stats(0, None, None, [])])
    assert merged.first_received is None and merged.last_settled is None
    assert merged.summary().endswith("rate=0 msg/s over 0.00 s busy")


def test_latency_percentiles_come_from_the_sorted_sample() -> None:
    part = stats(5, 0.0, 1.0, [0.5, 0.1, 0.4, 0.2, 0.3])
    assert part.latency_percentiles(0.0, 0.5, 1.0) == [0.1, 0.3, 0.5]
    assert "latency_ms p50=300 p90=500 p99=500 max=500" in part.summary()
