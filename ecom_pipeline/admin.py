"""Set-up and accounting: topics, subscriptions and schema (idempotent), and the audit report.

Run as `python -m ecom_pipeline.admin setup|audit` (the Makefile's `make setup`, `make audit`).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.encoder import cql_quote
from cassandra.protocol import SyntaxException
from google.api_core import exceptions as google_exceptions
from google.api_core.retry import Retry, if_exception_type
from google.auth import exceptions as auth_exceptions
from google.cloud import pubsub_v1

from . import cli
from .cassandra_io import TABLE, connect, connect_session, translate_error
from .config import (
    MAX_DELIVERY_ATTEMPTS,
    ORDERS_DLQ_TOPIC,
    ORDERS_TOPIC,
    PAYMENTS_DLQ_TOPIC,
    PAYMENTS_TOPIC,
    CassandraSettings,
    PubSubSettings,
    optional_integer,
    subscription_for,
)
from .errors import FatalError, InvalidMessage, PipelineError, StoreError, TransientStoreError
from .messages import parse_order, parse_payment
from .policy import DEAD_LETTER_RETENTION, original_attributes
from .pubsub_io import (
    NO_CREDENTIALS,
    RPC_TIMEOUT,
    TRANSIENT_GOOGLE_ERRORS,
    PubSubUnavailable,
    Received,
    connect_subscriber,
    connect_sync_publisher,
)
from .pubsub_io import translate_error as translate_pubsub_error
from .versions import first_publish_time, waiting_since, write_timestamp

__all__ = [
    "SubscriptionSpec",
    "apply_schema",
    "audit",
    "ensure_subscriptions",
    "ensure_topics",
    "password_literal",
    "pipeline_role_statements",
    "pipeline_subscriptions",
    "report_lines",
    "requeue",
    "subscription_request",
]

log = logging.getLogger(__name__)
C = TypeVar("C")
LONGEST_LEASE = 600  # seconds: the longest ack deadline Pub/Sub grants
SETUP_WAIT = 60.0  # seconds set-up waits for a service that does not answer (`--wait`)
SCHEMA = Path(__file__).resolve().parent.parent / "schema.cql"
_ROLE_NAME = re.compile(r"[a-z][a-z0-9_]{0,47}")  # fullmatch: `$` would let a trailing newline in
# A dead-letter subscription keeps unacked messages as long as Pub/Sub allows (7 days), and is
# never deleted for inactivity (an empty expiration policy: Google Cloud's default is 31 days).
DEAD_LETTER_KEEPING: dict[str, object] = {
    "message_retention_duration": DEAD_LETTER_RETENTION,
    "expiration_policy": {},
}


@dataclass(frozen=True)
class SubscriptionSpec:
    topic: str
    dead_letter_topic: str | None = None  # with a dead-letter policy and a retry policy
    max_delivery_attempts: int = MAX_DELIVERY_ATTEMPTS  # the policy's backstop (config.py says why)
    ack_deadline: int = 60
    minimum_backoff: int = 10
    maximum_backoff: int = 300
    keeps_dead_letters: bool = False  # retention as long as Pub/Sub allows, and never expires

    @property
    def name(self) -> str:
        return subscription_for(self.topic)


def pipeline_subscriptions() -> list[SubscriptionSpec]:
    """The design's subscriptions; the two input ones cap poison messages with a dead-letter policy."""
    return [
        SubscriptionSpec(ORDERS_TOPIC, ORDERS_DLQ_TOPIC),
        SubscriptionSpec(PAYMENTS_TOPIC, PAYMENTS_DLQ_TOPIC),
        SubscriptionSpec(ORDERS_DLQ_TOPIC, keeps_dead_letters=True),
        SubscriptionSpec(PAYMENTS_DLQ_TOPIC, keeps_dead_letters=True),
    ]


