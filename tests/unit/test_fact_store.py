"""FactStore's batch path with no Cassandra: rows grouped by their replicas into UNLOGGED batches
within the row and byte caps, one result per row mapped back to its own row, and the existence
reads split into found and failed.

The statements are the driver's own (PreparedStatement, BoundStatement, BatchStatement, and its
execute_concurrent); only the session and the cluster's replica map are fakes. The fake session
decodes every request it receives back into rows, so a test sees exactly what would be sent.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from cassandra import InvalidRequest, ReadTimeout, Unauthorized, WriteTimeout
from cassandra.cqltypes import DoubleType, ListType, LongType, UTF8Type
from cassandra.policies import WriteType
from cassandra.protocol import ColumnMetadata
from cassandra.query import BatchStatement, BatchType, BoundStatement, PreparedStatement

from ecom_pipeline.cassandra_io import FactStore, _Statements
from ecom_pipeline.errors import FatalStoreError, StoreError, TransientStoreError

PROTOCOL = 5
KEYSPACE = "ecom_store"
# Three nodes, two replicas a partition: an order's replicas follow from its id alone.
REPLICA_SETS = [
    ("10.0.0.1:9042", "10.0.0.2:9042"),
    ("10.0.0.2:9042", "10.0.0.3:9042"),
    ("10.0.0.1:9042", "10.0.0.3:9042"),
]


def replicas_of(order_id: int) -> tuple[str, ...]:
    return REPLICA_SETS[order_id % 3]


def prepared(query_id: bytes, columns: Sequence[tuple[str, Any]], partition_key: int | None) -> PreparedStatement:
    """A prepared statement as the driver builds it from Cassandra's answer to PREPARE."""
    metadata = [ColumnMetadata(KEYSPACE, "orders_payments_facts", name, kind) for name, kind in columns]
    routing = None if partition_key is None else [partition_key]
    return PreparedStatement(metadata, query_id, routing, query_id.decode(), KEYSPACE, PROTOCOL, [], None)


ORDER_COLUMNS = [
    ("order_id", LongType),
    ("customer_id", LongType),
    ("item", UTF8Type),
    ("quantity", LongType),
    ("price", DoubleType),
    ("shipping_address", UTF8Type),
    ("order_status", UTF8Type),
    ("creation_date", UTF8Type),
    ("[timestamp]", LongType),
]
PAYMENT_COLUMNS = [
    ("[timestamp]", LongType),
    ("payment_id", LongType),
    ("payment_method", UTF8Type),
    ("card_last_four", UTF8Type),
    ("payment_status", UTF8Type),
    ("payment_datetime", UTF8Type),
    ("order_id", LongType),
]
STATEMENTS = _Statements(
    insert_order=prepared(b"insert order", ORDER_COLUMNS, partition_key=0),
    order_exists=prepared(b"order exists", [("order_id", LongType)], partition_key=0),
    orders_exist=prepared(b"orders exist", [("order_id", ListType.apply_parameters([LongType]))], partition_key=None),
    update_payment=prepared(b"update payment", PAYMENT_COLUMNS, partition_key=6),
)
BY_QUERY_ID = {s.query_id: s for s in vars(STATEMENTS).values()}


@dataclass
class Request:
    """One request the session received: a batch of rows, a single row, or an existence read."""

    kind: str  # "batch", "single" or "read"
    query: bytes
    rows: list[tuple[Any, ...]]
    routing_key: bytes | None = None

    def order_ids(self) -> list[int]:
        if self.kind == "read":
            return list(self.rows[0][0])
        key = BY_QUERY_ID[self.query].routing_key_indexes[0]
        return [row[key] for row in self.rows]


