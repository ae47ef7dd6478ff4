"""The sustained-rate search and its verdict on canned steps: no service, no bench run."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench.scenarios.sustained import Step, next_rate, search, stalled_step


def step(rate: float, **changes: float | bool) -> Step:
    figures: dict[str, Any] = {
        "published_rate": rate,
        "within_1s": 0.999,
        "p99_ms": 300.0,
        "backlog": 0.2 * rate,
        "consumer_cpu10k": 0.6,
        "producer_cpu10k": 0.3,
        "producer_cores": 0.2,
        **changes,
    }
    return Step(rate=rate, **figures)


def test_a_step_holds_when_the_producer_kept_the_rate_99_percent_came_within_1_s_and_the_backlog_stayed_small():
    assert step(5_000).held
    assert not step(5_000, within_1s=0.98).held
    assert not step(5_000, backlog=5_001).held  # more than one second's worth outstanding at the end
    assert step(5_000, backlog=5_000).held
    assert not step(5_000, published_rate=4_800).held  # the producer could not publish at the rate
    assert step(5_000, published_rate=4_900).held


def test_the_search_starts_at_eight_tenths_of_the_drain_rate_in_whole_hundreds():
    assert next_rate([], drain_rate=7_620) == 6_100


def test_it_goes_up_while_every_rate_held_and_down_while_none_did():
    assert next_rate([(6_000, True)], drain_rate=7_500) == 7_500
    assert next_rate([(6_000, False)], drain_rate=7_500) == 4_800


def test_once_bracketed_it_halves_the_gap_until_the_two_are_within_five_percent():
    assert next_rate([(6_000, True), (7_500, False)], drain_rate=7_500) == 6_800
    assert next_rate([(6_000, True), (7_500, False), (6_800, False)], drain_rate=7_500) == 6_400
    assert next_rate([(6_000, True), (6_300, False)], drain_rate=7_500) is None


def test_a_failure_below_a_rate_that_held_does_not_bracket_it():
    # noise: 6,000 failed once, 6,500 then held; the search goes on upwards from 6,500
    assert next_rate([(6_000, False), (6_500, True)], drain_rate=7_500) == 8_100


def test_a_rate_already_tried_ends_the_search():
    assert next_rate([(100, False)], drain_rate=100) is None  # 100 / 1.25 rounds back up to 100


@pytest.mark.parametrize(
    ("capacity", "tried"), [(6_500, [6_000, 7_500, 6_800, 6_400]), (3_000, [6_000, 4_800, 3_800, 3_000])]
)
def test_the_search_tries_at_most_the_steps_it_is_given_against_a_consumer_of_some_capacity(capacity, tried):
    steps = search(lambda rate: step(rate, within_1s=1.0 if rate <= capacity else 0.5), drain_rate=7_500, steps=4)
    assert [s.rate for s in steps] == tried
    assert max((s.rate for s in steps if s.held), default=0) == max(r for r in tried if r <= capacity)


def test_a_stalled_step_never_holds_whatever_its_other_figures():
    assert not step(5_000, stalled=True).held


def test_a_stalled_step_keeps_the_producers_last_rate_and_what_was_not_applied():
    lines = [
        (3.0, "INFO consuming"),  # not a progress line
        (5.1, "INFO published=29000 failed=0 unconfirmed=3500 rate=5800 msg/s over 5.0 s"),
        (50.2, "INFO published=285381 failed=0 unconfirmed=12219 rate=5950 msg/s over 50.1 s"),
    ]
    stalled = stalled_step(6_500, 390_000, lines, applied=280_000)
    assert (stalled.rate, stalled.published_rate, stalled.backlog, stalled.stalled) == (6_500, 5_950, 110_000, True)
    assert not stalled.held
    assert all(
        math.isnan(v) for v in (stalled.within_1s, stalled.p99_ms, stalled.consumer_cpu10k, stalled.compacting_s)
    )


def test_a_producer_that_stalled_before_its_first_progress_line_published_at_no_rate():
    assert stalled_step(6_500, 390_000, [(1.0, "INFO starting")], applied=0).published_rate == 0


def test_after_a_stalled_step_the_search_goes_on_below_it():
    steps = search(lambda rate: step(rate, stalled=rate > 5_000), drain_rate=8_100, steps=4)
    assert [(s.rate, s.held) for s in steps] == [(6_500, False), (5_200, False), (4_200, True), (4_700, True)]
