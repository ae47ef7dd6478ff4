"""The consumer: one subscription through one handler, at least once, with idempotent effect.

Delivery contract:
- a message is acked only after its row write, or its dead-letter publish, has succeeded;
- a service that is down (Cassandra, Pub/Sub) is waited for with exponential backoff, leases
  kept alive, for as long as it takes; nothing is dead-lettered or acked meanwhile;
- a stop (SIGTERM, Ctrl-C, idle exit) pulls no more and settles what is already held within
  `stop_grace` seconds (retrying through an outage meanwhile); only what it could not settle
  is handed back;
- Pub/Sub counts every hand-back (and every lease that runs out) as a delivery attempt, and the
  subscription's dead-letter policy moves a message after `max_delivery_attempts` of them, raw,
  with no reason. The policy is only a backstop: a message this consumer would hand back or nack
  at its last attempts (`last_chance`) is dead-lettered here instead, with its reason
  (`delivery_attempts_exhausted` and the last error seen);
- what can never work for any message (a missing topic, refused credentials) raises
  `FatalError`: every held message is handed back and the consumer stops;
- memory is bounded: at most `batches_in_flight` batches of `batch_size` messages are written
  at once, and at most twice `batch_size` more are pulled ahead by the prefetcher.

Its rooms, shaped like the subscriber internals of Google's own client: `loop` (threads, stop,
idle exit), `settlement` (outcomes to publishes, acks, nacks, deferrals), `leases`, `flow` (the
prefetch buffer), `deferrals`, `telemetry` (one observer for stats, metrics and probes), `stats`.
"""

from __future__ import annotations

from .flow import Prefetcher
from .leases import LeaseKeeper
from .loop import PULL_TIMEOUT, Consumer
from .settlement import DeadLetterFor, DeadLetters, Settlement, last_chance, sort_outcomes
from .stats import ConsumerStats

__all__ = [
    "PULL_TIMEOUT",
    "Consumer",
    "ConsumerStats",
    "DeadLetterFor",
    "DeadLetters",
    "LeaseKeeper",
    "Prefetcher",
    "Settlement",
    "last_chance",
    "sort_outcomes",
]
