"""Requeue: dead letters published back to an input topic, unless their row holds a newer version."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from cassandra.cluster import Session

from ..cassandra_io import TABLE, translate_error
from ..config import LONGEST_LEASE, PubSubSettings
from ..errors import InvalidMessage
from ..messages import parse_order, parse_payment
from ..policy import original_attributes
from ..pubsub_io import Received, connect_subscriber, connect_sync_publisher
from ..versions import first_publish_time, write_timestamp

__all__ = ["NewerVersions", "Version", "requeue", "version_of"]

log = logging.getLogger(__package__)  # "ecom_pipeline.admin": the command's lines, one name


@dataclass(frozen=True)
class Version:
    """Which row a dead letter would write, in which column family, and with which timestamp
    had it been applied when it was first published (`versions.py`)."""

    order_id: int
    column: str  # `item` for an order, `payment_id` for a payment: written by every version
    timestamp: int


def version_of(message: Received) -> Version | None:
    """The version a dead letter holds; None when its data is no valid order or payment, or its
    claimed first publish time is refused (then nothing can be said: it is requeued)."""
    try:
        first, source_id = first_publish_time(message.publish_time, message.attributes, from_dead_letters=True)
    except InvalidMessage:
        return None
    timestamp = write_timestamp(first, source_id or message.message_id)
    for parse, column in ((parse_order, "item"), (parse_payment, "payment_id")):
        try:
            return Version(parse(message.data).order_id, column, timestamp)
        except InvalidMessage:
            continue
    return None


class NewerVersions:
    """Whether a dead letter's row already holds a version at least as new as the dead letter's:
    requeued, it would be published again with a new publish time and overwrite that newer one."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._select = session.prepare(
            f"SELECT writetime(item) AS item, writetime(payment_id) AS payment_id FROM {TABLE} WHERE order_id = ?"
        )

    def holds_newer(self, message: Received) -> bool:
        version = version_of(message)
        if version is None:
            return False
        try:
            row = self._session.execute(self._select, (version.order_id,)).one()
        except Exception as exc:  # any driver error: one line, exit 1, from the caller
            raise translate_error(exc) from exc
        written = getattr(row, version.column) if row is not None else None
        return written is not None and written >= version.timestamp


def requeue(
    pubsub: PubSubSettings,
    subscription: str,
    topic: str,
    limit: int,
    superseded: Callable[[Received], bool] = lambda message: False,
) -> tuple[int, int, int]:
    """Publish up to `limit` dead letters back to an input topic, with their original attributes
    (those the dead-lettering added removed), acking each only once it is published: how many
    were moved, how many the topic refused (those stay in the dead-letter subscription), and how
    many were `superseded` (a newer version of their row is applied: acked, not republished,
    since the republished copy would get a new publish time and win)."""
    source = connect_subscriber(pubsub, subscription)
    target = connect_sync_publisher(pubsub, topic)
    moved = skipped = 0
    refused: list[str] = []
    try:
        source.ack_deadline()  # both exist: one clear line otherwise
        target.check()
        while moved + skipped < limit:
            pulled = source.pull(min(100, limit - moved - skipped), timeout=5)
            if not pulled:
                break
            stale = [m for m in pulled if superseded(m)]
            for message in stale:
                log.warning("not requeued: message %s, a newer version of its row is applied", message.message_id)
            source.ack([m.ack_id for m in stale])
            skipped += len(stale)
            batch = [m for m in pulled if m not in stale]
            if not batch:
                continue
            refusals = target.publish([(m.data, original_attributes(m.attributes)) for m in batch])
            published = [m.ack_id for m, refusal in zip(batch, refusals, strict=True) if refusal is None]
            source.ack(published)
            moved += len(published)
            refused_now = []
            for message, refusal in zip(batch, refusals, strict=True):
                if refusal is not None:
                    log.error("%s refused message %s: %s", topic, message.message_id, refusal)
                    refused_now.append(message.ack_id)
            # Leased until the end: handed back now, they would be pulled again at once.
            source.modify_deadline(refused_now, LONGEST_LEASE)
            refused.extend(refused_now)
    finally:
        source.nack(refused)
        target.close()
        source.close()
    return moved, len(refused), skipped
