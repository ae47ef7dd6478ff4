"""The adapters' pure decisions: how driver and Pub/Sub errors are classed, whether a consistency
level can ever be met, how dead letters are split into Publish requests. No service needed."""

from __future__ import annotations

import socket
from collections.abc import Sequence

import pytest
from cassandra import (
    AuthenticationFailed,
    FunctionFailure,
    InvalidRequest,
    OperationTimedOut,
    ReadFailure,
    ReadTimeout,
    Unauthorized,
    Unavailable,
    WriteFailure,
    WriteTimeout,
)
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionException
from cassandra.protocol import IsBootstrappingErrorMessage, OverloadedErrorMessage
from google.api_core import exceptions as google_exceptions
from google.pubsub_v1.types import AcknowledgeRequest, ModifyAckDeadlineRequest, PubsubMessage

from ecom_pipeline import cassandra_io, pubsub_io
from ecom_pipeline.cassandra_io import (
    MAX_BATCH_BYTES,
    estimated_size,
    plan_batches,
    row_errors,
    rows_per_batch,
    unknown_data_centre,
    unmeetable_consistency,
)
from ecom_pipeline.config import CassandraSettings
from ecom_pipeline.errors import FatalError, FatalStoreError, StoreError, TransientStoreError
from ecom_pipeline.pubsub_io import PartlyPublished, PubSubUnavailable, SyncPublisher, publish_chunks

# --- cassandra_io.translate_error ---------------------------------------------------------------

TRANSIENT = [
    Unavailable("Cannot achieve consistency level QUORUM", 4, 2, 1),
    WriteTimeout("timed out", write_type=0),
    ReadTimeout("timed out"),
    OperationTimedOut("client timeout"),
    NoHostAvailable("Unable to connect to any servers", {"127.0.0.1:9042": ConnectionRefusedError(111, "refused")}),
    # The session's own start: no pool opened; the driver lists the hosts instead of their errors.
    NoHostAvailable("Unable to connect to any servers", ["127.0.0.1"]),
    ConnectionException("connection lost"),
    ConnectionRefusedError(111, "refused"),
    OverloadedErrorMessage(0x1001, "overloaded", {}),
    IsBootstrappingErrorMessage(0x1002, "bootstrapping", {}),
]
PER_MESSAGE = [
    InvalidRequest("Undefined column name item"),
    ReadFailure("replica failed"),
    WriteFailure("replica failed"),
    FunctionFailure("udf failed", "ks", "f", []),
    RuntimeError("anything else"),
]
FATAL = [
    Unauthorized("User pipeline has no MODIFY permission"),
    AuthenticationFailed("Bad credentials"),
    NoHostAvailable("Unable to connect", {"127.0.0.1:9042": AuthenticationFailed("Bad credentials")}),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_an_outage_is_transient(error):
    translated = cassandra_io.translate_error(error)
    assert type(translated) is TransientStoreError
    assert translated.__cause__ is error


@pytest.mark.parametrize("error", PER_MESSAGE, ids=lambda e: type(e).__name__)
def test_a_failure_of_the_statement_is_a_plain_store_error(error):
    assert type(cassandra_io.translate_error(error)) is StoreError


@pytest.mark.parametrize("error", FATAL, ids=lambda e: type(e).__name__)
def test_refused_credentials_or_permissions_are_fatal(error):
    translated = cassandra_io.translate_error(error)
    assert type(translated) is FatalStoreError
    assert isinstance(translated, FatalError)


def test_no_host_with_mixed_errors_is_an_outage_not_a_login_problem():
    mixed = NoHostAvailable("x", {"a": AuthenticationFailed("bad"), "b": ConnectionRefusedError(111, "refused")})
    assert type(cassandra_io.translate_error(mixed)) is TransientStoreError


def test_a_store_error_is_passed_through():
    error = StoreError("already ours")
    assert cassandra_io.translate_error(error) is error


# --- unmeetable_consistency ---------------------------------------------------------------------

SIMPLE_1 = {"class": "org.apache.cassandra.locator.SimpleStrategy", "replication_factor": "1"}
SIMPLE_3 = {"class": "org.apache.cassandra.locator.SimpleStrategy", "replication_factor": "3"}
NTS = {"class": "org.apache.cassandra.locator.NetworkTopologyStrategy", "dc1": "3", "dc2": "1"}


@pytest.mark.parametrize(
    ("consistency", "replication", "local_dc", "reads", "problem"),
    [
        ("ONE", SIMPLE_1, "datacenter1", True, None),
        ("LOCAL_QUORUM", SIMPLE_1, "datacenter1", True, None),
        ("QUORUM", SIMPLE_1, "datacenter1", True, None),
        ("ALL", SIMPLE_1, "datacenter1", True, None),
        ("TWO", SIMPLE_1, "datacenter1", True, "needs 2 replicas, but keyspace ks has replication factor 1"),
        ("THREE", SIMPLE_1, "datacenter1", True, "needs 3 replicas, but keyspace ks has replication factor 1"),
        ("THREE", SIMPLE_3, "datacenter1", True, None),
        ("LOCAL_QUORUM", NTS, "dc1", True, None),
        ("LOCAL_ONE", NTS, "dc2", True, None),
        (
            "LOCAL_QUORUM",
            NTS,
            "dc3",
            True,
            "needs 1 replicas in data centre dc3, but keyspace ks has replication factor 0",
        ),
        ("EACH_QUORUM", NTS, "dc1", False, None),
        ("EACH_QUORUM", NTS, "dc1", True, "only supported for writes"),
        ("THREE", {"class": "NetworkTopologyStrategy", "dc1": "2/1"}, "dc1", True, "replication factor 2"),
    ],
)
def test_unmeetable_consistency(consistency, replication, local_dc, reads, problem):
    found = unmeetable_consistency(consistency, "ks", replication, local_dc, reads=reads)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found and f"CASSANDRA_CONSISTENCY={consistency}" in found


def test_host_names_that_resolve_to_nothing_are_an_outage_that_names_the_variable(monkeypatch):
    """DNS may answer later (a node's name not yet published): wait, and say which names failed."""

    def no_address(*_args: object, **_kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_address)
    with pytest.raises(TransientStoreError, match="no address for any of CASSANDRA_HOSTS: node-1, node-2"):
        cassandra_io.connect_session(CassandraSettings(hosts=("node-1", "node-2")), None)


# --- unknown_data_centre ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local_dc", "data_centres", "problem"),
    [
        (None, {"datacenter1"}, None),
        ("datacenter1", {"datacenter1"}, None),
        ("dc2", {"dc1", "dc2"}, None),
        ("dc2", set(), None),  # nothing known of the cluster yet: an outage, not a typo
        ("datacentre1", {"datacenter1"}, "CASSANDRA_LOCAL_DC=datacentre1: no node of the cluster is in it"),
        ("DC1", {"dc2", "dc1"}, "(its data centres: dc1, dc2)"),
    ],
)
def test_unknown_data_centre(local_dc, data_centres, problem):
    found = unknown_data_centre(local_dc, data_centres)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


