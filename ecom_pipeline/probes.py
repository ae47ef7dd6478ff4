"""The probes' state: is the consumer alive (its loop makes rounds), is it ready (its services answer)?

`Health` is one process's; `WorkerProbes` is the `--workers` parent's, from every worker's
slot in shared memory. `http_server.serve` answers `/healthz` and `/readyz` from either.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Health", "Probes", "WorkerProbes"]


@dataclass
class Health:
    """What the probes answer: the loop's last round (monotonic time) and the services' state."""

    liveness_window: float
    cassandra_up: Callable[[], bool] = lambda: True  # asked at each probe: is a node connected?
    processes_up: Callable[[], bool] = lambda: True  # asked at each probe: are the workers alive?
    last_round: float = field(default_factory=time.monotonic)
    pubsub_ready: bool = False
    cassandra_ready: bool = False
    # Told (last round, ready) at each round: a `--workers` worker's slot in `WorkerProbes`.
    publish: Callable[[float, bool], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def round(self, at: float | None = None) -> None:
        """A round of the loop, now or at the monotonic time `at` (the oldest of its workers)."""
        with self._lock:
            self.last_round = last = time.monotonic() if at is None else at
        if self.publish is not None:
            self.publish(last, self.ready())

    def alive(self) -> bool:
        with self._lock:
            recent = time.monotonic() - self.last_round <= self.liveness_window
        return recent and self.processes_up()

    def ready(self) -> bool:
        with self._lock:
            answered = self.pubsub_ready and self.cassandra_ready
        return answered and self.cassandra_up()

    def set_ready(self, *, pubsub: bool | None = None, cassandra: bool | None = None) -> None:
        with self._lock:
            if pubsub is not None:
                self.pubsub_ready = pubsub
            if cassandra is not None:
                self.cassandra_ready = cassandra


class Probes(Protocol):
    """What the probes ask: `Health` for one process, `WorkerProbes` for `--workers`."""

    def alive(self) -> bool: ...

    def ready(self) -> bool: ...


class WorkerProbes:
    """The parent's probes with `--workers`: each worker's last round and readiness in shared
    memory (monotonic time is machine-wide on Linux). Alive while every worker process lives and
    each has made a round within its liveness window; ready while every worker is ready."""

    def __init__(self, slots: Any, liveness_window: float, processes_up: Callable[[], bool]) -> None:
        """`slots`: a shared array of 2 doubles per worker (`multiprocessing` `Array("d", 2 * n)`)."""
        self._slots = slots
        self._window = liveness_window
        self._processes_up = processes_up
        now = time.monotonic()
        with slots.get_lock():
            for index in range(len(slots) // 2):
                slots[2 * index], slots[2 * index + 1] = now, 0.0  # a worker is not ready until it says so

    @staticmethod
    def writer(slots: Any, index: int) -> Callable[[float, bool], None]:
        """What worker `index` gives its `Health.publish`."""

        def write(last_round: float, ready: bool) -> None:
            with slots.get_lock():
                slots[2 * index], slots[2 * index + 1] = last_round, 1.0 if ready else 0.0

        return write

    def alive(self) -> bool:
        now = time.monotonic()
        with self._slots.get_lock():
            rounds = list(self._slots[0::2])
        return all(now - last <= self._window for last in rounds) and self._processes_up()

    def ready(self) -> bool:
        with self._slots.get_lock():
            flags = list(self._slots[1::2])
        return all(flag == 1.0 for flag in flags) and self._processes_up()
