"""Pure decisions: what became of each message, how long to back off, what a dead letter carries.

Handlers return one `Outcome` per message; the consumer loop acts on them (ack, publish a dead
letter then ack, retry, nack or defer). Nothing here does I/O, so every rule is unit-tested.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .redaction import mask_attributes, mask_message

__all__ = [
    "DEAD_LETTER_RETENTION",
    "MAX_ATTRIBUTES",
    "MAX_ATTRIBUTE_BYTES",
    "MAX_MESSAGE_BYTES",
    "REDACTED",
    "RENEW_AFTER",
    "TRUNCATED",
    "Applied",
    "Backoff",
    "DeadLetter",
    "Defer",
    "Fail",
    "Outcome",
    "Retry",
    "as_utc",
    "claimed_first_publish_time",
    "dead_letter_attributes",
    "original_attributes",
    "redact_dead_letter",
    "replay_delay",
]

MAX_ATTRIBUTE_BYTES = 1024  # Pub/Sub's limit on one attribute value
MAX_ATTRIBUTES = 100  # Pub/Sub's limit on a message's attributes
REDACTED = "redacted"  # set to "card_number" on a dead letter whose card numbers were masked
TRUNCATED = "truncated"  # on a dead letter whose data was cut to fit: how many bytes it had
MAX_MESSAGE_BYTES = 10_000_000  # Pub/Sub's limit on a message: its data plus its attributes
# What a Publish request adds to its one message: field tags and lengths (a few bytes for the
# data and for each of at most 100 attributes) and the topic's path (at most about 330 bytes).
PUBLISH_FRAMING_BYTES = 16_384
REPLAY_FIRST_DELAY, REPLAY_GROWTH, REPLAY_MAX_DELAY = 5, 0.4, 600  # see replay_delay
# A subscription keeps an unacked message 7 days at most (the longest Pub/Sub allows, set on the
# dead-letter subscriptions by `make setup`); the replay republishes a dead letter waiting
# longer than RENEW_AFTER, so it never expires unseen (see docs/replay.md).
DEAD_LETTER_RETENTION = timedelta(days=7)
RENEW_AFTER = DEAD_LETTER_RETENTION - timedelta(days=1)
SOURCE_PUBLISH_TIME = "source_publish_time"  # recorded by this project when it dead-letters
POLICY_PUBLISH_TIME = "CloudPubSubDeadLetterSourceTopicPublishTime"  # set by Pub/Sub's policy
POLICY_SOURCE_SUBSCRIPTION = "CloudPubSubDeadLetterSourceSubscription"
POLICY_ATTRIBUTE_PREFIX = "CloudPubSubDeadLetter"
DROPPED_ATTRIBUTES = "dropped_attributes"  # how many original attributes a dead letter had no room for


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
    from_dead_letters: bool = False,
) -> dict[str, str]:
    """The attributes of a dead letter: every original one, plus why, where from and when.

    `source_*` name where and when the message was first published, so that a replayed payment
    is written with its first publish time. On an input topic they are whatever the publisher
    claimed, so they are set from this message; a message read from a dead-letter subscription
    (`from_dead_letters`) keeps the first source recorded there.
    """
    attributes = dict(original)
    if not from_dead_letters:  # only Pub/Sub's policy sets these, and only on a dead-letter topic
        attributes = {n: v for n, v in attributes.items() if not n.startswith(POLICY_ATTRIBUTE_PREFIX)}
    attributes.update(
        error=code,
        error_detail=_truncate_utf8(detail),
        failed_at=failed_at.astimezone(UTC).isoformat(timespec="milliseconds"),
    )
    if not from_dead_letters:
        attributes.update(
            source_subscription=subscription,
            source_message_id=message_id,
            source_publish_time=as_utc(publish_time).isoformat(timespec="microseconds"),
        )
        return _within_limit(attributes)
    # A message moved here by a subscription's dead-letter policy names its source already.
    attributes.setdefault("source_subscription", original.get(POLICY_SOURCE_SUBSCRIPTION, subscription))
    attributes.setdefault("source_message_id", message_id)
    published = as_utc(publish_time)
    first_published = min(claimed_first_publish_time(original) or published, published)
    attributes[SOURCE_PUBLISH_TIME] = first_published.isoformat(timespec="microseconds")
    return _within_limit(attributes)


def _is_count(value: str) -> bool:
    """A count this project wrote: a few ASCII digits (never enough to hold a card number)."""
    return value.isascii() and value.isdigit() and len(value) <= 9


def _within_limit(attributes: dict[str, str], spare: int = 1) -> dict[str, str]:
    """At most MAX_ATTRIBUTES - `spare` attributes (room for what `redact_dead_letter` adds:
    `redacted`, and `truncated` when the data is cut): if there are more, the original ones
    whose names sort last are dropped, and `dropped_attributes` says how many (with those an
    earlier dead-lettering dropped). Pub/Sub refuses a message with more than MAX_ATTRIBUTES,
    and the source may already carry the maximum."""
    if len(attributes) <= MAX_ATTRIBUTES - spare:
        return attributes
    kept_always = (*DEAD_LETTER_ATTRIBUTES, POLICY_PUBLISH_TIME, POLICY_SOURCE_SUBSCRIPTION)
    ours = {n for n in attributes if n in kept_always} | {DROPPED_ATTRIBUTES}
    theirs = sorted(n for n in attributes if n not in ours)
    room = MAX_ATTRIBUTES - spare - len(ours)
    kept = set(theirs[:room]) | ours
    earlier = attributes.get(DROPPED_ATTRIBUTES, "")
    trimmed = {n: v for n, v in attributes.items() if n in kept}
    trimmed[DROPPED_ATTRIBUTES] = str(len(theirs) - room + (int(earlier) if _is_count(earlier) else 0))
    return trimmed


DEAD_LETTER_ATTRIBUTES = (
    "error",
    "error_detail",
    "failed_at",
    "source_subscription",
    "source_message_id",
    SOURCE_PUBLISH_TIME,
    REDACTED,
    DROPPED_ATTRIBUTES,
    TRUNCATED,
)
# Attributes the dead-lettering writes from what it knows (never from the message's content),
# and those Pub/Sub's dead-letter policy writes: never masked, so that a dead letter can always
# be traced to its source (a message id is a 16-17 digit number, often Luhn-valid).
UNMASKED_ATTRIBUTES = frozenset(
    {
        "error",
        "failed_at",
        "source_subscription",
        "source_message_id",
        SOURCE_PUBLISH_TIME,
        POLICY_PUBLISH_TIME,
        POLICY_SOURCE_SUBSCRIPTION,
        "CloudPubSubDeadLetterSourceSubscriptionProject",
        "CloudPubSubDeadLetterSourceDeliveryCount",
    }
)
# ... and those it writes as a count or a marker, never masked while they hold one.
UNMASKED_WHEN_COUNTS = frozenset({DROPPED_ATTRIBUTES, TRUNCATED})


def original_attributes(dead_letter: Mapping[str, str]) -> dict[str, str]:
    """A dead letter's attributes without those the dead-lettering added (this project's and
    Pub/Sub's `CloudPubSubDeadLetter*`): what to publish again when requeueing it by hand."""
    return {
        name: value
        for name, value in dead_letter.items()
        if name not in DEAD_LETTER_ATTRIBUTES and not name.startswith(POLICY_ATTRIBUTE_PREFIX)
    }