class Done:
    """A ResponseFuture whose answer is known: its callback runs on the session's thread, as the
    driver's run on its event loop (execute_concurrent then sends the next statement)."""

    has_more_pages = False
    _col_names = _col_types = None  # what the driver's ResultSet reads from its future

    def __init__(self, run_on: ThreadPoolExecutor, outcome: object, gate: threading.Event | None = None) -> None:
        self._run_on, self._outcome, self._gate = run_on, outcome, gate

    def add_callbacks(self, callback, errback, callback_args=(), errback_args=()) -> None:
        def complete() -> None:
            if self._gate is not None:
                assert self._gate.wait(timeout=30), "the test never opened the gate"
            if isinstance(self._outcome, BaseException):
                errback(self._outcome, *errback_args)
                return
            try:
                callback(self._outcome, *callback_args)
            except Exception as exc:  # a fake the driver outgrew: fail the statement, never hang the test
                errback(exc, *errback_args)

        self._run_on.submit(complete)

    def clear_callbacks(self) -> None:
        pass


@dataclass
class FakeCassandra:
    """The session and the cluster's replica map. `refused`: order ids whose writes Cassandra
    refuses (a batch holding one is refused whole); `failing`: replica sets whose every request
    fails with that error; `existing`: the orders an existence read finds; `gate`, when given:
    no request is answered until it is set."""

    refused: dict[int, Exception] = field(default_factory=dict)
    failing: dict[tuple[str, ...], Exception] = field(default_factory=dict)
    existing: set[int] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)
    gate: threading.Event | None = None
    keyspace: str = KEYSPACE

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks = ThreadPoolExecutor(max_workers=1)
        self.metadata = self  # the cluster's metadata: get_replicas and token_map below
        self.lookups = 0  # get_replicas calls
        self.ring(REPLICA_SETS)

    def ring(self, ranges: Sequence[Sequence[str]] | None) -> None:
        """The token map's replicas of each token range of the keyspace, as the driver keeps them
        (None: not built yet). A new ring is a new map, as the driver builds one."""
        by_range = {token: [Host(e) for e in endpoints] for token, endpoints in enumerate(ranges or [])}
        self.token_map = FakeTokenMap({KEYSPACE: by_range} if ranges is not None else {})

    def get_replicas(self, keyspace: str, routing_key: bytes) -> list[Any]:
        assert keyspace == KEYSPACE
        self.lookups += 1
        return [Host(endpoint) for endpoint in replicas_of(LongType.deserialize(routing_key, PROTOCOL))]

    def execute_async(self, statement: Any, parameters: object = None, **_: object) -> Done:
        assert parameters is None  # bound statements carry their values
        request = decode(statement)
        with self._lock:
            self.requests.append(request)
        replica_sets = {replicas_of(order_id) for order_id in request.order_ids()}
        assert len(replica_sets) == 1, f"one request, one replica set: {request}"
        [replicas] = replica_sets
        outcome: object
        if replicas in self.failing:
            outcome = self.failing[replicas]
        elif request.kind == "read":
            outcome = [
                (order_id,) for order_id in request.order_ids() if order_id in self.existing
            ]  # tuple rows (READS)
        else:
            refusals = [self.refused[i] for i in request.order_ids() if i in self.refused]
            outcome = refusals[0] if refusals else []
        return Done(self._callbacks, outcome, self.gate)

    def written(self, kind: str | None = None) -> list[Request]:
        return [r for r in self.requests if r.kind != "read" and (kind is None or r.kind == kind)]

    def close(self) -> None:
        self._callbacks.shutdown()


@dataclass(frozen=True)
class Host:
    endpoint: str


@dataclass
class FakeTokenMap:
    tokens_to_hosts_by_ks: dict[str, dict[int, list[Host]]]


def decode(statement: Any) -> Request:
    """What the session would send, as rows of Python values."""
    if isinstance(statement, BatchStatement):
        assert statement.batch_type == BatchType.UNLOGGED
        # The driver keeps a batch's statements as (prepared?, query id, serialized values).
        entries = statement._statements_and_parameters
        assert {query for _, query, _ in entries} == {entries[0][1]}  # one statement kind a batch
        columns = BY_QUERY_ID[entries[0][1]].column_metadata
        rows = [
            tuple(column.type.deserialize(value, PROTOCOL) for column, value in zip(columns, values, strict=True))
            for _, _, values in entries
        ]
        return Request("batch", entries[0][1], rows)
    assert isinstance(statement, BoundStatement)
    query = statement.prepared_statement.query_id
    kind = "read" if query == STATEMENTS.orders_exist.query_id else "single"
    return Request(kind, query, [tuple(statement.raw_values)], statement.routing_key)


