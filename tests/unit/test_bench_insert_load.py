"""The bench's insert load, split into calls as a consumer's batch workers write: no service."""

from __future__ import annotations

import threading
import time

import pytest

from bench.insert_load import write_in_calls


class Recorder:
    """A write that keeps each call's rows, when each began, and the most calls under way at once."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[list[tuple[object, ...]]] = []
        self.began: list[float] = []  # monotonic seconds, in the order of `calls`
        self.most_at_once = 0
        self._under_way = 0
        self._lock = threading.Lock()
        self._fail_on = fail_on

    def __call__(self, rows: list[tuple[object, ...]], now: int) -> None:
        with self._lock:
            self.calls.append(rows)
            self.began.append(time.monotonic())
            self._under_way += 1
            self.most_at_once = max(self.most_at_once, self._under_way)
        time.sleep(0.01)  # long enough for the other threads' calls to start meanwhile
        with self._lock:
            self._under_way -= 1
        if self._fail_on is not None and any(row[0] == self._fail_on for row in rows):
            raise SystemExit("insert load: the node is down")


ROWS: list[tuple[object, ...]] = [(order_id, "row") for order_id in range(1, 1_001)]


def test_every_row_is_written_once_in_calls_of_at_most_the_size_and_that_many_at_once():
    write = Recorder()
    write_in_calls(write, 4, 150, ROWS, 7)
    assert sorted(row for call in write.calls for row in call) == ROWS
    assert sorted(len(call) for call in write.calls) == [100] + [150] * 6
    assert write.most_at_once == 4


def test_without_a_call_size_all_rows_go_in_one_call():
    write = Recorder()
    write_in_calls(write, 4, 0, ROWS, 7)
    assert write.calls == [ROWS]


def test_a_call_that_fails_fails_the_load_once_every_thread_has_ended():
    write = Recorder(fail_on=500)
    with pytest.raises(SystemExit, match="node is down"):
        write_in_calls(write, 3, 100, ROWS, 7)
    assert len(write.calls) >= 5  # the threads that did not fail went on


def test_a_rate_holds_each_call_until_its_first_row_is_due():
    # 1,000 rows at 4,000 rows/s in calls of 100: the call holding row k (0-based) may begin no
    # sooner than k / 4,000 s after the load began, so the last begins 225 ms in at the earliest.
    write = Recorder()
    began = time.monotonic()
    write_in_calls(write, 4, 100, ROWS, 7, rate=4_000)
    assert sorted(row for call in write.calls for row in call) == ROWS
    for rows, at in zip(write.calls, write.began, strict=True):
        first = ROWS.index(rows[0])
        assert at - began >= first / 4_000
    assert max(write.began) - began >= 0.225