def as_utc(moment: datetime) -> datetime:
    """The same moment in UTC; a naive one is taken as UTC."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def claimed_first_publish_time(attributes: Mapping[str, str]) -> datetime | None:
    """The first publish time a dead letter carries: Pub/Sub's own dead-letter attribute first
    (its policy sets it when it moves a message), else the one this project recorded; None if
    neither parses."""
    for name in (POLICY_PUBLISH_TIME, SOURCE_PUBLISH_TIME):
        try:
            return as_utc(datetime.fromisoformat(attributes.get(name, "")))
        except (ValueError, OverflowError):  # OverflowError: valid ISO-8601, but no year in UTC
            continue  # a mangled attribute must not block the write
    return None


def replay_delay(age: float) -> int:
    """Seconds until a dead letter that cannot be applied yet is tried again, given its age
    (seconds since it was first published): 40 % of its age, at least 5 s, at most 600 s (the
    longest lease Pub/Sub grants).

    Tried again when its age has grown by 40 %, a payment up to 30 s ahead of its order is
    retried within about 15 s of the order arriving, while one whose order never comes is
    tried every 10 minutes once it is 25 minutes old. The schedule needs no state: it survives
    restarts and any number of replay processes.
    """
    return max(REPLAY_FIRST_DELAY, min(REPLAY_MAX_DELAY, math.ceil(REPLAY_GROWTH * max(0.0, age))))


def redact_dead_letter(data: bytes, attributes: Mapping[str, str], *, applicable: bool) -> tuple[bytes, dict[str, str]]:
    """A dead letter's data and attributes (as `dead_letter_attributes` built them) with every
    card number masked in both (the one change to "bytes unchanged"), then marked
    `redacted=card_number`; its data cut if it would not fit in a message (`_within_size`).

    `applicable`: the message was dead-lettered for what happened to it (its order not found
    yet, a write refused, its attempts used up), not for what it is (invalid): the replay
    applies such a payment later and an operator requeues such an order, so, if it is valid,
    its top-level ids and date are kept (`redaction.mask_message`). Nothing is kept otherwise.
    The attributes this project or Pub/Sub's dead-letter policy writes (`UNMASKED_ATTRIBUTES`,
    the counts in `UNMASKED_WHEN_COUNTS`, `redacted=card_number`) are never masked; all others
    are, names and values: the original message's own and `error_detail`, which may quote it.
    """
    masked_data, data_masked = mask_message(data, applicable=applicable)
    unmasked = {name for name, value in attributes.items() if _ours(name, value)}
    masked_attributes, attributes_masked = mask_attributes(attributes, keep=unmasked)
    if data_masked or attributes_masked:
        masked_attributes[REDACTED] = "card_number"
    return _within_size(masked_data, masked_attributes)


def _ours(name: str, value: str) -> bool:
    if name in UNMASKED_ATTRIBUTES:
        return True
    if name in UNMASKED_WHEN_COUNTS:
        return _is_count(value)
    return name == REDACTED and value == "card_number"


def _attributes_bytes(attributes: Mapping[str, str]) -> int:
    return sum(
        len(n.encode("utf-8", "surrogatepass")) + len(v.encode("utf-8", "surrogatepass")) for n, v in attributes.items()
    )


def _within_size(data: bytes, attributes: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """The dead letter as it is if it fits in a Publish request (MAX_MESSAGE_BYTES, less
    PUBLISH_FRAMING_BYTES); else its data cut to fit, on a UTF-8 character boundary, and
    `truncated` set to how many bytes the (masked) data had. Cutting masked data never shows
    a card number: it only ever removes characters. Pub/Sub would refuse the whole message, and
    a dead letter that cannot be published is nacked and moved unmasked by the policy."""
    limit = MAX_MESSAGE_BYTES - PUBLISH_FRAMING_BYTES
    if len(data) + _attributes_bytes(attributes) <= limit:
        return data, attributes
    attributes = _within_limit(attributes, spare=1)  # room for `truncated`
    attributes[TRUNCATED] = str(len(data))
    cut = max(0, limit - _attributes_bytes(attributes))
    while 0 < cut < len(data) and data[cut] & 0xC0 == 0x80:  # not inside a character
        cut -= 1
    return data[:cut], attributes
