"""Pure decisions: what became of each message, how long to back off, what a dead letter carries.

Handlers return one `Outcome` per message; the consumer loop acts on them (ack, publish a dead
letter then ack, retry, nack or defer). Nothing here does I/O, so every rule is unit-tested.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

__all__ = [
    "replay_deferral", "replay_attributes", "Applied", "DeadLetter", "Retry", "Fail", "Defer", "Outcome",
    "Backoff", "dead_letter_attributes", "event_time_micros", "MAX_ATTRIBUTE_BYTES",
]

MAX_ATTRIBUTE_BYTES = 1024  # Pub/Sub's limit on one attribute value


@dataclass(frozen=True)
class Applied:
    """The row write succeeded: ack."""


@dataclass(frozen=True)
class DeadLetter:
    """The message can never be applied here: publish it to the dead-letter topic, then ack."""

    code: str
    detail: str


@dataclass(frozen=True)
class Retry:
    """A transient failure (Cassandra down, timing out): keep the lease, back off, try again."""

    reason: str


@dataclass(frozen=True)
class Fail:
    """An unexpected failure: nack, so Pub/Sub redelivers it and its dead-letter policy caps it."""

    reason: str


@dataclass(frozen=True)
class Defer:
    """Not now: leave the message unacked and invisible for `seconds` (used by the DLQ replay)."""

    seconds: int


Outcome = Applied | DeadLetter | Retry | Fail | Defer
APPLIED = Applied()


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: attempt 0 waits about `initial`, capped at `maximum`."""

    initial: float = 0.2
    maximum: float = 10.0
    multiplier: float = 2.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        ceiling = min(self.maximum, self.initial * self.multiplier ** min(attempt, 64))
        # "Equal jitter": never less than half the ceiling, so retries stay spaced out, and
        # spread over the other half so that many consumers do not retry in lockstep.
        return ceiling / 2 + rand() * ceiling / 2


def _truncate_utf8(text: str, limit: int = MAX_ATTRIBUTE_BYTES) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode("utf-8", errors="ignore") + "..."


def dead_letter_attributes(
    original: Mapping[str, str],
    *,
    code: str,
    detail: str,
    subscription: str,
    message_id: str,
    publish_time: datetime,
    failed_at: datetime,
) -> dict[str, str]:
    """The attributes of a dead letter: the original ones, plus why, where from and when.

    `source_publish_time` keeps the original event time across the dead-letter hop, so that a
    replayed payment is written with the time it was first published. When the message was
    already a dead letter (a replay), its first source is kept.
    """
    attributes = dict(original)
    attributes.update(
        error=code,
        error_detail=_truncate_utf8(detail),
        failed_at=failed_at.astimezone(timezone.utc).isoformat(timespec="milliseconds"),
    )
    # A message moved here by a subscription's dead-letter policy names its source already.
    attributes.setdefault(
        "source_subscription", original.get("CloudPubSubDeadLetterSourceSubscription", subscription)
    )
    attributes.setdefault("source_message_id", message_id)
    attributes.setdefault("source_publish_time", _first_publish_time(original, publish_time))
    return attributes


def _first_publish_time(original: Mapping[str, str], publish_time: datetime) -> str:
    """When the message was first published: Pub/Sub's dead-letter policy records it for us."""
    from_policy = original.get("CloudPubSubDeadLetterSourceTopicPublishTime", "")
    try:
        when = datetime.fromisoformat(from_policy)
    except ValueError:
        when = publish_time
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="microseconds")


def event_time_micros(publish_time: datetime, attributes: Mapping[str, str]) -> int:
    """The write timestamp (µs since the epoch) for a message: when it was first published.

    Writes use it as `USING TIMESTAMP`, so a late redelivery of an older version of an order
    never overwrites a newer one, and a replayed dead letter keeps its original time.
    """
    original = attributes.get("source_publish_time") or attributes.get(
        "CloudPubSubDeadLetterSourceTopicPublishTime"
    )
    when = publish_time
    if original:
        try:
            when = datetime.fromisoformat(original)
        except ValueError:
            pass  # a mangled attribute must not block the write; the current publish time will do
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    delta = when - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def replay_deferral(attributes: Mapping[str, str], now: datetime, retry_interval: float) -> Defer | None:
    """For the DLQ replay: a `Defer` if this dead letter was already retried within the interval.

    A payment whose order is still missing is republished with `replayed_at`; when it comes
    back before `retry_interval` has passed, its lease is set to the rest of the interval so it
    stays in the dead-letter topic, invisible, until the next try (a lease is at most 600 s).
    """
    replayed_at = attributes.get("replayed_at")
    if not replayed_at:
        return None
    try:
        elapsed = (now - datetime.fromisoformat(replayed_at)).total_seconds()
    except (ValueError, TypeError):
        return None
    remaining = retry_interval - elapsed
    if remaining <= 0:
        return None
    return Defer(seconds=max(1, min(600, int(remaining + 0.999))))


def replay_attributes(dead_letter: dict[str, str], *, replayed_at: datetime) -> dict[str, str]:
    """A dead letter republished by the replay: one more `replay_attempts`, and when."""
    attributes = dict(dead_letter)
    try:
        previous = max(0, int(attributes.get("replay_attempts", "0")))
    except ValueError:
        previous = 0  # anyone can publish to a DLQ: a mangled count must not stop the replay
    attributes["replay_attempts"] = str(previous + 1)
    attributes["replayed_at"] = replayed_at.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return attributes