# --- pubsub_io.translate_error ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [
        (google_exceptions.ServiceUnavailable("down"), PubSubUnavailable, "publish to t failed"),
        (google_exceptions.DeadlineExceeded("slow"), PubSubUnavailable, "failed"),
        (google_exceptions.NotFound("Topic not found"), FatalError, "dead-letter topic t does not exist"),
        (google_exceptions.PermissionDenied("no"), FatalError, "was refused"),
        (google_exceptions.Unauthenticated("no"), FatalError, "was refused"),
        (google_exceptions.FailedPrecondition("odd"), FatalError, "failed"),
    ],
)
def test_pubsub_errors_are_waited_for_or_fatal(error, kind, words):
    translated = pubsub_io.translate_error(error, "publish to t", "dead-letter topic t")
    assert type(translated) is kind and words in str(translated)


# --- dead letters: requests, attributes, refusals ----------------------------------------------


def test_publish_requests_respect_the_count_and_size_limits():
    small = [PubsubMessage(data=b"x" * 10) for _ in range(5)]
    assert publish_chunks(small, max_messages=2) == [[0, 1], [2, 3], [4]]
    sizes = [PubsubMessage.pb(m).ByteSize() for m in small]
    assert publish_chunks(small, max_bytes=2 * sizes[0]) == [[0, 1], [2, 3], [4]]
    assert publish_chunks([]) == []