@contextmanager
def _pubsub_call(settings: PubSubSettings, doing: str, missing: str, wait: float) -> Iterator[None]:
    """Pub/Sub's errors during set-up as the pipeline's: `PubSubUnavailable` once it has not
    answered for `wait` seconds, `FatalError` for what no wait changes (one line each)."""
    try:
        yield
    except google_exceptions.RetryError as exc:
        where = f" (PUBSUB_EMULATOR_HOST={settings.emulator_host})" if settings.emulator_host else ""
        raise PubSubUnavailable(f"Pub/Sub did not answer within {wait:g} s{where}: {doing}: {exc.cause}") from exc
    except google_exceptions.NotFound as exc:
        raise FatalError(f"{doing} failed: {missing} does not exist ({exc.message})") from exc
    except google_exceptions.GoogleAPICallError as exc:
        raise translate_pubsub_error(exc, doing, missing) from exc


def _patience(wait: float) -> dict[str, object]:
    """Retry and timeout of one set-up call: a refusal is an error at once, and a Pub/Sub that is
    down is tried again until `wait` seconds have passed (the client's own default retries
    CreateTopic for 10 minutes, in silence); one attempt lasts at most RPC_TIMEOUT."""
    retry = Retry(predicate=if_exception_type(*TRANSIENT_GOOGLE_ERRORS), initial=0.5, maximum=5.0, timeout=wait)
    return {"retry": retry, "timeout": RPC_TIMEOUT}


def _client(kind: Callable[[], C]) -> C:
    """A Pub/Sub client (the emulator when PUBSUB_EMULATOR_HOST is set); `FatalError` without credentials."""
    try:
        return kind()
    except auth_exceptions.DefaultCredentialsError as exc:
        raise FatalError(NO_CREDENTIALS) from exc


def ensure_topics(settings: PubSubSettings, topics: list[str], wait: float = SETUP_WAIT) -> None:
    """Create each topic that does not exist yet."""
    publisher = _client(pubsub_v1.PublisherClient)
    for topic in topics:
        path = settings.topic_path(topic)
        with _pubsub_call(settings, f"creating topic {path}", f"project {settings.project}", wait):
            try:
                publisher.create_topic(name=path, **_patience(wait))
                log.info("created topic %s", topic)
            except google_exceptions.AlreadyExists:
                log.info("topic %s exists", topic)


def subscription_request(settings: PubSubSettings, spec: SubscriptionSpec) -> dict[str, object]:
    """The CreateSubscription request for `spec`: its topic, ack deadline and policies."""
    request: dict[str, object] = {
        "name": settings.subscription_path(spec.name),
        "topic": settings.topic_path(spec.topic),
        "ack_deadline_seconds": spec.ack_deadline,
    }
    if spec.dead_letter_topic:
        request["dead_letter_policy"] = {
            "dead_letter_topic": settings.topic_path(spec.dead_letter_topic),
            "max_delivery_attempts": spec.max_delivery_attempts,
        }
        request["retry_policy"] = {
            "minimum_backoff": timedelta(seconds=spec.minimum_backoff),
            "maximum_backoff": timedelta(seconds=spec.maximum_backoff),
        }
    if spec.keeps_dead_letters:
        request.update(DEAD_LETTER_KEEPING)
    return request


