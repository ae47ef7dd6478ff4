"""Deferrals: which messages are held deferred (invisible for a while), until when, since when."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import datetime

from ..pubsub_io import Received

__all__ = ["Deferrals"]


class Deferrals:
    """Ack id -> (monotonic time the deferral ends, when the message was published). Deferrals
    that have ended are forgotten as they are noticed, so this is bounded by the backlog."""

    def __init__(self) -> None:
        self._until: dict[str, tuple[float, datetime]] = {}
        self._lock = threading.Lock()

    def add(self, messages: Sequence[Received], seconds: int) -> None:
        until = time.monotonic() + seconds
        with self._lock:
            self._forget_ended()
            self._until.update((m.ack_id, (until, m.publish_time)) for m in messages)

    def still_deferred(self) -> list[str]:
        """The ack ids whose deferral has not ended yet."""
        with self._lock:
            self._forget_ended()
            return list(self._until)

    def state(self) -> tuple[int, datetime | None]:
        """How many messages are deferred now, and the publish time of the oldest of them."""
        with self._lock:
            self._forget_ended()
            return len(self._until), min((published for _, published in self._until.values()), default=None)

    def _forget_ended(self) -> None:
        now = time.monotonic()
        self._until = {ack_id: entry for ack_id, entry in self._until.items() if entry[0] > now}
