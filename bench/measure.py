"""What a bench run costs, read from /proc: processes' CPU seconds and the stack's own share."""

from __future__ import annotations

import os
import resource
from contextlib import suppress
from pathlib import Path

from stack.emulator import PUBSUB
from stack.node import cassandra_node

__all__ = ["StackCpu", "children_cpu", "cpu_seconds", "descendants"]


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


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes and all their descendants so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in {d for p in pids for d in descendants(p)}:
        with suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


class StackCpu:
    """CPU seconds used by the stack's Cassandra node(s) and by the emulator, between two calls
    of `take`: the processes this project started (their pid files), never looked up by name."""

    def __init__(self) -> None:
        nodes = int(os.environ.get("CASSANDRA_NODES", "1"))
        self.nodes = [pid for k in range(1, nodes + 1) if (pid := cassandra_node(k, nodes).pid()) is not None]
        self.emulator = [pid for pid in [PUBSUB.pid()] if pid is not None]
        self._last = self._now()

    def _now(self) -> tuple[float, float]:
        return cpu_seconds(self.nodes), cpu_seconds(self.emulator)

    def take(self) -> tuple[float, float]:
        """(node CPU seconds, emulator CPU seconds) since the last call (or since built)."""
        previous, self._last = self._last, self._now()
        return self._last[0] - previous[0], self._last[1] - previous[1]


def children_cpu() -> float:
    """User + system CPU seconds of this process's children that have ended (and been waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
