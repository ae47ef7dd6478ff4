"""What a bench run costs, read from /proc: processes' CPU seconds and the stack's own share, as
totals and as timelines from which a window (a drain without its start-up and idle exit) is cut."""

from __future__ import annotations

import bisect
import os
import re
import resource
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from stack.emulator import PUBSUB
from stack.node import cassandra_node, node_home
from stack.service import LocalService

__all__ = [
    "CONSUMING",
    "EMULATOR",
    "JIT_THREADS",
    "NODE",
    "NODE_JIT",
    "CpuTimeline",
    "NodeLogs",
    "ProcessInfo",
    "Sampler",
    "StackCpu",
    "ThreadCpu",
    "Window",
    "busy_windows",
    "children_cpu",
    "compacting_seconds",
    "cpu_seconds",
    "descendants",
    "logged_at",
    "own_cpu",
    "process_cpu",
    "worker_tags",
]

NODE, EMULATOR = "node", "emulator"  # the timeline's parts besides the pids
NODE_JIT = "node_jit"  # and the part of the node's CPU its just-in-time compiler used
# HotSpot's compiler threads, as /proc shows their names (cut to 15 characters): "C2 CompilerThread0".
JIT_THREADS = ("C1 CompilerThre", "C2 CompilerThre")
Window = tuple[float, float]  # (start, end), monotonic seconds (CLOCK_MONOTONIC: the same in every process)


def descendants(pid: int) -> list[int]:
    """The process and its children, grandchildren, ... (e.g. the workers of `--workers 2`)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with suppress(OSError):
                queue.extend(int(child) for child in task.read_text().split())
    return found


def _stat(pid: int, thread: int | None = None) -> list[str]:
    """The fields of /proc/<pid>/stat (or of one thread's, /proc/<pid>/task/<thread>/stat) after
    the command name (field 3, the state, is [0])."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    return Path(path).read_text().rsplit(")", 1)[1].split()


def _cpu(fields: list[str]) -> float:
    """User + system CPU seconds from `_stat`'s fields (utime, stime, in clock ticks)."""
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of one process (every thread), not its children; None once gone."""
    try:
        fields = _stat(pid)
    except OSError:
        return None
    return _cpu(fields)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes and all their descendants so far."""
    return sum(cpu or 0.0 for cpu in map(process_cpu, {d for p in pids for d in descendants(p)}))


class ThreadCpu:
    """User + system CPU seconds of a process's threads whose names start with one of `prefixes`,
    so far. A thread that has exited keeps counting at the figure it last showed (its CPU leaves
    /proc with it), so the count never falls. A JVM has hundreds of threads: their names are read
    again at most once every `rescan` seconds (a compiler thread the JVM adds under load is found
    then), or at once when one of those found has exited."""

    def __init__(self, pid: int, prefixes: Sequence[str], rescan: float = 1.0) -> None:
        self.pid, self.prefixes, self.rescan = pid, tuple(prefixes), rescan
        self._seen: dict[int, float] = {}  # thread id: its CPU seconds when last read
        self._gone = 0.0  # the last figures of the threads that have exited
        self._scanned = -rescan  # monotonic seconds of the last reading of the names
        self._lock = threading.Lock()  # several samplers may share one

    def now(self) -> float:
        with self._lock:
            complete = self._read(list(self._seen))
            if not complete or time.monotonic() - self._scanned >= self.rescan:
                self._scanned = time.monotonic()
                self._read([thread for thread in self._matching() if thread not in self._seen])
            return self._gone + sum(self._seen.values())

    def _matching(self) -> list[int]:
        found = []
        for task in Path(f"/proc/{self.pid}/task").glob("*"):
            with suppress(OSError, ValueError):
                if (task / "comm").read_text().startswith(self.prefixes):
                    found.append(int(task.name))
        return found

    def _read(self, threads: list[int]) -> bool:
        """Each thread's CPU into `_seen`; False if one of them has exited."""
        complete = True
        for thread in threads:
            try:
                self._seen[thread] = _cpu(_stat(self.pid, thread))
            except OSError:
                self._gone += self._seen.pop(thread, 0.0)
                complete = False
        return complete


class StackCpu:
    """CPU seconds used by the stack's Cassandra node(s) and by the emulator, between two calls
    of `take`: the processes this project started (their pid files), never looked up by name."""

    def __init__(self) -> None:
        nodes = int(os.environ.get("CASSANDRA_NODES", "1"))
        self.nodes = [_own_pid(cassandra_node(k, nodes)) for k in range(1, nodes + 1)]
        self.emulator = [_own_pid(PUBSUB)]
        self._jit = [ThreadCpu(node, JIT_THREADS) for node in self.nodes]
        self._last = self.now()

    def now(self) -> tuple[float, float]:
        """(node CPU seconds, emulator CPU seconds) since they started."""
        return cpu_seconds(self.nodes), cpu_seconds(self.emulator)

    def jit(self) -> float:
        """CPU seconds the node(s)' just-in-time compilers have used since they started: the part
        of a window's node CPU that is the JVM still compiling, not the work asked of it."""
        return sum(threads.now() for threads in self._jit)

    def take(self) -> tuple[float, float]:
        """(node CPU seconds, emulator CPU seconds) since the last call (or since built)."""
        previous, self._last = self._last, self.now()
        return self._last[0] - previous[0], self._last[1] - previous[1]


