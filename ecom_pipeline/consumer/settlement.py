"""Settlement: one batch's outcomes turned into dead-letter publishes, acks, nacks and deferrals.

Synchronous and thread-free: the loop calls it from each batch worker, and its unit tests call it
directly. Dead letters go out first, and nothing is acked before they are out: a message is
acked only after its row write, or its dead-letter publish, has succeeded. Each step releases the
leases first: once `release` returns, the lease keeper will not extend these messages again, so
its extension cannot undo a nack or a deferral.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from ..errors import FatalError
from ..handlers import ATTEMPTS_EXHAUSTED
from ..policy import Applied, DeadLetter, Defer, Fail, Retry
from ..pubsub_io import PartlyPublished, PubSubUnavailable, Received, Subscription
from .deferrals import Deferrals
from .leases import LeaseKeeper
from .telemetry import Telemetry

__all__ = [
    "DeadLetterFor",
    "DeadLetters",
    "Settlement",
    "Settler",
    "Unsettled",
    "last_chance",
    "sort_outcomes",
]

log = logging.getLogger(__name__)


class DeadLetters(Protocol):
    """Where dead letters go (`pubsub_io.SyncPublisher`): per message None, or why Pub/Sub
    refused it for good; raises `PubSubUnavailable` or `FatalError` for the whole call."""

    def publish(self, messages: Sequence[tuple[bytes, Mapping[str, str]]]) -> list[str | None]: ...


# Builds a dead letter (data, attributes) from the message, its reason and the source subscription.
DeadLetterFor = Callable[[Received, DeadLetter, str], tuple[bytes, dict[str, str]]]


def last_chance(max_delivery_attempts: int | None) -> int | None:
    """The delivery attempt from which a message is dead-lettered here rather than handed back
    (None: the subscription has no dead-letter policy, nothing to get ahead of).

    Pub/Sub's count is best effort, so a tenth of the limit (at least one attempt) is kept in
    hand: with the 100 attempts `make setup` sets, attempts 90 to 100.
    """
    if not max_delivery_attempts:
        return None
    return max(1, max_delivery_attempts - max(1, max_delivery_attempts // 10))


@dataclass
class Settlement:
    """What the outcomes of one batch ask for, message by message (see `sort_outcomes`)."""

    applied: list[Received] = field(default_factory=list)
    dead: list[tuple[Received, DeadLetter]] = field(default_factory=list)
    retry: list[Received] = field(default_factory=list)
    failed: list[tuple[Received, str]] = field(default_factory=list)
    deferred: dict[int, list[Received]] = field(default_factory=dict)
    last_error: str = ""  # the first transient failure's reason


def sort_outcomes(batch: Sequence[Received], outcomes: Sequence[object]) -> Settlement:
    """Pair each message with its outcome; `ValueError` if the handler did not give one each."""
    if len(outcomes) != len(batch):
        raise ValueError(f"the handler returned {len(outcomes)} outcomes for {len(batch)} messages")
    settlement = Settlement()
    for message, outcome in zip(batch, outcomes, strict=True):
        if isinstance(outcome, Applied):
            settlement.applied.append(message)
        elif isinstance(outcome, DeadLetter):
            settlement.dead.append((message, outcome))
        elif isinstance(outcome, Retry):
            settlement.retry.append(message)
            settlement.last_error = settlement.last_error or outcome.reason
        elif isinstance(outcome, Fail):
            settlement.failed.append((message, outcome.reason))
        elif isinstance(outcome, Defer):
            settlement.deferred.setdefault(outcome.seconds, []).append(message)
        else:
            raise ValueError(f"unknown outcome {outcome!r}")
    return settlement


@dataclass
class Unsettled:
    """What a settle left: the messages to retry in place, how many were deferred, and why."""

    retry: list[Received]
    deferred: int
    last_error: str


class Settler:
    """Carries out a batch's settlement against Pub/Sub; tells `telemetry` what became of it."""

    def __init__(
        self,
        subscription: Subscription,
        dead_letters: DeadLetters,
        dead_letter_for: DeadLetterFor,
        leases: LeaseKeeper,
        deferrals: Deferrals,
        telemetry: Telemetry,
        *,
        max_delivery_attempts: int | None = None,
        defer_refused: int | None = None,
    ) -> None:
        """`max_delivery_attempts`: the subscription's dead-letter policy (None: it has none).
        `defer_refused`: seconds to defer a message whose dead letter Pub/Sub refuses for good,
        instead of nacking it; for a subscription with no dead-letter policy to cap redeliveries."""
        self._subscription = subscription
        self._dead_letters = dead_letters
        self._dead_letter_for = dead_letter_for
        self._leases = leases
        self._deferrals = deferrals
        self._telemetry = telemetry
        self._max_attempts = max_delivery_attempts
        self._last_chance = last_chance(max_delivery_attempts)
        self._defer_refused = defer_refused

    def settle(self, settlement: Settlement) -> Unsettled:
        """Publish the dead letters, then ack, defer and nack; the rest is for the caller to retry."""
        published, refused, unpublished = self._publish_dead_letters(settlement.dead)
        self._ack(settlement.applied, published)
        for seconds, messages in settlement.deferred.items():
            self.defer(messages, seconds)
        for message, reason in settlement.failed:
            log.error("message %s failed: %s", message.message_id, reason)
        deferred = sum(len(m) for m in settlement.deferred.values())
        if self._defer_refused is not None and refused:
            self.defer([message for message, _ in refused], self._defer_refused)
            deferred, refused = deferred + len(refused), []
        self.nack(settlement.failed)
        self.nack(refused, dead_letter_last_chance=False)  # Pub/Sub would refuse another one too
        # Readiness: a transient store failure means Cassandra is not.
        self._telemetry.reachable(cassandra=not settlement.retry, pubsub=not unpublished if settlement.dead else None)
        last_error = settlement.last_error or ("dead-letter publish failed" if unpublished else "")
        return Unsettled(settlement.retry + unpublished, deferred, last_error)

    def fail(self, batch: Sequence[Received], why: str) -> None:
        """A failure of the whole batch (a bug): nacked, or dead-lettered at the last chance."""
        self.nack([(message, why) for message in batch])

    def give_up(self, messages: Sequence[Received], why: str) -> None:
        """What could not be settled before a stop: handed back, but for the messages at their
        last chance, which are dead-lettered here (a hand-back would let the policy move them)."""
        try:
            rest = self._dead_letter_last_chances([(message, why) for message in messages])
        except FatalError as exc:
            log.error("could not dead-letter the messages at their last attempts: %s", exc)
            rest = list(messages)
        if rest:
            self.hand_back(rest)

    def defer(self, messages: list[Received], seconds: int) -> None:
        ack_ids = [m.ack_id for m in messages]
        self._leases.release(ack_ids)
        self._subscription.modify_deadline(ack_ids, seconds)
        self._deferrals.add(messages, seconds)
        self._telemetry.counted("deferred", len(ack_ids))

    def nack(self, failed: Sequence[tuple[Received, str]], *, dead_letter_last_chance: bool = True) -> None:
        """A failure of these messages: redelivered by Pub/Sub, which counts the attempts; those
        at their last chance are dead-lettered here instead, with the failure as their reason."""
        if not failed:
            return
        rest = self._dead_letter_last_chances(failed) if dead_letter_last_chance else [m for m, _ in failed]
        if rest:
            self.hand_back(rest)
            self._telemetry.counted("nacked", len(rest))

    def hand_back(self, messages: Sequence[Received]) -> None:
        """Give messages back to Pub/Sub for immediate redelivery (not counted as a failure)."""
        self.hand_back_ids([m.ack_id for m in messages])

    def hand_back_ids(self, ack_ids: Collection[str]) -> None:
        self._leases.release(ack_ids)
        self._subscription.nack(list(ack_ids))

    def _publish_dead_letters(
        self, dead: list[tuple[Received, DeadLetter]]
    ) -> tuple[list[tuple[Received, DeadLetter]], list[tuple[Received, str]], list[Received]]:
        """Publish the dead letters: (published, refused for good with why, to retry)."""
        if not dead:
            return [], [], []
        letters = [self._dead_letter_for(message, reason, self._subscription.name) for message, reason in dead]
        try:
            refusals = self._dead_letters.publish(letters)
        except PartlyPublished as exc:  # the rest is retried; what went out is not sent again
            log.warning("dead-letter publish failed part-way, will retry %d: %s", len(dead) - len(exc.published), exc)
            refusals = [None if p in exc.published else exc.refusals.get(p, "") for p in range(len(dead))]
        except PubSubUnavailable as exc:
            log.warning("dead-letter publish of %d messages failed, will retry: %s", len(dead), exc)
            return [], [], [message for message, _ in dead]
        published: list[tuple[Received, DeadLetter]] = []
        refused: list[tuple[Received, str]] = []
        unpublished: list[Received] = []
        for (message, reason), refusal in zip(dead, refusals, strict=True):
            if refusal is None:
                published.append((message, reason))
            elif not refusal:
                unpublished.append(message)
            else:
                # Pub/Sub will never take this dead letter (e.g. too many attributes): nack it,
                # and the subscription's dead-letter policy moves it as it is.
                log.error("dead letter for %s refused, nacking: %s", message.message_id, refusal)
                refused.append((message, refusal))
        return published, refused, unpublished

    def _dead_letter_last_chances(self, failed: Sequence[tuple[Received, str]]) -> list[Received]:
        """Dead-letter (and ack) the messages at their last chance, each with its failure as the
        reason; the others, and any whose dead letter did not go out, are returned."""
        limit = self._last_chance
        dead = [
            (m, DeadLetter(ATTEMPTS_EXHAUSTED, f"delivery attempt {m.delivery_attempt} of {self._max_attempts}: {why}"))
            for m, why in failed
            if limit is not None and m.delivery_attempt >= limit
        ]
        published, _, _ = self._publish_dead_letters(dead)
        self._ack([], published)
        settled = {message.ack_id for message, _ in published}
        return [message for message, _ in failed if message.ack_id not in settled]

    def _ack(self, applied: list[Received], dead_lettered: list[tuple[Received, DeadLetter]]) -> None:
        ack_ids = [m.ack_id for m in applied] + [m.ack_id for m, _ in dead_lettered]
        if not ack_ids:
            return
        self._leases.release(ack_ids)
        self._subscription.ack(ack_ids)
        self._telemetry.counted("applied", len(applied))
        self._telemetry.dead_lettered([reason.code for _, reason in dead_lettered])
        if applied:
            now = datetime.now(UTC)
            self._telemetry.applied([(now - m.publish_time).total_seconds() for m in applied])