@pytest.fixture
def cassandra():
    fake = FakeCassandra()
    yield fake
    fake.close()


def store_on(cassandra: FakeCassandra) -> FactStore:
    return FactStore(cassandra, cassandra, STATEMENTS)  # the fake is both the cluster and the session


def order_row(order_id: int, item: str = "desk lamp", address: str = "1 Main St") -> tuple[tuple[object, ...], int]:
    """(order values, write timestamp) as the order handler gives them."""
    return (order_id, 7, item, 2, 19.5, address, "pending", "2026-11-25T10:00:00Z"), 1_700_000_000_000_000 + order_id


def payment_row(order_id: int) -> tuple[int, tuple[object, ...], int]:
    """(order id, payment values, write timestamp) as the payment handler gives them."""
    return order_id, (order_id + 5, "credit_card", "4242", "completed", "2026-11-25"), 1_000 + order_id


def as_sent(row: tuple[tuple[object, ...], int]) -> tuple[object, ...]:
    values, timestamp = row
    return (*values, timestamp)


def batch_sizes(requests: list[Request]) -> list[int]:
    return [len(r.rows) for r in requests]


# --- writes ------------------------------------------------------------------------------------


def test_each_batch_holds_only_rows_with_the_same_replicas_and_every_row_is_sent_once(cassandra):
    rows = [order_row(order_id) for order_id in range(1, 1_001)]
    errors = store_on(cassandra).insert_orders(rows)
    assert errors == [None] * 1_000
    sent = [row for request in cassandra.written() for row in request.rows]
    assert sorted(sent) == sorted(as_sent(row) for row in rows)  # each exactly once, values intact
    for request in cassandra.written():  # FakeCassandra also refuses a request that spans replica sets
        assert len({replicas_of(order_id) for order_id in request.order_ids()}) == 1
    assert {request.kind for request in cassandra.written()} == {"batch"}


def test_rows_whose_replicas_are_listed_in_another_order_share_their_batches(cassandra, monkeypatch):
    # The token map lists a range's replicas from its primary on: one replica set, several orders.
    def listed(keyspace: str, routing_key: bytes) -> list[Any]:
        hosts = FakeCassandra.get_replicas(cassandra, keyspace, routing_key)
        return hosts[::-1] if LongType.deserialize(routing_key, PROTOCOL) % 2 else hosts

    monkeypatch.setattr(cassandra, "get_replicas", listed)
    rows = [payment_row(3 * k) for k in range(1, 991)]  # one replica set, half of it listed reversed
    assert store_on(cassandra).update_payments(rows) == [None] * 990
    assert sorted(batch_sizes(cassandra.written()), reverse=True) == [20] * 49 + [10]


def test_a_thousand_payments_on_one_replica_set_go_in_fifty_batches_of_twenty(cassandra):
    # A payment is about 200 bytes as the batch size check counts them: the row cap binds first.
    rows = [payment_row(3 * k) for k in range(1, 1_001)]  # ids divisible by 3: one replica set
    assert store_on(cassandra).update_payments(rows) == [None] * 1_000
    assert batch_sizes(cassandra.written()) == [20] * 50


def test_when_every_token_range_has_the_same_replicas_no_row_is_looked_up(cassandra):
    # One node, or as many nodes as replicas: every range lists the same hosts, in any order.
    cassandra.ring([REPLICA_SETS[0], REPLICA_SETS[0][::-1], REPLICA_SETS[0]])
    rows = [payment_row(3 * k) for k in range(1, 1_001)]  # ids divisible by 3: that replica set
    assert store_on(cassandra).update_payments(rows) == [None] * 1_000
    assert cassandra.lookups == 0
    assert batch_sizes(cassandra.written()) == [20] * 50
    sent = sorted(row[-1] for request in cassandra.written() for row in request.rows)
    assert sent == [3 * k for k in range(1, 1_001)]