def _own_pid(service: LocalService) -> int:
    """The service's pid; a `RuntimeError` when this checkout's is not running (`localstack up`
    reuses any stack that answers on its ports), where its CPU would read as 0, a cost of nothing."""
    pid = service.pid()
    if pid is None:
        raise RuntimeError(
            f"{service.name} is not running from this checkout, so its CPU cannot be measured:"
            " `make bench` starts it, unless another checkout's answers on its port (stop that one"
            " with its own `make stack-down`)"
        )
    return pid


def children_cpu() -> float:
    """User + system CPU seconds of this process's children that have ended (and been waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuTimeline:
    """Cumulative CPU seconds of named parts (a pid as a string, `node`, `emulator`), sampled at
    moments (monotonic seconds). A part's CPU at a moment between two samples is interpolated
    linearly; before its first sample it is that sample's, after its last (an exited process) its
    last. Samples may be added from several threads."""

    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, at: float, values: Mapping[str, float]) -> None:
        with self._lock:
            bisect.insort(self.samples, (at, dict(values)), key=lambda sample: sample[0])

    def at(self, part: str, moment: float) -> float:
        """The part's cumulative CPU seconds at `moment` (0.0 if it was never sampled)."""
        with self._lock:
            points = [(at, values[part]) for at, values in self.samples if part in values]
        if not points:
            return 0.0
        index = bisect.bisect_left(points, moment, key=lambda point: point[0])
        if index == 0:
            return points[0][1]
        if index == len(points):
            return points[-1][1]
        (t0, v0), (t1, v1) = points[index - 1], points[index]
        return v0 + (v1 - v0) * (moment - t0) / (t1 - t0) if t1 > t0 else v1

    def between(self, part: str, window: Window) -> float:
        """The part's CPU seconds from the window's start to its end."""
        return self.at(part, window[1]) - self.at(part, window[0])

    def parts(self) -> set[str]:
        with self._lock:
            return {part for _, values in self.samples for part in values}


# The consumer's own log lines that bound its work (ecom_pipeline/app.py and consumer/loop.py):
# "consuming ..." once its clients are connected and its start checks passed, just before its
# first pull; "no message for N s, exiting" N s (and at most one 0.1 s check) after its last
# settled batch. A `--workers` worker's lines carry its name: "[worker-1] ". Each line opens with
# the wall-clock time it was logged, to the millisecond: when the event happened, which a loaded
# machine can make a line reach the bench a few hundred milliseconds later.
_TAG = r"(?:\[(?P<tag>[^\]]+)\] )?[\w.]+: "
CONSUMING = re.compile(_TAG + r"consuming ")
_IDLE_EXIT = re.compile(_TAG + r"no message for \d+ s, exiting")
_LOGGED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def logged_at(arrived: float, text: str, wall_minus_monotonic: float | None) -> float:
    """When a log line was written, in monotonic seconds: its own time stamp (local wall clock)
    less `wall_minus_monotonic`; without that, or a time stamp, the time it arrived."""
    stamp = _LOGGED.match(text)
    if stamp is None or wall_minus_monotonic is None:
        return arrived
    return _wall_seconds(stamp.group(1), stamp.group(2)) - wall_minus_monotonic


