"""Flow control: pulling ahead into a bounded buffer, so the next batch is here when a worker is free."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from ..pubsub_io import RPC_TIMEOUT, PubSubUnavailable, Received, Subscription
from .leases import LeaseKeeper

__all__ = ["Prefetcher"]

log = logging.getLogger(__name__)


class Prefetcher:
    """Pulls on its own threads, so the next messages are here when the previous ones are written.

    At most `max_buffered` pulled messages wait in memory; a thread pulls again only when there
    is room, and `pullers` threads pull at once (each pull is a round trip, and may bring fewer
    messages than asked). They are leased from the moment they arrive. A pull that fails transiently
    is retried after `retry_delay(attempt)` seconds; any other error is raised by `take`.
    """

    def __init__(
        self,
        subscription: Subscription,
        leases: LeaseKeeper,
        *,
        pull_size: int,
        max_buffered: int,
        pull_timeout: float,
        retry_delay: Callable[[int], float],
        on_pull: Callable[[bool], None] = lambda ok: None,
        pullers: int = 1,
    ) -> None:
        self._subscription = subscription
        self._leases = leases
        self._pull_size = pull_size
        self._max_buffered = max_buffered
        self._pull_timeout = pull_timeout
        self._retry_delay = retry_delay
        self._on_pull = on_pull  # told whether each pull reached Pub/Sub (readiness)
        self._buffer: deque[Received] = deque()
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._stopped = threading.Event()
        self._reserved = 0  # room promised to pulls under way, so the buffer stays bounded
        self._threads = [
            threading.Thread(target=self._run, name=f"prefetcher-{k}", daemon=True) for k in range(pullers)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def buffered(self) -> int:
        with self._changed:
            return len(self._buffer)

    def take(self, max_messages: int, timeout: float) -> list[Received]:
        """Up to `max_messages` pulled messages; an empty list when none came within `timeout`."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._buffer or self._error or (self._stopped.is_set() and not self._reserved), timeout
            )
            if self._error is not None:
                raise self._error
            batch = [self._buffer.popleft() for _ in range(min(max_messages, len(self._buffer)))]
            self._changed.notify_all()
            return batch

    def close(self) -> None:
        """Pull no more; what is buffered, and what the pulls under way bring, can still be taken."""
        self._stopped.set()
        with self._changed:
            self._changed.notify_all()

    def drained(self) -> bool:
        """Closed, with nothing buffered and no pull under way: `take` will bring nothing more."""
        with self._changed:
            return self._stopped.is_set() and not self._buffer and not self._reserved

    def stop(self) -> list[Received]:
        """Stop pulling; return what was pulled and not taken, for the caller to hand back."""
        self.close()
        deadline = time.monotonic() + self._pull_timeout + RPC_TIMEOUT
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._changed:
            left, self._buffer = list(self._buffer), deque()
        return left

    def _run(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            with self._changed:
                self._changed.wait_for(lambda: self._room() > 0 or self._stopped.is_set())
                if self._stopped.is_set():
                    return
                size = min(self._room(), self._pull_size)
                self._reserved += size
            batch: list[Received] = []
            try:
                batch = self._subscription.pull(size, self._pull_timeout)
                failures = 0
                self._on_pull(True)
                if batch:
                    self._leases.hold([m.ack_id for m in batch])
            except PubSubUnavailable as exc:
                self._on_pull(False)
                delay = self._retry_delay(failures)
                failures += 1
                log.warning("%s; retrying in %.1f s", exc, delay)
                self._stopped.wait(delay)
            except BaseException as exc:  # e.g. the subscription is gone: `take` raises it
                with self._changed:
                    self._error = exc
                    self._changed.notify_all()
                return
            finally:
                with self._changed:
                    self._reserved -= size
                    self._buffer.extend(batch)
                    self._changed.notify_all()

    def _room(self) -> int:
        """Messages that may still be pulled (the caller holds `_changed`)."""
        return self._max_buffered - len(self._buffer) - self._reserved
