"""Which version of a row wins: the write timestamp every write carries, and the batch's own choice.

Cassandra keeps, cell by cell, the value with the greater write timestamp, and on a tie the
greater value. Pub/Sub stamps one publish time per Publish request, so two versions published
together would tie and merge into a row nobody published. The rule, the same on every path
(direct, `--workers`, the replay, a redelivery):

1. the later first publish time wins, to the millisecond (Pub/Sub's clock, never this host's);
2. within one millisecond, the greater `message_id` modulo 1,000 wins (ids of one request are
   consecutive: the later message, but across a wrap from ...999 to ...000).

Both go into one number, `USING TIMESTAMP` in microseconds: the millisecond times 1,000 plus the
tie-break. Every column of a version carries it, so whichever version wins, wins whole. Two
versions of one row in one batch are resolved here before writing (only the winner is written).

A dead letter's first publish time is read from its attributes (see `claimed_first_publish_time`)
only within bounds: not after the dead letter's own publish time, and not more than
`CLAIM_HORIZON` before it. A claim outside them is refused (`InvalidMessage`): the replay leaves
that dead letter for a person rather than write it with a time that could overwrite a newer
payment, or make its write a silent no-op.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from .errors import InvalidMessage
from .policy import as_utc, claimed_first_publish_time

__all__ = [
    "CLAIM_HORIZON",
    "TIE_BREAKS",
    "first_publish_time",
    "newest_per_key",
    "tie_break",
    "waiting_since",
    "write_timestamp",
]

TIE_BREAKS = 1000  # the microseconds below one millisecond
# How long before its dead letter's own publish time a payment's first publish time may be: the
# replay renews a dead letter every 6 days, so a payment may wait for its order this long.
CLAIM_HORIZON = timedelta(days=90)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)  # built once: building it at every call was half the cost
SOURCE_MESSAGE_ID = "source_message_id"  # set by this project when it dead-letters
K = TypeVar("K")


def tie_break(message_id: str) -> int:
    """0-999 from a message id: its value modulo 1,000 for a decimal id (Pub/Sub's), else a CRC."""
    if message_id.isascii() and message_id.isdigit():
        return int(message_id[-3:])
    return zlib.crc32(message_id.encode("utf-8", "surrogatepass")) % TIE_BREAKS


def write_timestamp(first_published: datetime, message_id: str) -> int:
    """The version's `USING TIMESTAMP`: its first publish time's millisecond, in microseconds,
    plus its tie-break."""
    return _milliseconds(first_published) * TIE_BREAKS + tie_break(message_id)


# The messages of one publish request share their publish time, and a pull brings runs of them:
# remembered, the millisecond costs a lookup instead of a subtraction and a division (0.5 us a
# message instead of 0.9 for the whole write timestamp).
@functools.lru_cache(maxsize=1024)
def _milliseconds(moment: datetime) -> int:
    return (as_utc(moment) - EPOCH) // MILLISECOND


def first_publish_time(
    publish_time: datetime, attributes: Mapping[str, str], *, from_dead_letters: bool
) -> tuple[datetime, str | None]:
    """When the message's content was first published, and the message id that names it (None:
    this message's own).

    Pub/Sub sets `publish_time`. Only on a dead-letter subscription is an earlier first publish
    time (and the source's message id) taken from the attributes, within the bounds the module
    states; `InvalidMessage` for a claim outside them. Attributes on an input topic are whatever
    the publisher chose, and are never read.
    """
    published = as_utc(publish_time)
    if not from_dead_letters:
        return published, None
    claimed = claimed_first_publish_time(attributes)
    if claimed is None:
        return published, None
    if claimed > published or claimed < published - CLAIM_HORIZON:
        raise InvalidMessage(
            "invalid_message",
            f"claimed first publish time {claimed.isoformat()} is outside [{(published - CLAIM_HORIZON).isoformat()}, "
            f"{published.isoformat()}] (this dead letter's own publish time): not written",
        )
    return claimed, attributes.get(SOURCE_MESSAGE_ID) or None


def waiting_since(publish_time: datetime, attributes: Mapping[str, str]) -> datetime:
    """How long a dead letter has waited, from: its first publish time, or its own publish time
    when the claim is refused (for its age, never for a write)."""
    try:
        return first_publish_time(publish_time, attributes, from_dead_letters=True)[0]
    except InvalidMessage:
        return as_utc(publish_time)


def newest_per_key(keys: Sequence[K], timestamps: Sequence[int], message_ids: Sequence[str]) -> list[int]:
    """For each position, the position of the version written for its key: the greatest write
    timestamp, then (a full tie) the greater message id, compared as numbers where both are."""
    best: dict[K, int] = {}
    for position, key in enumerate(keys):
        current = best.get(key)
        if current is None or _rank(timestamps[position], message_ids[position]) > _rank(
            timestamps[current], message_ids[current]
        ):
            best[key] = position
    return [best[key] for key in keys]


def _rank(timestamp: int, message_id: str) -> tuple[int, int, str]:
    return timestamp, len(message_id), message_id