def _wall_seconds(date_time: str, millis: str) -> float:
    """A log line's stamp ("2026-12-01 19:07:10" and "348", local time) as epoch seconds."""
    return time.mktime(time.strptime(date_time, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000


# A compaction's first and last lines in a node's system.log (stack/logback.xml's pattern), e.g.
# INFO  [CompactionExecutor:1] 2026-12-01 19:07:10,348 CompactionTask.java:175 - Compacting (68d1b5b0-...) [...]
_COMPACTION = re.compile(
    r"\] (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \S+ - Compact(?P<state>ing|ed) \((?P<id>[0-9a-f-]+)\)"
)


def compacting_seconds(log: str, window: tuple[float, float]) -> float:
    """How many seconds of `window` (wall clock, epoch seconds) a node spent compacting, by the
    lines of its system.log in `log`: each compaction from its `Compacting (id)` line to its
    `Compacted (id)` one. One begun before the text runs from the window's start, one not done at
    its end to the window's end; compactions running at once count once."""
    begun: dict[str, float] = {}
    spans: list[tuple[float, float]] = []
    for found in _COMPACTION.finditer(log):
        at = _wall_seconds(found[1], found[2])
        if found["state"] == "ing":
            begun[found["id"]] = at
        else:
            spans.append((begun.pop(found["id"], window[0]), at))
    spans += [(at, window[1]) for at in begun.values()]
    covered, reached = 0.0, window[0]
    for start, end in sorted(spans):
        start, end = max(start, reached), min(end, window[1])
        if end > start:
            covered, reached = covered + end - start, end
    return covered


class NodeLogs:
    """The stack's Cassandra node(s)' system.log, read from where each ended when this was built."""

    def __init__(self) -> None:
        nodes = int(os.environ.get("CASSANDRA_NODES", "1"))
        self.paths = [node_home(k, nodes) / "system.log" for k in range(1, nodes + 1)]
        self.offsets = [path.stat().st_size if path.exists() else 0 for path in self.paths]

    def since(self) -> str:
        """What the node(s) logged since this was built."""
        text = []
        for path, offset in zip(self.paths, self.offsets, strict=True):
            with suppress(OSError), path.open("rb") as log:
                log.seek(offset)
                text.append(log.read().decode(errors="replace"))
        return "".join(text)


def busy_windows(
    lines: Sequence[tuple[float, str]], idle_exit: float, wall_minus_monotonic: float | None = None
) -> dict[str, Window]:
    """Each consumer process's working window, by its log tag ("" for a single process): from its
    `consuming` line (start-up over) to its last settled batch, `idle_exit` seconds before its
    idle-exit line. Lines are (arrival time, text), timed by their own stamps when
    `wall_minus_monotonic` is given (see `logged_at`). A process without both lines has no window."""
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for arrived, text in lines:
        if (start := CONSUMING.search(text)) is not None:
            starts.setdefault(start["tag"] or "", logged_at(arrived, text, wall_minus_monotonic))
        elif (end := _IDLE_EXIT.search(text)) is not None:
            ends[end["tag"] or ""] = logged_at(arrived, text, wall_minus_monotonic) - idle_exit
    return {tag: (starts[tag], ends[tag]) for tag in starts if tag in ends and ends[tag] > starts[tag]}


@dataclass(frozen=True)
class ProcessInfo:
    """What the sampler saw of a process when it first met it."""

    parent: int
    started: int  # clock ticks after boot (/proc/<pid>/stat field 22)
    spawned_worker: bool  # a multiprocessing spawn child (`--workers`), not its resource tracker


def worker_tags(root: int, processes: Mapping[int, ProcessInfo]) -> dict[int, str]:
    """Each process of a consumer's tree by the tag its log lines carry: the root "" when it has
    no workers, else `worker-1`, `worker-2`, ... in the order the root started them (the order
    their names were given); every other process (the root of workers, its resource tracker) "*"."""
    workers = sorted(
        (info.started, pid) for pid, info in processes.items() if info.parent == root and info.spawned_worker
    )
    tags = {pid: "*" for pid in processes}
    tags[root] = "*" if workers else ""
    tags.update({pid: f"worker-{k}" for k, (_, pid) in enumerate(workers, start=1)})
    return tags


def own_cpu(timeline: CpuTimeline, tags: Mapping[int, str], windows: Mapping[str, Window]) -> tuple[float, Window]:
    """A consumer's CPU seconds over its work: each process over its own window (found by its
    tag), a process with none (the root of workers, which only waits for them) over the span of
    them all; and that span."""
    if not windows:
        raise ValueError("no working window: the consumer's 'consuming' and idle-exit lines were not both seen")
    span = (min(start for start, _ in windows.values()), max(end for _, end in windows.values()))
    total = sum(timeline.between(str(pid), windows.get(tag, span)) for pid, tag in tags.items())
    return total, span


class Sampler:
    """Samples a process tree's CPU, one figure a process, with the stack's node(s) and emulator,
    into a `CpuTimeline`; and its peak resident memory, each process at its own peak."""

    def __init__(self, root: int, stack: StackCpu | None = None) -> None:
        self.root = root
        self.stack = stack
        self.timeline = CpuTimeline()
        self.processes: dict[int, ProcessInfo] = {}
        self.peaks_kib: dict[int, int] = {}
        self._lock = threading.Lock()

    def sample(self, memory: bool = False) -> None:
        at = time.monotonic()
        values: dict[str, float] = {}
        for pid in descendants(self.root):
            cpu = process_cpu(pid)
            if cpu is None:
                continue
            values[str(pid)] = cpu
            with suppress(OSError):
                if pid not in self.processes:
                    self._meet(pid)
                if memory:
                    self._peak(pid)
        if self.stack is not None:
            values[NODE], values[EMULATOR] = self.stack.now()
            values[NODE_JIT] = self.stack.jit()
        self.timeline.add(at, values)

    def _meet(self, pid: int) -> None:
        fields = _stat(pid)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        with self._lock:
            self.processes[pid] = ProcessInfo(int(fields[1]), int(fields[19]), b"spawn_main" in cmdline)

    def _peak(self, pid: int) -> None:
        high_water = re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
        if high_water:
            with self._lock:
                self.peaks_kib[pid] = max(self.peaks_kib.get(pid, 0), int(high_water.group(1)))

    def tags(self) -> dict[int, str]:
        with self._lock:
            return worker_tags(self.root, self.processes)
