"""The audit (`make audit`): rows and payments for a range of order ids, and the dead letters waiting."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cassandra.concurrent import execute_concurrent_with_args

from ..cassandra_io import TABLE, connect, translate_error
from ..config import (
    LONGEST_LEASE,
    ORDERS_DLQ_TOPIC,
    PAYMENTS_DLQ_TOPIC,
    CassandraSettings,
    PubSubSettings,
    subscription_for,
)
from ..pubsub_io import connect_subscriber
from ..versions import waiting_since

__all__ = ["AUDIT_BLIND_SPOT", "Waiting", "audit", "count_waiting", "report_lines"]


@dataclass(frozen=True)
class Waiting:
    """What can be pulled from a subscription now: how many, and the oldest first publish time."""

    count: int
    oldest: datetime | None


def count_waiting(settings: PubSubSettings, subscription: str, limit: int = 1_000_000) -> Waiting:
    """How many messages can be pulled from a dead-letter subscription now (then handed straight
    back), and when the oldest of them was first published.

    Pub/Sub has no "count" call (Cloud Monitoring's num_undelivered_messages does it on
    Google Cloud); messages leased to a running consumer are not visible here, and the replay
    hands back what it defers when it stops.
    """
    source = connect_subscriber(settings, subscription)
    seen: list[str] = []
    oldest: datetime | None = None
    try:
        while len(seen) < limit:
            batch = source.pull(1000, timeout=5)
            if not batch:
                break
            ack_ids = [m.ack_id for m in batch]
            seen.extend(ack_ids)
            for message in batch:
                first = waiting_since(message.publish_time, message.attributes)
                oldest = first if oldest is None else min(oldest, first)
            # Keep what is counted leased until the end, so it is not counted twice.
            source.modify_deadline(ack_ids, LONGEST_LEASE)
    finally:
        source.nack(seen)  # whatever stopped the count: nothing counted stays leased
        source.close()
    return Waiting(len(seen), oldest)


def audit(pubsub: PubSubSettings, cassandra: CassandraSettings, first_id: int, last_id: int) -> dict[str, object]:
    """Rows and payments for order ids first..last, the messages waiting in each DLQ, and the
    age in seconds of the oldest waiting payment (first publish time to now; `-` when none)."""
    store = connect(cassandra)
    try:
        statement = store.session.prepare(f"SELECT payment_id FROM {TABLE} WHERE order_id = ?")
        results = execute_concurrent_with_args(
            store.session, statement, [(i,) for i in range(first_id, last_id + 1)], concurrency=128
        )
        rows = paid = 0
        for _ok, result in results:
            row = result.one()
            if row is not None:
                rows += 1
                paid += row.payment_id is not None
    except Exception as exc:  # the driver's own errors (a read timeout, a node gone), as ours
        raise translate_error(exc) from exc
    finally:
        store.close()
    report: dict[str, object] = {"orders_in_range": last_id - first_id + 1, "rows": rows, "rows_with_payment": paid}
    for topic in (ORDERS_DLQ_TOPIC, PAYMENTS_DLQ_TOPIC):
        waiting = count_waiting(pubsub, subscription_for(topic))
        report[f"waiting_in_{topic}"] = waiting.count
        if topic == PAYMENTS_DLQ_TOPIC:
            age = (datetime.now(UTC) - waiting.oldest).total_seconds() if waiting.oldest else None
            report["oldest_waiting_payment_age_s"] = "-" if age is None else f"{age:.0f}"
    return report


# A pull sees only what no consumer holds, and Pub/Sub has no call that counts leased messages
# (on the emulator nothing does; on Google Cloud, Cloud Monitoring's num_undelivered_messages).
AUDIT_BLIND_SPOT = (
    "not counted: messages leased by a running consumer, e.g. the dead letters the replay defers "
    "(held up to 10 minutes each); stop the replay, which hands them back, to see the whole backlog"
)


def report_lines(report: Mapping[str, object]) -> list[str]:
    """The audit's report as the lines `make audit` prints: one `name  value` line per figure,
    then the one thing the counts cannot see."""
    width = max(map(len, report))
    return [*(f"{key:<{width}}  {value}" for key, value in report.items()), AUDIT_BLIND_SPOT]