def test_a_new_ring_whose_ranges_differ_brings_back_the_lookups(cassandra):
    store = store_on(cassandra)
    cassandra.ring([REPLICA_SETS[0]] * 4)
    assert store.insert_orders([order_row(3 * k) for k in range(1, 101)]) == [None] * 100
    assert cassandra.lookups == 0
    cassandra.ring(REPLICA_SETS)  # a node joined: the ranges' replicas differ now
    rows = [order_row(order_id) for order_id in range(1, 301)]
    assert store.insert_orders(rows) == [None] * 300
    assert cassandra.lookups == 300
    for request in cassandra.written():  # the fake refuses a request that spans replica sets
        assert len({replicas_of(order_id) for order_id in request.order_ids()}) == 1


def test_a_keyspace_whose_ranges_are_not_built_yet_is_looked_up_row_by_row(cassandra):
    cassandra.ring(None)
    assert store_on(cassandra).insert_orders([order_row(3 * k) for k in range(1, 51)]) == [None] * 50
    assert cassandra.lookups == 50


def test_a_thousand_orders_on_one_replica_set_go_seventeen_to_a_batch_under_the_byte_cap(cassandra):
    # Each of these orders counts 265 bytes: its 5 numbers 8 + 20 each, its 4 texts their length
    # + 20 each (9, 9, 7, 20). 17 rows are 4,505 bytes, 18 would be 4,770: over the 4,608 cap.
    rows = [order_row(3 * k) for k in range(1, 1_001)]
    assert store_on(cassandra).insert_orders(rows) == [None] * 1_000
    assert batch_sizes(cassandra.written()) == [17] * 58 + [14]


def test_a_light_load_is_written_row_by_row(cassandra):
    rows = [order_row(order_id) for order_id in range(1, 41)]
    assert store_on(cassandra).insert_orders(rows) == [None] * 40
    assert [request.kind for request in cassandra.written()] == ["single"] * 40


def test_rows_other_calls_are_writing_count_as_waiting_so_a_backlog_fills_its_batches(cassandra):
    # A consumer with a backlog has several calls in flight at once: a small call then writes
    # full batches (a 300-row call alone would be spread six to a batch), and once they are
    # done a light load goes row by row again.
    store = store_on(cassandra)
    cassandra.gate = threading.Event()
    in_flight = [payment_row(3 * k) for k in range(1, 701)]  # one replica set, 200-byte rows
    with ThreadPoolExecutor(max_workers=2) as calls:
        first = calls.submit(store.update_payments, in_flight)
        while not cassandra.requests:  # the first call is writing, and nothing is answered yet
            assert not first.done()
            threading.Event().wait(0.01)
        second = calls.submit(store.update_payments, [payment_row(3 * k) for k in range(701, 1_001)])
        while len({r.order_ids()[0] for r in cassandra.written()} & {3 * k for k in range(701, 1_001)}) == 0:
            threading.Event().wait(0.01)
        cassandra.gate.set()
        assert first.result(timeout=30) == [None] * 700 and second.result(timeout=30) == [None] * 300
    later_ids = {3 * k for k in range(701, 1_001)}
    assert [len(r.rows) for r in cassandra.written() if set(r.order_ids()) <= later_ids] == [20] * 15
    cassandra.requests.clear()
    assert store.insert_orders([order_row(order_id) for order_id in range(1, 41)]) == [None] * 40
    assert [request.kind for request in cassandra.written()] == ["single"] * 40


def test_rows_of_two_kilobytes_go_two_to_a_batch_and_one_larger_than_a_batch_goes_alone(cassandra):
    # About 2,240 bytes a row as Cassandra's batch size check counts them (cassandra_io): two
    # stay under the 4,608-byte cap, three do not, though the row cap here is 20.
    rows = [order_row(3 * k, item="i" * 1_000, address="a" * 1_000) for k in range(1, 1_001)]
    rows[500] = order_row(3 * 501, item="i" * 5_000, address="a" * 1_000)
    assert store_on(cassandra).insert_orders(rows) == [None] * 1_000
    requests = cassandra.written()
    [alone] = [request for request in requests if request.order_ids() == [3 * 501]]
    assert alone.kind == "single"
    assert sorted(batch_sizes(requests)) == [1, 1] + [2] * 499  # it, and the last row left over


