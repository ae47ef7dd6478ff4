"""The bench's CPU windows on canned samples and log lines: no service, no bench run."""

from __future__ import annotations

import os
import threading
import time

import pytest

from bench import measure
from bench.measure import (
    JIT_THREADS,
    CpuTimeline,
    ProcessInfo,
    ThreadCpu,
    busy_windows,
    compacting_seconds,
    logged_at,
    own_cpu,
    worker_tags,
)
from stack.emulator import PUBSUB
from stack.node import CASSANDRA
from stack.service import LocalService


def timeline_of(*samples: tuple[float, dict[str, float]]) -> CpuTimeline:
    timeline = CpuTimeline()
    for at, values in reversed(samples):  # added out of order, as two sampling threads may
        timeline.add(at, values)
    return timeline


def test_a_moment_between_two_samples_is_interpolated_and_one_outside_them_is_the_nearest():
    timeline = timeline_of((10.0, {"7": 1.0}), (12.0, {"7": 3.0}), (13.0, {"7": 3.5}))
    assert timeline.at("7", 11.5) == 2.5
    assert timeline.at("7", 9.0) == 1.0  # before the process was first seen
    assert timeline.at("7", 20.0) == 3.5  # after it exited
    assert timeline.at("8", 11.0) == 0.0  # never seen


def test_a_window_is_the_difference_of_its_ends():
    timeline = timeline_of((0.0, {"node": 100.0}), (10.0, {"node": 120.0}))
    assert timeline.between("node", (2.5, 7.5)) == pytest.approx(10.0)


def test_a_part_missing_from_some_samples_is_read_from_those_that_have_it():
    timeline = timeline_of((0.0, {"7": 0.0, "node": 0.0}), (1.0, {"node": 5.0}), (2.0, {"7": 2.0, "node": 9.0}))
    assert timeline.at("7", 1.0) == 1.0


CONSUMING = "2026-11-30 16:00:00,000 INFO {tag}ecom_pipeline.app: consuming bench-orders-1-sub, dead letters to d"
IDLE = "2026-11-30 16:00:00,000 INFO {tag}ecom_pipeline.consumer.loop: no message for 3 s, exiting"
FINAL = "2026-11-30 16:00:00,000 INFO {tag}ecom_pipeline.app: final: received=5 applied=5"


def test_a_single_consumer_works_from_its_consuming_line_to_its_idle_line_less_the_idle_time():
    lines = [
        (1.0, "starting"),
        (2.5, CONSUMING.format(tag="")),
        (9.0, IDLE.format(tag="")),
        (9.2, FINAL.format(tag="")),
    ]
    assert busy_windows(lines, idle_exit=3) == {"": (2.5, 6.0)}


def test_each_worker_has_its_own_window_by_its_tag():
    lines = [
        (2.0, CONSUMING.format(tag="[worker-2] ")),
        (2.4, CONSUMING.format(tag="[worker-1] ")),
        (9.0, IDLE.format(tag="[worker-1] ")),
        (9.5, IDLE.format(tag="[worker-2] ")),
    ]
    assert busy_windows(lines, idle_exit=3) == {"worker-1": (2.4, 6.0), "worker-2": (2.0, 6.5)}


def test_lines_are_timed_by_their_own_stamps_when_the_clocks_offset_is_known():
    logged = time.mktime(time.strptime("2026-11-30 16:00:00", "%Y-%m-%d %H:%M:%S")) + 0.25
    lines = [
        (1_000.9, CONSUMING.format(tag="").replace(",000", ",250")),  # reached the bench 0.65 s late
        (1_008.0, IDLE.format(tag="").replace("16:00:00,000", "16:00:07,100")),
    ]
    offset = logged - 1_000.25  # wall clock minus monotonic clock
    assert busy_windows(lines, idle_exit=3, wall_minus_monotonic=offset) == {"": pytest.approx((1_000.25, 1_004.1))}
    assert logged_at(5.0, "no stamp here", offset) == 5.0


def test_a_consumer_that_never_went_idle_has_no_window():
    assert busy_windows([(2.5, CONSUMING.format(tag=""))], idle_exit=3) == {}


def info(parent: int, started: int, worker: bool = True) -> ProcessInfo:
    return ProcessInfo(parent=parent, started=started, spawned_worker=worker)


def test_workers_are_named_in_the_order_their_parent_started_them():
    processes = {
        100: info(1, 5, worker=False),
        104: info(100, 9),  # started after 103 (a later tick)
        103: info(100, 8),
        102: info(100, 8, worker=False),  # the resource tracker
        105: info(104, 9),  # not a child of the root
    }
    assert worker_tags(100, processes) == {100: "*", 102: "*", 103: "worker-1", 104: "worker-2", 105: "*"}


def test_a_consumer_without_workers_is_the_untagged_process():
    assert worker_tags(100, {100: info(1, 5, worker=False)}) == {100: ""}


def test_own_cpu_takes_each_process_over_its_window_and_the_others_over_the_span():
    timeline = timeline_of(
        (0.0, {"100": 1.0, "103": 0.0, "104": 0.0}),
        (10.0, {"100": 2.0, "103": 10.0, "104": 5.0}),
    )
    tags = {100: "*", 103: "worker-1", 104: "worker-2"}
    windows = {"worker-1": (2.0, 6.0), "worker-2": (4.0, 8.0)}
    total, span = own_cpu(timeline, tags, windows)
    # worker-1: 1 CPU-s a second for 4 s; worker-2: 0.5 for 4 s; the parent: 0.1 over 2..8 s
    assert span == (2.0, 8.0)
    assert total == pytest.approx(4.0 + 2.0 + 0.6)