class FakeRawPublisher:
    """The raw Publish call: refuses any request that holds a message whose data is b"refuse"."""

    def __init__(self, error: Exception | None = None) -> None:
        self.requests: list[list[PubsubMessage]] = []
        self.error = error

    def publish(self, *, topic: str, messages: Sequence[PubsubMessage], timeout: float, retry: object) -> None:
        self.requests.append(list(messages))
        if self.error is not None:
            raise self.error
        if any(m.data == b"refuse" for m in messages):
            raise google_exceptions.InvalidArgument("too many attributes")


def test_attributes_named_like_keywords_travel_as_a_map():
    raw = FakeRawPublisher()
    hostile = {"topic": "a", "data": "b", "ordering_key": "c", "retry": "d", "timeout": "e", "": "empty name"}
    assert SyncPublisher(raw, "projects/p/topics/t").publish([(b"x", hostile)]) == [None]  # type: ignore[arg-type]  # a fake of the generated client's publish() alone
    [[message]] = raw.requests
    assert (message.data, dict(message.attributes)) == (b"x", hostile)


def test_a_refused_dead_letter_is_isolated_and_the_rest_are_published():
    raw = FakeRawPublisher()
    letters: list[tuple[bytes, dict[str, str]]] = [(b"ok-1", {}), (b"refuse", {}), (b"ok-2", {}), (b"ok-3", {})]
    refusals = SyncPublisher(raw, "projects/p/topics/t").publish(letters)  # type: ignore[arg-type]  # a fake of the generated client's publish() alone
    assert refusals[1] is not None and "too many attributes" in refusals[1]
    assert [refusals[0], refusals[2], refusals[3]] == [None, None, None]
    accepted = [m.data for request in raw.requests if not any(x.data == b"refuse" for x in request) for m in request]
    assert sorted(accepted) == [b"ok-1", b"ok-2", b"ok-3"]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (google_exceptions.ServiceUnavailable("down"), PubSubUnavailable),
        (google_exceptions.NotFound("gone"), FatalError),
    ],
)
def test_a_dead_letter_publish_error_is_raised_as_the_pipelines_own(error, kind):
    with pytest.raises(kind):
        SyncPublisher(FakeRawPublisher(error), "projects/p/topics/t").publish([(b"x", {})])  # type: ignore[arg-type]  # a fake of the generated client's publish() alone


# --- batches of rows that share their replicas ---------------------------------------------------


def test_rows_are_batched_only_with_rows_of_the_same_replica_set():
    keys = ["a", "b", "a", "c", "b", "a"]
    assert plan_batches(keys, [10] * 6, max_rows=20, max_bytes=4096) == [[0, 2, 5], [1, 4], [3]]


def test_a_batch_holds_at_most_max_rows():
    assert plan_batches(["n"] * 7, [10] * 7, max_rows=3, max_bytes=4096) == [[0, 1, 2], [3, 4, 5], [6]]


def test_a_batch_stays_under_max_bytes_and_an_oversized_row_goes_alone():
    sizes = [1500, 1500, 1500, 5000, 100]
    assert plan_batches(["n"] * 5, sizes, max_rows=20, max_bytes=4096) == [[0, 1], [2], [3], [4]]


def test_no_rows_no_batches():
    assert plan_batches([], [], max_rows=20, max_bytes=4096) == []


def test_the_size_of_a_row_counts_utf8_bytes_of_text_and_eight_per_number():
    overhead = 20
    assert estimated_size((1, 2.5, "abc", "é", None)) == (8 + overhead) * 2 + (3 + overhead) + (2 + overhead)


def test_an_order_with_a_1000_character_address_fits_a_batch_by_itself():
    order = (1, 2, "lamp", 3, 9.5, "x" * 1000, "pending", "2026-11-25T10:00:00Z", 1_764_000_000_000_000)
    assert estimated_size(order) < MAX_BATCH_BYTES


def test_the_estimate_is_at_least_what_cassandra_counted_for_these_rows():
    """Sizes Cassandra's batch size check reported for 40-row batches of these rows (system.log)."""
    small = (1, 7, "lamp", 1, 2.5, "1 Main St", "pending", "2026-11-25T10:00:00Z", 1_764_000_000_000_000)
    large = (1, 7, "i" * 1000, 1, 2.5, "a" * 1000, "pending", "2026-11-25T10:00:00Z", 1_764_000_000_000_000)
    assert estimated_size(small) >= 9.922 * 1024 / 40
    assert estimated_size(large) >= 87.539 * 1024 / 40