def ensure_subscriptions(settings: PubSubSettings, specs: list[SubscriptionSpec], wait: float = SETUP_WAIT) -> None:
    """Create each subscription, or bring an existing one to the spec's dead-letter policy and
    retention (the emulator refuses to update an expiration policy, so that one is left)."""
    for attempts in sorted({spec.max_delivery_attempts for spec in specs if spec.dead_letter_topic}):
        log.info(
            "input subscriptions dead-letter a message after %d delivery attempts (Pub/Sub's maximum is 100): "
            "Pub/Sub counts every nack and every hand-back at a consumer's stop as an attempt, so the consumer "
            "dead-letters a failing message itself, with its reason, and the policy is only a backstop",
            attempts,
        )
    subscriber = _client(pubsub_v1.SubscriberClient)
    with subscriber:
        for spec in specs:
            request = subscription_request(settings, spec)
            missing = f"topic {spec.topic}" + (f" or topic {spec.dead_letter_topic}" if spec.dead_letter_topic else "")
            with _pubsub_call(settings, f"setting up subscription {request['name']}", missing, wait):
                try:
                    subscriber.create_subscription(request=request, **_patience(wait))
                    log.info("created subscription %s", spec.name)
                except google_exceptions.AlreadyExists:
                    log.info("subscription %s exists", spec.name)
                    if spec.dead_letter_topic:
                        _ensure_dead_letter_policy(subscriber, settings, spec, spec.dead_letter_topic, wait)
                    if spec.keeps_dead_letters:  # one made before this setting: update its retention
                        # (the emulator refuses to update an expiration policy; Google Cloud does not)
                        subscriber.update_subscription(
                            subscription={"name": request["name"], "message_retention_duration": DEAD_LETTER_RETENTION},
                            update_mask={"paths": ["message_retention_duration"]},
                            **_patience(wait),
                        )


def _ensure_dead_letter_policy(
    subscriber: pubsub_v1.SubscriberClient,
    settings: PubSubSettings,
    spec: SubscriptionSpec,
    dead_letter_topic: str,
    wait: float,
) -> None:
    """An existing subscription whose dead-letter policy is not the spec's gets the spec's (one
    made by an older set-up, with 5 attempts): Pub/Sub updates a dead-letter policy in place."""
    path, topic = settings.subscription_path(spec.name), settings.topic_path(dead_letter_topic)
    current = subscriber.get_subscription(subscription=path, **_patience(wait)).dead_letter_policy
    if (current.dead_letter_topic, current.max_delivery_attempts) == (topic, spec.max_delivery_attempts):
        return
    subscriber.update_subscription(
        subscription={
            "name": path,
            "dead_letter_policy": {"dead_letter_topic": topic, "max_delivery_attempts": spec.max_delivery_attempts},
        },
        update_mask={"paths": ["dead_letter_policy"]},
        **_patience(wait),
    )
    log.info(
        "subscription %s: dead-letter policy updated from %d to %d delivery attempts (to %s)",
        spec.name,
        current.max_delivery_attempts,
        spec.max_delivery_attempts,
        dead_letter_topic,
    )


def schema_statements(keyspace: str, schema: str) -> list[str]:
    """The statements of schema.cql, for `keyspace` (CASSANDRA_KEYSPACE) instead of ecom_store."""
    without_comments = re.sub(r"--[^\n]*", "", schema)
    statements = [s.strip() for s in without_comments.split(";") if s.strip()]
    return [re.sub(r"\becom_store\b", keyspace, s) for s in statements]


def replication_statement(keyspace: str, factor: int, data_centre: str, *, nodes: int) -> str:
    """The keyspace at `factor` replicas in the cluster's data centre (NetworkTopologyStrategy);
    a `ValueError` when the data centre has fewer `nodes` than that."""
    if factor > nodes:
        raise ValueError(
            f"CASSANDRA_REPLICATION_FACTOR={factor} is more than the {nodes} nodes in {data_centre}: "
            "no write at LOCAL_QUORUM could ever succeed"
        )
    return (
        f"ALTER KEYSPACE {keyspace} WITH replication = "
        f"{{'class': 'NetworkTopologyStrategy', '{data_centre}': {factor}}}"
    )


@contextmanager
def _store_errors() -> Iterator[None]:
    """The driver's errors (a statement refused, a timeout) as the pipeline's: one line each."""
    try:
        yield
    except (PipelineError, ValueError):
        raise
    except Exception as exc:  # the driver's exceptions share no base class
        raise translate_error(exc) from exc