def test_a_batch_refused_for_good_is_written_again_row_by_row_and_only_the_bad_row_fails(cassandra):
    rows = [order_row(3 * k) for k in range(1, 1_001)]
    bad = 3 * 437
    cassandra.refused[bad] = InvalidRequest("Error from server: code=2200 [Invalid query] message=bad value")
    errors = store_on(cassandra).insert_orders(rows)
    position = [values[0] for values, _ in rows].index(bad)
    assert type(errors[position]) is StoreError and "InvalidRequest" in str(errors[position])
    assert [e for i, e in enumerate(errors) if i != position] == [None] * 999
    [refused_batch] = [r for r in cassandra.written("batch") if bad in r.order_ids()]
    retried = [order_id for request in cassandra.written("single") for order_id in request.order_ids()]
    assert sorted(retried) == sorted(refused_batch.order_ids()) and len(retried) == 17


@pytest.mark.parametrize(
    ("failure", "translated"),
    [
        (
            WriteTimeout(
                "Operation timed out - received only 1 responses.", consistency=6, write_type=WriteType.UNLOGGED_BATCH
            ),
            TransientStoreError,
        ),
        (Unauthorized("User ecom_pipeline has no MODIFY permission"), FatalStoreError),
    ],
)
def test_a_batch_that_fails_for_every_row_gives_each_row_the_error_and_is_not_split(cassandra, failure, translated):
    ids = range(1, 1_001)
    cassandra.failing[REPLICA_SETS[1]] = failure  # the orders whose id % 3 == 1
    errors = store_on(cassandra).insert_orders([order_row(order_id) for order_id in ids])
    expected = [translated if order_id % 3 == 1 else None for order_id in ids]
    assert [None if error is None else type(error) for error in errors] == expected
    assert cassandra.written("single") == []  # retried whole later, never row by row


def test_payments_are_routed_by_their_order_and_sent_as_timestamp_values_order_id(cassandra):
    rows = [payment_row(order_id) for order_id in range(1, 1_001)]
    cassandra.refused[700] = InvalidRequest("bad value")
    errors = store_on(cassandra).update_payments(rows)
    assert [i + 1 for i, error in enumerate(errors) if error is not None] == [700]
    sent = [row for request in cassandra.written("batch") for row in request.rows]
    assert (1_001, 6, "credit_card", "4242", "completed", "2026-11-25", 1) in sent
    for request in cassandra.written():
        assert len({replicas_of(order_id) for order_id in request.order_ids()}) == 1


def test_nothing_to_write_sends_nothing(cassandra):
    assert store_on(cassandra).insert_orders([]) == [] and store_on(cassandra).update_payments([]) == []
    assert cassandra.requests == []


# --- existence reads -----------------------------------------------------------------------------


def test_existing_orders_are_found_and_those_on_failing_replicas_each_get_the_error(cassandra):
    cassandra.existing = set(range(2, 301, 2))
    cassandra.failing[REPLICA_SETS[2]] = ReadTimeout("Operation timed out - received only 0 responses.")
    asked = [*range(1, 301), 5, 6, 7]  # a repeated id is looked up once
    found, failed = store_on(cassandra).existing_orders(asked)
    unreachable = {i for i in range(1, 301) if i % 3 == 2}
    assert found == {i for i in range(2, 301, 2) if i not in unreachable}
    assert set(failed) == unreachable
    assert {type(error) for error in failed.values()} == {TransientStoreError}
    reads = [r for r in cassandra.requests if r.kind == "read"]
    assert sorted(i for r in reads for i in r.order_ids()) == list(range(1, 301))


def test_an_existence_read_asks_at_most_fifty_orders_of_one_replica_set_and_goes_to_one_of_them(cassandra):
    store_on(cassandra).existing_orders(list(range(1, 1_001)))
    reads = [r for r in cassandra.requests if r.kind == "read"]
    assert max(len(r.order_ids()) for r in reads) == 50
    for read in reads:
        assert read.routing_key is not None
        routed_to = replicas_of(LongType.deserialize(read.routing_key, PROTOCOL))
        assert {replicas_of(order_id) for order_id in read.order_ids()} == {routed_to}