def test_a_batch_refused_for_good_is_split_and_the_others_keep_their_outcome():
    refused, down = StoreError("InvalidRequest: too large"), TransientStoreError("WriteTimeout")
    lost = FatalStoreError("Unauthorized")
    batches = [[0, 1], [2, 3], [4], [5, 6], [7, 8]]
    errors, one_by_one = row_errors(batches, [None, refused, refused, down, lost], rows=9)
    assert one_by_one == [2, 3]  # only a batch of several rows refused for good is split
    assert errors == [None, None, None, None, refused, down, down, lost, lost]


@pytest.mark.parametrize(("rows", "per_batch"), [(1, 1), (50, 1), (51, 2), (300, 6), (1000, 20), (50_000, 20)])
def test_a_call_is_spread_over_enough_batches_to_keep_the_node_busy(rows, per_batch):
    assert rows_per_batch(rows) == per_batch


class RecordingSubscriber:
    """The generated client's acknowledge and modify_ack_deadline, keeping what each request said."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, list[str], int | None]] = []

    def acknowledge(self, *, request: AcknowledgeRequest, timeout: float) -> None:
        self.requests.append(("ack", request.subscription, list(request.ack_ids), None))

    def modify_ack_deadline(self, *, request: ModifyAckDeadlineRequest, timeout: float) -> None:
        self.requests.append(("lease", request.subscription, list(request.ack_ids), request.ack_deadline_seconds))


def test_acks_and_lease_changes_carry_every_id_once_in_requests_of_at_most_a_thousand():
    subscriber = RecordingSubscriber()
    client = pubsub_io.SubscriptionClient(subscriber, "projects/p/subscriptions/s")
    ids = [f"ack-{k}" for k in range(2_500)]
    client.ack(ids)
    client.modify_deadline(ids[:3], 60)
    client.nack(["ack-7"])
    path = "projects/p/subscriptions/s"
    assert subscriber.requests == [
        ("ack", path, ids[:1000], None),
        ("ack", path, ids[1000:2000], None),
        ("ack", path, ids[2000:], None),
        ("lease", path, ["ack-0", "ack-1", "ack-2"], 60),
        ("lease", path, ["ack-7"], 0),
    ]


class UnreachableSubscriber:
    """The generated client's acknowledge and modify_ack_deadline, after their default retry
    gave up on an unreachable Pub/Sub: a RetryError, which is no GoogleAPICallError."""

    def acknowledge(self, **_: object) -> None:
        raise google_exceptions.RetryError("Timeout of 60.0s exceeded", cause=None)

    def modify_ack_deadline(self, **_: object) -> None:
        raise google_exceptions.RetryError("Timeout of 60.0s exceeded", cause=None)


def test_an_ack_or_lease_change_that_gives_up_is_a_warning_not_an_exception(caplog):
    client = pubsub_io.SubscriptionClient(UnreachableSubscriber(), "projects/p/subscriptions/s")
    client.ack(["a"])
    client.modify_deadline(["a"], 60)
    client.nack(["a"])
    assert [r.levelname for r in caplog.records] == ["WARNING"] * 3


def test_a_publish_that_fails_after_its_first_request_names_what_went_out():
    """Two Publish requests (1,000 messages at most each), the second one unanswered: the caller
    must retry only its messages (all, again, would duplicate the first request's dead letters)."""

    class SecondRequestFails(FakeRawPublisher):
        def publish(self, *, topic: str, messages: Sequence[PubsubMessage], timeout: float, retry: object) -> None:
            if any(m.data == b"second" for m in messages):
                raise google_exceptions.ServiceUnavailable("gone")
            super().publish(topic=topic, messages=messages, timeout=timeout, retry=retry)

    empty: dict[str, str] = {}
    letters = [(b"refuse", empty)] + [(b"ok", empty)] * 999 + [(b"second", empty)] * 2
    with pytest.raises(PartlyPublished) as raised:
        SyncPublisher(SecondRequestFails(), "projects/p/topics/t").publish(letters)  # type: ignore[arg-type]  # a fake of the generated client's publish() alone
    assert raised.value.published == frozenset(range(1, 1000))
    assert set(raised.value.refusals) == {0} and "too many attributes" in raised.value.refusals[0]
    assert isinstance(raised.value, PubSubUnavailable)  # callers that know no better retry all