def test_own_cpu_without_a_window_is_an_error_not_a_zero():
    with pytest.raises(ValueError, match="no working window"):
        own_cpu(CpuTimeline(), {100: ""}, {})


@pytest.mark.parametrize("missing", ["cassandra", "pubsub-emulator"])
def test_the_stacks_cpu_cannot_be_read_as_zero_when_its_processes_are_not_this_checkouts(monkeypatch, missing):
    """A stack that answers but that this checkout did not start (another checkout's, reused by
    `localstack up`) has no pid here: its CPU would read as 0, the table's node and emulator
    columns as 0, and the node's ratio as 0 / 0, a traceback only after the whole run."""
    assert {CASSANDRA.name, PUBSUB.name} == {"cassandra", "pubsub-emulator"}
    monkeypatch.setattr(LocalService, "pid", lambda service: None if service.name == missing else 4242)
    with pytest.raises(RuntimeError, match=f"^{missing} is not running from this checkout"):
        measure.StackCpu()


class Busy(threading.Thread):
    """A thread of this process under a name of our choosing (as /proc shows it) that uses
    `seconds` of CPU, says how much by its own clock, and stays until released."""

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(daemon=True)
        self.os_name, self.seconds = name, seconds
        self.used = 0.0
        self.ready, self.release = threading.Event(), threading.Event()

    def run(self) -> None:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm:
            comm.write(self.os_name)
        while time.thread_time() < self.seconds:
            pass
        self.used = time.thread_time()
        self.ready.set()
        self.release.wait(30)


def test_thread_cpu_counts_the_threads_named_so_and_keeps_their_cpu_after_they_exit():
    compiler, other = Busy("C2 CompilerThre", 0.3), Busy("MutationStage-1", 0.3)
    for thread in (compiler, other):
        thread.start()
        assert thread.ready.wait(30)
    jit = ThreadCpu(os.getpid(), JIT_THREADS, rescan=0.0)
    try:
        counted = jit.now()
        # /proc counts in clock ticks (10 ms here) and the thread's own clock in nanoseconds
        assert counted == pytest.approx(compiler.used, abs=0.05)
    finally:
        for thread in (compiler, other):
            thread.release.set()
            thread.join(30)
    assert jit.now() == counted  # gone from /proc, still counted, and only once


# A node's system.log as stack/logback.xml writes it, cut short: two compactions, a flush and a GC.
NODE_LOG = """\
INFO  [PerDiskMemtableFlushWriter_0:15] 2026-12-01 19:07:09,886 Flushing.java:153 - Writing Memtable-facts@1
INFO  [CompactionExecutor:1] 2026-12-01 19:07:10,348 CompactionTask.java:175 - Compacting (68d1b5b0-edba) [nb-68]
INFO  [Notification Thread] 2026-12-01 19:07:12,056 GCInspector.java:286 - G1 Young Generation GC in 220ms.
INFO  [CompactionExecutor:1] 2026-12-01 19:07:16,653 CompactionTask.java:274 - Compacted (68d1b5b0-edba) 4 sstables
INFO  [CompactionExecutor:2] 2026-12-01 19:07:40,000 CompactionTask.java:175 - Compacting (0000aaaa-edba) [nb-72]
INFO  [CompactionExecutor:2] 2026-12-01 19:07:41,500 CompactionTask.java:274 - Compacted (0000aaaa-edba) 4 sstables
"""
AT_19_07 = time.mktime(time.strptime("2026-12-01 19:07:00", "%Y-%m-%d %H:%M:%S"))  # local time, as the log


def test_a_node_compacting_is_counted_from_each_compactions_first_line_to_its_last():
    # 10.348 to 16.653 s after 19:07, and 40.0 to 41.5: 6.305 + 1.5 s.
    assert compacting_seconds(NODE_LOG, (AT_19_07, AT_19_07 + 60)) == pytest.approx(7.805)


def test_only_the_part_of_a_compaction_inside_the_window_counts():
    assert compacting_seconds(NODE_LOG, (AT_19_07 + 12, AT_19_07 + 14)) == pytest.approx(2.0)
    assert compacting_seconds(NODE_LOG, (AT_19_07 + 20, AT_19_07 + 39)) == 0.0


def test_a_compaction_begun_before_the_text_or_not_done_at_its_end_runs_to_the_windows_edge():
    lines = NODE_LOG.splitlines(keepends=True)
    ended_only = "".join(lines[3:4])  # its Compacting line was written before the text was read
    begun_only = "".join(lines[4:5])  # still compacting when the text was read
    assert compacting_seconds(ended_only, (AT_19_07 + 5, AT_19_07 + 60)) == pytest.approx(11.653)
    assert compacting_seconds(begun_only, (AT_19_07, AT_19_07 + 45)) == pytest.approx(5.0)


def test_compactions_running_at_once_count_once():
    second = NODE_LOG.replace("19:07:40,000", "19:07:15,000").replace("19:07:41,500", "19:07:18,000")
    # 10.348 to 16.653 and 15.0 to 18.0 overlap: 10.348 to 18.0.
    assert compacting_seconds(second, (AT_19_07, AT_19_07 + 60)) == pytest.approx(7.652)
