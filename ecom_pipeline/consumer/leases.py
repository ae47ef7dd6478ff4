"""Leases: keeping every pulled, unsettled message leased until it is settled.

A snapshot is taken under the lock and the RPC made outside it, so an ack, a nack or a pull
never waits behind a slow lease call; only a `release` of messages that an extension under way
holds waits for it (see `LeaseKeeper.release`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence

from ..pubsub_io import Subscription

__all__ = ["LeaseKeeper"]

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Keeps the leases of in-flight messages alive while they are processed or retried.

    `hold` sets new messages' lease to `deadline` seconds at once, unless a pull already leases
    them for exactly that long (`leased_for`, the subscription's own ack deadline: one call less
    per pull), and every `tick` seconds every held message is extended again, so a slow write or
    a Cassandra outage never lets a message be redelivered to another consumer, while a consumer
    that dies stops extending and its messages come back within `deadline` seconds.
    """

    def __init__(self, subscription: Subscription, deadline: int, tick: float, *, leased_for: int = 0) -> None:
        self._subscription = subscription
        self._deadline = deadline
        self._leased_for = leased_for
        self._tick = tick
        self._held: set[str] = set()
        self._extending: frozenset[str] = frozenset()  # what the extension under way holds
        self._changed = threading.Condition()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def hold(self, ack_ids: Sequence[str]) -> None:
        with self._changed:
            self._held.update(ack_ids)
        # Longer, too: then a consumer that dies lets its messages go after our deadline.
        if self._leased_for != self._deadline:
            self._subscription.modify_deadline(ack_ids, self._deadline)

    def release(self, ack_ids: Iterable[str]) -> None:
        """Stop keeping these leases. Returns once no extension of any of them is under way, so a
        message nacked or deferred right after it is never re-extended from a stale snapshot."""
        released = set(ack_ids)
        with self._changed:
            self._held.difference_update(released)
            self._changed.wait_for(lambda: self._extending.isdisjoint(released))

    def held(self) -> set[str]:
        with self._changed:
            return set(self._held)

    def count(self) -> int:
        """How many messages are held (no copy: it is read at every round of every worker)."""
        with self._changed:
            return len(self._held)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def extend_all(self) -> None:
        """One round of the keeper: extend every held message to `deadline` seconds from now."""
        with self._changed:
            snapshot = self._extending = frozenset(self._held)
        try:
            if snapshot:
                log.debug("extending the lease of %d in-flight messages", len(snapshot))
                self._subscription.modify_deadline(list(snapshot), self._deadline)
        finally:
            with self._changed:
                self._extending = frozenset()
                self._changed.notify_all()

    def _run(self) -> None:
        while not self._stopped.wait(self._tick):
            try:
                self.extend_all()
            except Exception:  # one failed round must not end the keeping: the next one may work
                log.exception("extending the leases failed; trying again in %.0f s", self._tick)
