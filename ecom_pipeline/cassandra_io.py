"""Apache Cassandra: the `orders_payments_facts` table through prepared statements.

Writes run concurrently through the driver (`execute_concurrent_with_args`) and report, per
statement, success or an error already translated to `TransientStoreError` (retry later) or
`StoreError` (retrying will not help). Every write carries `USING TIMESTAMP` from the message's
event time, so redeliveries and replays are idempotent and an older version never wins.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cassandra import (
    AuthenticationFailed,
    ConsistencyLevel,
    InvalidRequest,
    OperationTimedOut,
    Timeout,
    Unauthorized,
    Unavailable,
)
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, Session
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.connection import ConnectionException
from cassandra.policies import DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy, TokenAwarePolicy
from cassandra.protocol import IsBootstrappingErrorMessage, OverloadedErrorMessage
from cassandra.query import PreparedStatement, SimpleStatement

from .config import CassandraSettings
from .errors import FatalStoreError, StoreError, TransientStoreError
from .messages import ORDER_COLUMNS, PAYMENT_COLUMNS

__all__ = [
    "INSERT_ORDER",
    "TABLE",
    "FactStore",
    "connect",
    "connect_session",
    "translate_error",
    "unmeetable_consistency",
]

log = logging.getLogger(__name__)
TABLE = "orders_payments_facts"
INSERT_ORDER = (
    f"INSERT INTO {TABLE} ({', '.join(ORDER_COLUMNS)}) VALUES ({', '.join('?' for _ in ORDER_COLUMNS)})"
    " USING TIMESTAMP ?"
)
CONCURRENCY = 512  # statements in flight per call: best measured by make bench here (1,024 timed out)

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
    if isinstance(exc, _FATAL) or _only_refused_logins(exc):
        kind = FatalStoreError
    elif isinstance(exc, _TRANSIENT):
        kind = TransientStoreError
    error = kind(f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _only_refused_logins(exc: BaseException) -> bool:
    """Every node answered, and refused our credentials: not an outage."""
    errors = getattr(exc, "errors", None) if isinstance(exc, NoHostAvailable) else None
    return bool(errors) and all(isinstance(e, AuthenticationFailed) for e in dict(errors or {}).values())


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


@dataclass(frozen=True)
class _Statements:
    insert_order: PreparedStatement
    order_exists: PreparedStatement
    update_payment: PreparedStatement


class FactStore:
    """Reads and writes of `orders_payments_facts`. Build it with `connect()`."""

    def __init__(self, cluster: Cluster, session: Session, statements: _Statements) -> None:
        self._cluster = cluster
        self._session = session
        self._statements = statements

    @property
    def session(self) -> Session:
        return self._session

    def insert_orders(self, rows: Sequence[tuple[tuple[object, ...], int]]) -> list[StoreError | None]:
        """Write the order columns of each (order values, write timestamp); never the payment columns."""
        return self._run(self._statements.insert_order, [(*values, ts) for values, ts in rows])

    def existing_orders(self, order_ids: Sequence[int]) -> tuple[set[int], dict[int, StoreError]]:
        """Which of these orders exist, and the error for each one that could not be checked."""
        unique = list(dict.fromkeys(order_ids))
        results = execute_concurrent_with_args(
            self._session,
            self._statements.order_exists,
            [(order_id,) for order_id in unique],
            concurrency=CONCURRENCY,
            raise_on_first_error=False,
        )
        found: set[int] = set()
        failed: dict[int, StoreError] = {}
        for order_id, (ok, result) in zip(unique, results, strict=True):
            if not ok:
                failed[order_id] = translate_error(result)
            elif result.one() is not None:
                found.add(order_id)
        return found, failed

    def update_payments(self, rows: Sequence[tuple[int, tuple[object, ...], int]]) -> list[StoreError | None]:
        """Set the payment columns of existing orders: (order_id, payment values, write timestamp)."""
        return self._run(
            self._statements.update_payment,
            [(ts, *values, order_id) for order_id, values, ts in rows],
        )

    def _run(self, statement: PreparedStatement, parameters: list[tuple[object, ...]]) -> list[StoreError | None]:
        if not parameters:
            return []
        results = execute_concurrent_with_args(
            self._session, statement, parameters, concurrency=CONCURRENCY, raise_on_first_error=False
        )
        return [None if ok else translate_error(result) for ok, result in results]

    def close(self) -> None:
        self._cluster.shutdown()


def _cluster(settings: CassandraSettings) -> Cluster:
    auth = (
        PlainTextAuthProvider(settings.username, settings.password.get_secret_value() if settings.password else "")
        if settings.username
        else None
    )
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=settings.local_dc)),
        consistency_level=ConsistencyLevel.name_to_value[settings.consistency],
        request_timeout=settings.request_timeout,
    )
    return Cluster(
        list(settings.hosts),
        port=settings.port,
        auth_provider=auth,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        protocol_version=5,
        # The driver's default backoff grows to 10 minutes between reconnection attempts; a
        # consumer riding out an outage should notice the node's return within seconds.
        reconnection_policy=ExponentialReconnectionPolicy(base_delay=0.5, max_delay=10.0),
        idle_heartbeat_interval=10,
    )


def connect_session(settings: CassandraSettings, keyspace: str | None) -> tuple[Cluster, Session]:
    """A plain session (for set-up and audits); the caller shuts the cluster down."""
    cluster = _cluster(settings)
    try:
        return cluster, cluster.connect(keyspace)
    except Exception as exc:
        cluster.shutdown()
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