def apply_schema(settings: CassandraSettings, schema: str, replication_factor: int | None = None) -> None:
    """schema.cql as the design has it (SimpleStrategy, one replica); with `replication_factor`,
    the keyspace is then altered to that many replicas in the data centre the cluster reports."""
    cluster, session = connect_session(settings, keyspace=None)  # the first statement creates it
    try:
        with _store_errors():
            for statement in schema_statements(settings.keyspace, schema):
                session.execute(statement, timeout=60)
            if replication_factor is not None:
                data_centre = session.execute("SELECT data_center FROM system.local").one().data_center
                nodes = sum(host.datacenter == data_centre for host in cluster.metadata.all_hosts())
                statement = replication_statement(settings.keyspace, replication_factor, data_centre, nodes=nodes)
                session.execute(statement, timeout=60)
                log.info("keyspace %s: %d replicas in %s", settings.keyspace, replication_factor, data_centre)
            log.info("schema applied to keyspace %s", settings.keyspace)
    finally:
        cluster.shutdown()


def password_literal(password: str) -> str:
    """CASSANDRA_PIPELINE_PASSWORD as a CQL string literal, quoted by the driver's own encoder
    (`cql_quote`: a quote is written twice; nothing else is special between quotes in CQL).

    It cannot be a bound value: Cassandra's grammar takes only a string literal after PASSWORD
    (5.0.9 answers a bind marker there, prepared or not, with "mismatched input '?' expecting
    STRING_LITERAL"). Text that is not UTF-8 (lone surrogates, from undecodable bytes in the
    environment) is refused here: the driver would fail on it with an error quoting the statement.
    """
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("CASSANDRA_PIPELINE_PASSWORD is not UTF-8 text (set it again from a UTF-8 terminal)") from None
    literal: str = cql_quote(password)
    return literal


def pipeline_role_statements(keyspace: str, role: str, password: str) -> list[str]:
    """The pipeline's role: it may log in, read and write the fact table, and nothing else (no
    schema change, no other keyspace, not a superuser). The password is a string literal in the
    first statement's text (see `password_literal`), which is never logged; an existing role
    keeps its password (change it with ALTER ROLE: Cassandra allows one change per 5 s, and
    set-up may run twice in a row)."""
    if not _ROLE_NAME.fullmatch(role):
        raise ValueError(f"CASSANDRA_PIPELINE_ROLE must be a plain CQL identifier, not {role!r}")
    table = f"{keyspace}.{TABLE}"
    return [
        f"CREATE ROLE IF NOT EXISTS {role} WITH LOGIN = true AND SUPERUSER = false AND PASSWORD = "
        + password_literal(password),
        f"GRANT SELECT ON TABLE {table} TO {role}",
        f"GRANT MODIFY ON TABLE {table} TO {role}",
    ]


def create_pipeline_role(settings: CassandraSettings, role: str, password: str) -> None:
    """As the administrator (`settings`' credentials): the pipeline's least-privilege role.

    The statements go out as they are, with no parameters (the driver would %-format them). A
    syntax error is reported without the server's words: they quote the statement, password
    included."""
    statements = pipeline_role_statements(settings.keyspace, role, password)
    cluster, session = connect_session(settings, keyspace=None)
    try:
        with _store_errors():
            for statement in statements:
                try:
                    session.execute(statement, timeout=60)
                except SyntaxException as exc:
                    raise StoreError(f"Cassandra refused a role statement for {role} as a syntax error") from exc
        log.info("role %s may SELECT and MODIFY %s.%s, nothing else", role, settings.keyspace, TABLE)
    finally:
        cluster.shutdown()


