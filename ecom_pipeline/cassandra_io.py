"""Apache Cassandra: the `orders_payments_facts` table through prepared statements.

Rows are grouped by the nodes that hold them (token-aware): writes go in UNLOGGED batches of
such rows, existence reads in one `IN` query per group, many of them concurrently through the
driver. Each row gets success or an error already translated to `TransientStoreError` (retry
later), `FatalStoreError` (stop) or `StoreError` (this row fails). Every write carries its own
`USING TIMESTAMP` from the message's event time, also inside a batch, so redeliveries and
replays are idempotent and an older version never wins.
"""

from __future__ import annotations

import logging
import re
import ssl
import threading
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from cassandra import (
    AuthenticationFailed,
    ConsistencyLevel,
    InvalidRequest,
    OperationTimedOut,
    Timeout,
    Unauthorized,
    Unavailable,
    UnresolvableContactPoints,
)
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, Session
from cassandra.concurrent import execute_concurrent
from cassandra.connection import ConnectionException
from cassandra.policies import DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy, TokenAwarePolicy
from cassandra.pool import Host
from cassandra.protocol import IsBootstrappingErrorMessage, OverloadedErrorMessage
from cassandra.query import (
    BatchStatement,
    BatchType,
    BoundStatement,
    PreparedStatement,
    SimpleStatement,
    Statement,
    tuple_factory,
)

from .config import CassandraSettings
from .errors import FatalStoreError, StoreError, TransientStoreError
from .messages import ORDER_COLUMNS, PAYMENT_COLUMNS

__all__ = [
    "INSERT_ORDER",
    "TABLE",
    "FactStore",
    "connect",
    "connect_session",
    "estimated_size",
    "plan_batches",
    "row_errors",
    "rows_per_batch",
    "translate_error",
    "unknown_data_centre",
    "unmeetable_consistency",
]

log = logging.getLogger(__name__)
R = TypeVar("R")
TABLE = "orders_payments_facts"
INSERT_ORDER = (
    f"INSERT INTO {TABLE} ({', '.join(ORDER_COLUMNS)}) VALUES ({', '.join('?' for _ in ORDER_COLUMNS)})"
    " USING TIMESTAMP ?"
)
CONCURRENCY = 512  # single statements in flight per call (reads; rows of a refused batch)
# Writes go in UNLOGGED batches of rows that share their replicas (as cqlsh COPY and DSBulk do):
# fewer requests per row leave more of the CPU to the node. How many rows a batch holds adapts to
# the rows waiting, as a Kafka producer's batches fill under load and leave early when it is
# light: every row handed to the store and not yet written (this call's, and those of the calls
# other threads have in flight) is spread over about SPREAD_BATCHES batches, at most
# MAX_BATCH_ROWS rows and MAX_BATCH_BYTES each. A drain (several 500-row calls in flight) so
# writes full batches; a light stream (one call of a few dozen rows at a time) writes small ones
# for latency. Measured here before the rule counted other calls' rows, when each call was sized
# alone (the consumer's calls hold 240-530 rows: 5-10 rows a batch): full batches cost the node
# less CPU per row (order consumer with 3 calls in flight, 50,000 orders: 5 rows a batch
# 6,300-8,200 msg/s, node 1.2-1.6 CPU-seconds per 10,000 rows; 20 rows a batch 8,600-9,600
# msg/s, 1.0-1.1), while at a steady 2,000 orders/s full batches of 20 raised the end-to-end
# p50/p99 from 70/126-177 ms (spread over 50 batches) to 150/202-408 ms.
SPREAD_BATCHES = 50
MAX_BATCH_ROWS = 20
MAX_BATCH_BYTES = 4608  # estimated; 512 bytes under Cassandra's batch_size_warn_threshold (5 KiB)
# Bytes per value besides the value itself, as Cassandra's batch size check counted them here:
# 40 small orders were 9.9 KiB (about 254 bytes each for 80 bytes of values), 40 orders with a
# 1,000-character item and address 87.5 KiB (2,241 bytes each for 2,067).
CELL_OVERHEAD = 20
BATCH_CONCURRENCY = 256
MAX_READ_GROUP = 50  # orders per existence query (IN), grouped by replicas: measured best here
# The existence reads' execution profile: rows as plain tuples. The driver's default row factory
# builds a new namedtuple class for every result, which was a quarter of the reads' CPU here
# (10.9 against 8.3 us per order looked up).
READS = "existence reads"

# Worth waiting for: the cluster is unreachable, overloaded, short of live replicas or timing
# out. A replica that answers with a failure (Read/WriteFailure, a failing function, an invalid
# request) is a per-message failure instead: nacked, so Pub/Sub's attempts cap it.
_TRANSIENT = (
    Unavailable,
    Timeout,
    OperationTimedOut,
    NoHostAvailable,
    ConnectionException,
    ConnectionError,
    OverloadedErrorMessage,
    IsBootstrappingErrorMessage,
)
# Refusals no retry can fix and no single message causes: the consumer stops.
_FATAL = (AuthenticationFailed, Unauthorized)


def translate_error(exc: BaseException) -> StoreError:
    """The pipeline's view of a driver error: transient (wait and retry), fatal (stop), or a
    failure of this statement (nack it: Pub/Sub redelivers and its dead-letter policy caps it)."""
    if isinstance(exc, StoreError):
        return exc
    kind: type[StoreError] = StoreError
    message = f"{type(exc).__name__}: {exc}"
    failures = _node_errors(exc)
    if failures and all(_certificate_failure(e) for e in failures):
        kind, message = FatalStoreError, _certificate_problem(failures)
    elif isinstance(exc, _FATAL) or (failures and all(_refused_login(e) for e in failures)):
        kind = FatalStoreError
    elif isinstance(exc, _TRANSIENT):
        kind = TransientStoreError
    error = kind(message)
    error.__cause__ = exc
    return error


def _node_errors(exc: BaseException) -> list[BaseException]:
    """Each node's error when no node could be reached, else nothing. (A session that opened no
    pool lists only its hosts.)"""
    errors = getattr(exc, "errors", None) if isinstance(exc, NoHostAvailable) else None
    return [e for e in errors.values() if isinstance(e, BaseException)] if isinstance(errors, dict) else []


def _refused_login(error: BaseException) -> bool:
    """The node answered and refused our credentials or our certificate check failed: not an
    outage, and no retry will change it."""
    return isinstance(error, AuthenticationFailed) or _certificate_failure(error)


# The driver catches the handshake's ssl.SSLCertVerificationError and raises socket.error(1,
# "Tried connecting to [...]. Last error: <OpenSSL's words>") instead, a PermissionError: only
# OpenSSL's words tell a failed certificate check from other errors.
_CERTIFICATE_VERIFY_FAILED = re.compile(
    r"\[SSL: CERTIFICATE_VERIFY_FAILED\] (?:certificate verify failed: )?(?P<reason>.*?)(?: \(_ssl\.c:\d+\))?$"
)


def _certificate_failure(error: BaseException) -> bool:
    return isinstance(error, ssl.SSLCertVerificationError) or (
        isinstance(error, OSError) and _CERTIFICATE_VERIFY_FAILED.search(str(error)) is not None
    )


def _certificate_problem(failures: Sequence[BaseException]) -> str:
    """One line for a certificate every node failed: OpenSSL's reason, and the variable to fix."""
    reasons = []
    for failure in failures:
        found = _CERTIFICATE_VERIFY_FAILED.search(str(failure))
        reasons.append(found["reason"].rstrip(".") if found and found["reason"] else "certificate verify failed")
    reason = "; ".join(dict.fromkeys(reasons))
    if all("mismatch" in r for r in reasons):
        return (
            f"every node's TLS certificate failed verification ({reason}): CASSANDRA_HOSTS must list "
            "addresses or names that the nodes' certificates carry"
        )
    return (
        f"every node's TLS certificate failed verification ({reason}): check CASSANDRA_SSL_CA_CERT, "
        "which must be the CA that signed them"
    )