def replication_factor_from(environ: Mapping[str, str]) -> int | None:
    """CASSANDRA_REPLICATION_FACTOR (1 to 9), or None: keep schema.cql's."""
    return optional_integer(environ, "CASSANDRA_REPLICATION_FACTOR", low=1, high=9, noun="a number of replicas")


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    setup_parser = commands.add_parser("setup", help="create topics, subscriptions and the table (idempotent)")
    setup_parser.add_argument(
        "--wait", type=cli.ranged(float, 0), default=120.0, help="seconds to wait for Pub/Sub, then for Cassandra"
    )
    audit_parser = commands.add_parser("audit", help="count rows, payments and dead letters")
    audit_parser.add_argument("--first-id", type=int, default=1)
    audit_parser.add_argument("--last-id", type=int, default=1000)
    requeue_parser = commands.add_parser(
        "requeue",
        help="publish dead letters back to an input topic once the cause is fixed (see docs/dead-letters.md)",
    )
    requeue_parser.add_argument(
        "subscription", help="dead-letter subscription to take them from, e.g. dlq_orders_data-sub"
    )
    requeue_parser.add_argument("topic", help="topic to publish them to, e.g. orders_data")
    requeue_parser.add_argument("--max", type=cli.ranged(int, 1), default=1000, help="at most this many (default 1000)")
    cli.add_log_level(parser)
    args = parser.parse_args(argv)
    cli.configure_logging(args.log_level, log_format=args.log_format)
    try:
        pubsub, cassandra = PubSubSettings.from_env(os.environ), CassandraSettings.from_env(os.environ)
        replication_factor = replication_factor_from(os.environ)
    except ValueError as exc:
        log.error("%s", exc)
        return 1

    if args.command == "setup":
        role = os.environ.get("CASSANDRA_PIPELINE_ROLE", "").strip()
        role_password = os.environ.get("CASSANDRA_PIPELINE_PASSWORD", "")
        if role and not role_password:
            log.error("CASSANDRA_PIPELINE_ROLE is set: CASSANDRA_PIPELINE_PASSWORD must be too")
            return 1
        try:  # refused before anything is set up
            if role:
                pipeline_role_statements(cassandra.keyspace, role, role_password)
        except ValueError as exc:
            log.error("%s", exc)
            return 1
        specs = pipeline_subscriptions()
        try:
            ensure_topics(pubsub, sorted({spec.topic for spec in specs}), wait=args.wait)
            ensure_subscriptions(pubsub, specs, wait=args.wait)
        except PipelineError as exc:
            log.error("%s", exc)
            return 1
        deadline = time.monotonic() + args.wait
        while True:
            try:
                apply_schema(cassandra, SCHEMA.read_text(), replication_factor)
                if role:  # a secured cluster: set up as the administrator, consume as the role
                    create_pipeline_role(cassandra, role, role_password)
                return 0
            except TransientStoreError as exc:
                if time.monotonic() > deadline:
                    log.error("Cassandra did not answer: %s", exc)
                    return 1
                time.sleep(2)
            except (PipelineError, ValueError) as exc:
                log.error("%s", exc)
                return 1
    if args.command == "requeue":
        try:
            cluster, session = connect_session(cassandra, cassandra.keyspace)
            try:
                newer = NewerVersions(session)
                moved, refused, skipped = requeue(pubsub, args.subscription, args.topic, args.max, newer.holds_newer)
            finally:
                cluster.shutdown()
        except TransientStoreError as exc:
            log.error("Cassandra is not reachable: %s", exc)
            return 1
        except PipelineError as exc:
            log.error("%s", exc)
            return 1
        print(f"requeued {moved} messages from {args.subscription} to {args.topic}")
        if skipped:
            print(f"not requeued {skipped} messages whose row holds a newer version (acked)")
        if refused:
            log.error("%s refused %d messages; they stay in %s", args.topic, refused, args.subscription)
            return 1
        return 0
    try:
        report = audit(pubsub, cassandra, args.first_id, args.last_id)
    except TransientStoreError as exc:
        log.error("Cassandra is not reachable: %s", exc)
        return 1
    except PipelineError as exc:
        log.error("%s", exc)
        return 1
    for line in report_lines(report):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