def unknown_data_centre(local_dc: str | None, data_centres: Collection[str]) -> str | None:
    """Why CASSANDRA_LOCAL_DC can never work, or None: the cluster is known and no node is in it.
    (The driver then ignores every node and only says it could not connect to any.)"""
    if local_dc is None or not data_centres or local_dc in data_centres:
        return None
    return (
        f"CASSANDRA_LOCAL_DC={local_dc}: no node of the cluster is in it "
        f"(its data centres: {', '.join(sorted(data_centres))})"
    )


def _replicas(factor: str) -> int:
    """'3' or '3/1' (transient replication): the number of full and transient replicas."""
    try:
        return int(factor.split("/")[0])
    except ValueError:
        return 0


def unmeetable_consistency(
    consistency: str, keyspace: str, replication: Mapping[str, str], local_dc: str | None, *, reads: bool
) -> str | None:
    """Why `consistency` can never succeed for a keyspace with this replication, or None.

    `replication` is the keyspace's map from `system_schema.keyspaces`; `local_dc` the data
    centre the driver routes to (unused for SimpleStrategy).
    """
    strategy = replication.get("class", "").rsplit(".", 1)[-1]
    if strategy == "SimpleStrategy":
        per_dc = {local_dc or "": _replicas(replication.get("replication_factor", "0"))}
    else:
        per_dc = {dc: _replicas(rf) for dc, rf in replication.items() if dc != "class"}
    total = sum(per_dc.values())
    local = per_dc.get(local_dc or "", 0) if strategy != "SimpleStrategy" else total
    if consistency == "EACH_QUORUM" and reads:
        return "CASSANDRA_CONSISTENCY=EACH_QUORUM is only supported for writes, and this consumer reads"
    needed, available, where = {
        "ONE": (1, total, ""),
        "TWO": (2, total, ""),
        "THREE": (3, total, ""),
        "QUORUM": (total // 2 + 1, total, ""),
        "ALL": (total, total, ""),
        "EACH_QUORUM": (1, min(per_dc.values(), default=0), " in every data centre"),
        "LOCAL_ONE": (1, local, f" in data centre {local_dc}"),
        "LOCAL_QUORUM": (local // 2 + 1, local, f" in data centre {local_dc}"),
    }[consistency]
    if available >= max(needed, 1):
        return None
    if strategy != "SimpleStrategy" and consistency.startswith("LOCAL_") and local_dc is None:
        where = " in the local data centre (set CASSANDRA_LOCAL_DC)"
    return (
        f"CASSANDRA_CONSISTENCY={consistency} needs {max(needed, 1)} replicas{where}, but keyspace {keyspace} has "
        f"replication factor {available}{where} ({strategy})"
    )


def estimated_size(values: Sequence[object]) -> int:
    """About how many bytes a row's cells take in a mutation (what Cassandra's batch size
    thresholds measure): the values, and a fixed overhead per cell (timestamp, flags, path)."""
    size = 0
    for value in values:  # a loop, not a generator: a microsecond a row less, at every write
        if isinstance(value, str):
            size += (len(value) if value.isascii() else len(value.encode("utf-8"))) + CELL_OVERHEAD
        elif value is not None:
            size += 8 + CELL_OVERHEAD
    return size


def rows_per_batch(waiting: int) -> int:
    """How many rows a batch holds when `waiting` rows are being written: about SPREAD_BATCHES
    batches' worth, so a light stream writes small batches and a backlog full ones."""
    return max(1, min(MAX_BATCH_ROWS, -(-waiting // SPREAD_BATCHES)))


def plan_batches(keys: Sequence[Hashable], sizes: Sequence[int], *, max_rows: int, max_bytes: int) -> list[list[int]]:
    """Positions grouped into batches: only rows with the same key (replica set) together, at most
    `max_rows` rows and `max_bytes` estimated bytes in each (a row larger than that, alone)."""
    groups: dict[Hashable, list[int]] = {}
    for position, key in enumerate(keys):
        groups.setdefault(key, []).append(position)
    batches: list[list[int]] = []
    for positions in groups.values():
        current: list[int] = []
        size = 0
        for position in positions:
            if current and (len(current) >= max_rows or size + sizes[position] > max_bytes):
                batches.append(current)
                current, size = [], 0
            current.append(position)
            size += sizes[position]
        batches.append(current)
    return batches


def _routing_key(statement: BoundStatement) -> bytes:
    return statement.routing_key  # type: ignore[no-any-return]  # the driver's classes are untyped


class _Routed(BoundStatement):  # type: ignore[misc]  # the driver's classes are untyped
    """A bound statement sent to a replica of `routing_key`'s partition: for an `IN` query over
    partitions that share their replicas, whose routing key the driver cannot work out itself."""

    def __init__(self, prepared: PreparedStatement, values: tuple[object, ...], routing_key: bytes) -> None:
        super().__init__(prepared)
        self.bind(values)
        self._explicit_routing_key = routing_key

    @property
    def routing_key(self) -> bytes:
        return self._explicit_routing_key


def row_errors(
    batches: Sequence[Sequence[int]], outcomes: Sequence[StoreError | None], rows: int
) -> tuple[list[StoreError | None], list[int]]:
    """Each row's error from its batch's outcome, and the rows to write again one by one.

    A transient or fatal error is every row's (the batch is retried whole, or the consumer
    stops); a batch of several rows refused for good is split, since one row may be the cause.
    """
    errors: list[StoreError | None] = [None] * rows
    one_by_one: list[int] = []
    for positions, error in zip(batches, outcomes, strict=True):
        if error is None:
            continue
        if len(positions) > 1 and type(error) is StoreError:
            one_by_one += positions
        else:
            for position in positions:
                errors[position] = error
    return errors, one_by_one


@dataclass(frozen=True)
class _Statements:
    insert_order: PreparedStatement
    order_exists: PreparedStatement  # for routing keys
    orders_exist: PreparedStatement
    update_payment: PreparedStatement


class FactStore:
    """Reads and writes of `orders_payments_facts`. Build it with `connect()`."""

    def __init__(self, cluster: Cluster, session: Session, statements: _Statements) -> None:
        self._cluster = cluster
        self._session = session
        self._statements = statements
        self._writing = 0  # rows handed to _run and not yet written, over every thread's calls
        self._writing_lock = threading.Lock()
        self._uniform: tuple[object, frozenset[Host] | None] = (None, None)  # see _uniform_replicas

    @property
    def session(self) -> Session:
        return self._session

    def insert_orders(self, rows: Sequence[tuple[tuple[object, ...], int]]) -> list[StoreError | None]:
        """Write the order columns of each (order values, write timestamp); never the payment columns."""
        return self._run(self._statements.insert_order, [(*values, ts) for values, ts in rows])

    def existing_orders(self, order_ids: Sequence[int]) -> tuple[set[int], dict[int, StoreError]]:
        """Which of these orders exist, and the error for each one that could not be checked.

        One `IN` query per group of orders that share their replicas, sent to one of those
        replicas: measured here about ten times faster than one query per order.
        """
        unique = list(dict.fromkeys(order_ids))
        # The routing key of a one-column partition key is that column's value, serialized: what
        # binding `order_exists` would give, at a twentieth of the cost (0.08 against 1.7 us).
        lookup = self._statements.order_exists
        key_type = lookup.column_metadata[lookup.routing_key_indexes[0]].type
        routing = [key_type.serialize(order_id, lookup.protocol_version) for order_id in unique]
        groups = plan_batches(
            self._replica_sets(routing, bytes),
            [1] * len(unique),
            max_rows=MAX_READ_GROUP,
            max_bytes=MAX_READ_GROUP,
        )
        queries = []
        for positions in groups:
            ids = [unique[p] for p in positions]
            queries.append((_Routed(self._statements.orders_exist, (ids,), routing[positions[0]]), None))
        results = execute_concurrent(
            self._session, queries, concurrency=BATCH_CONCURRENCY, raise_on_first_error=False, execution_profile=READS
        )
        found: set[int] = set()
        failed: dict[int, StoreError] = {}
        for positions, (ok, result) in zip(groups, results, strict=True):
            if ok:
                found.update(order_id for (order_id,) in result)
            else:
                error = translate_error(result)
                failed.update((unique[p], error) for p in positions)
        return found, failed

    def update_payments(self, rows: Sequence[tuple[int, tuple[object, ...], int]]) -> list[StoreError | None]:
        """Set the payment columns of existing orders: (order_id, payment values, write timestamp)."""
        return self._run(
            self._statements.update_payment,
            [(ts, *values, order_id) for order_id, values, ts in rows],
        )

    def _run(self, statement: PreparedStatement, parameters: list[tuple[object, ...]]) -> list[StoreError | None]:
        """Write every row, in UNLOGGED batches of rows that share their replicas; one result each.

        A batch that fails transiently (or fatally) gives every row its error: the whole batch is
        retried, which the write timestamps make harmless. A batch refused for good is written
        again row by row, so only the rows that really fail are nacked.
        """
        if not parameters:
            return []
        bound = [statement.bind(row) for row in parameters]
        with self._writing_lock:
            self._writing += len(bound)
            waiting = self._writing
        try:
            batches = plan_batches(
                self._replica_sets(bound, _routing_key),
                [estimated_size(row) for row in parameters],
                max_rows=rows_per_batch(waiting),
                max_bytes=MAX_BATCH_BYTES,
            )
            results = execute_concurrent(
                self._session,
                [(self._batch([bound[p] for p in positions]), None) for positions in batches],
                concurrency=BATCH_CONCURRENCY,
                raise_on_first_error=False,
            )
        finally:
            with self._writing_lock:
                self._writing -= len(bound)
        errors, one_by_one = row_errors(
            batches, [None if ok else translate_error(result) for ok, result in results], len(bound)
        )
        if one_by_one:
            singles = execute_concurrent(
                self._session,
                [(bound[p], None) for p in one_by_one],
                concurrency=CONCURRENCY,
                raise_on_first_error=False,
            )
            for position, (ok, result) in zip(one_by_one, singles, strict=True):
                errors[position] = None if ok else translate_error(result)
        return errors

    def _replica_sets(self, rows: Sequence[R], routing_key: Callable[[R], bytes]) -> list[frozenset[Host]]:
        """The nodes holding each row's partition (token-aware), in any order (a host is equal
        to another of the same address)."""
        uniform = self._uniform_replicas()
        if uniform is not None:
            return [uniform] * len(rows)
        metadata, keyspace = self._cluster.metadata, self._session.keyspace
        return [frozenset(metadata.get_replicas(keyspace, routing_key(row))) for row in rows]

    def _uniform_replicas(self) -> frozenset[Host] | None:
        """The replicas of every partition when all the keyspace's token ranges have the same
        ones (no more nodes than replicas: one node, or three holding three replicas), else None.

        Then no row is looked up: a lookup cost 2.9 us a row here, about 4 % of the order
        consumer's CPU per message. The driver replaces a keyspace's map of ranges when the ring
        or the keyspace changes, so the answer is worked out again once per map."""
        token_map = self._cluster.metadata.token_map
        ranges = token_map.tokens_to_hosts_by_ks.get(self._session.keyspace) if token_map is not None else None
        if not ranges:  # not built yet: the first lookup builds it
            return None
        known, uniform = self._uniform
        if ranges is not known:
            replica_sets = {frozenset(hosts) for hosts in ranges.values()}
            uniform = replica_sets.pop() if len(replica_sets) == 1 else None
            self._uniform = (ranges, uniform)
        return uniform

    @staticmethod
    def _batch(statements: list[BoundStatement]) -> Statement:
        if len(statements) == 1:
            return statements[0]
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        for statement in statements:
            batch.add(statement)
        return batch

    def reachable(self) -> bool:
        """Whether the driver holds a connection to at least one node (for the readiness probe)."""
        return any(host.is_up for host in self._cluster.metadata.all_hosts())

    def close(self) -> None:
        self._cluster.shutdown()


def _cluster(settings: CassandraSettings) -> Cluster:
    auth = (
        PlainTextAuthProvider(settings.username, settings.password.get_secret_value() if settings.password else "")
        if settings.username
        else None
    )

    def profile(**rows: object) -> ExecutionProfile:
        return ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=settings.local_dc)),
            consistency_level=ConsistencyLevel.name_to_value[settings.consistency],
            request_timeout=settings.request_timeout,
            **rows,
        )

    return Cluster(
        list(settings.hosts),
        port=settings.port,
        auth_provider=auth,
        ssl_context=settings.tls.ssl_context() if settings.tls else None,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile(), READS: profile(row_factory=tuple_factory)},
        protocol_version=5,
        # The driver's default backoff grows to 10 minutes between reconnection attempts; a
        # consumer riding out an outage should notice the node's return within seconds.
        reconnection_policy=ExponentialReconnectionPolicy(base_delay=0.5, max_delay=10.0),
        idle_heartbeat_interval=10,
    )


def connect_session(settings: CassandraSettings, keyspace: str | None) -> tuple[Cluster, Session]:
    """A plain session (for set-up and audits); the caller shuts the cluster down."""
    try:
        cluster = _cluster(settings)
    except UnresolvableContactPoints as exc:  # DNS may answer later: wait, as for a node that is down
        raise TransientStoreError(f"no address for any of CASSANDRA_HOSTS: {', '.join(settings.hosts)}") from exc
    try:
        return cluster, cluster.connect(keyspace)
    except Exception as exc:
        known = {host.datacenter for host in cluster.metadata.all_hosts() if host.datacenter}
        cluster.shutdown()
        problem = unknown_data_centre(settings.local_dc, known)
        if problem:
            raise FatalStoreError(problem) from exc
        raise translate_error(exc) from exc


def connect(settings: CassandraSettings, *, reads: bool = True) -> FactStore:
    """Connect to the cluster, check the keyspace, prepare the statements.

    Raises `TransientStoreError` when no node answers, `FatalStoreError` when the keyspace or
    table is missing, the credentials are refused, or the consistency level can never be met
    (`reads`: the consumer reads as well as writes).
    """
    cluster, session = connect_session(settings, None)
    try:
        _check_keyspace(session, settings, reads=reads)
        session.set_keyspace(settings.keyspace)
        payment_set = ", ".join(f"{column} = ?" for column in PAYMENT_COLUMNS)
        statements = _Statements(
            insert_order=session.prepare(INSERT_ORDER),
            order_exists=session.prepare(f"SELECT order_id FROM {TABLE} WHERE order_id = ?"),
            orders_exist=session.prepare(f"SELECT order_id FROM {TABLE} WHERE order_id IN ?"),
            update_payment=session.prepare(f"UPDATE {TABLE} USING TIMESTAMP ? SET {payment_set} WHERE order_id = ?"),
        )
    except BaseException as exc:
        cluster.shutdown()
        if isinstance(exc, InvalidRequest):  # the table is missing or not the design's
            raise FatalStoreError(f"table {settings.keyspace}.{TABLE} is not usable (run `make setup`): {exc}") from exc
        if isinstance(exc, Exception):
            raise translate_error(exc) from exc
        raise
    log.info("connected to Cassandra %s:%s, keyspace %s", ",".join(settings.hosts), settings.port, settings.keyspace)
    return FactStore(cluster, session, statements)


def _check_keyspace(session: Session, settings: CassandraSettings, *, reads: bool) -> None:
    # Schema tables are on every node: read them at ONE, whatever the pipeline's level is.
    replication = SimpleStatement(
        "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s",
        consistency_level=ConsistencyLevel.ONE,
    )
    row = session.execute(replication, (settings.keyspace,)).one()
    if row is None:
        raise FatalStoreError(f"keyspace {settings.keyspace} does not exist (run `make setup`)")
    local = SimpleStatement("SELECT data_center FROM system.local", consistency_level=ConsistencyLevel.ONE)
    local_dc = settings.local_dc or session.execute(local).one().data_center
    problem = unmeetable_consistency(settings.consistency, settings.keyspace, row.replication, local_dc, reads=reads)
    if problem:
        raise FatalStoreError(problem)
