"""schema.cql as the setup applies it, and the subscriptions the setup creates."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import google.auth
import pytest
from cassandra import OperationTimedOut, ReadTimeout, Unauthorized
from cassandra.protocol import SyntaxException
from google.auth.exceptions import DefaultCredentialsError

from ecom_pipeline import admin, cli
from ecom_pipeline.admin import (
    SCHEMA,
    Version,
    accounting,
    cassandra_setup,
    command,
    pipeline_role_statements,
    pipeline_subscriptions,
    replication_factor_from,
    replication_statement,
    report_lines,
    requeue,
    requeuing,
    schema_statements,
    subscription_request,
    version_of,
)
from ecom_pipeline.config import CassandraSettings, PubSubSettings
from ecom_pipeline.errors import FatalError, FatalStoreError, PipelineError, StoreError, TransientStoreError
from ecom_pipeline.messages import ORDER_COLUMNS, PAYMENT_COLUMNS
from ecom_pipeline.pubsub_io import Received
from tests.unit.conftest import ROOT, encode, order_dict, payment_dict, received

# The design's table, column by column, in order.
DESIGN_COLUMNS = {
    "order_id": "BIGINT",
    "customer_id": "BIGINT",
    "item": "TEXT",
    "quantity": "BIGINT",
    "price": "DOUBLE",
    "shipping_address": "TEXT",
    "order_status": "TEXT",
    "creation_date": "TEXT",
    "payment_id": "BIGINT",
    "payment_method": "TEXT",
    "card_last_four": "TEXT",
    "payment_status": "TEXT",
    "payment_datetime": "TEXT",
}


@pytest.fixture(scope="module")
def schema_text() -> str:
    return SCHEMA.read_text()


def table_columns(create_table: str) -> list[tuple[str, str, str]]:
    """(name, type, rest) for each column definition of a CREATE TABLE statement."""
    body = create_table[create_table.index("(") + 1 : create_table.rindex(")")]
    columns = []
    for definition in body.split(","):
        name, cql_type, *rest = definition.split()
        columns.append((name, cql_type.upper(), " ".join(rest).upper()))
    return columns


def test_the_setup_reads_the_schema_file_at_the_project_root():
    assert SCHEMA == ROOT / "schema.cql"


def test_schema_cql_splits_into_a_keyspace_and_a_table(schema_text):
    statements = schema_statements("ecom_store", schema_text)
    assert len(statements) == 2
    assert statements[0].upper().startswith("CREATE KEYSPACE IF NOT EXISTS ECOM_STORE")
    assert statements[1].upper().startswith("CREATE TABLE IF NOT EXISTS ECOM_STORE.ORDERS_PAYMENTS_FACTS")


def test_the_statements_carry_no_comments_or_semicolons(schema_text):
    for statement in schema_statements("ecom_store", schema_text):
        assert "--" not in statement
        assert ";" not in statement


def test_the_keyspace_is_simple_strategy_with_one_replica(schema_text):
    keyspace = re.sub(r"\s+", " ", schema_statements("ecom_store", schema_text)[0])
    assert "'class': 'SimpleStrategy'" in keyspace
    assert "'replication_factor': 1" in keyspace


def test_the_keyspace_name_is_substituted_everywhere(schema_text):
    statements = schema_statements("ecom_test_42", schema_text)
    assert all("ecom_store" not in statement for statement in statements)
    assert "KEYSPACE IF NOT EXISTS ecom_test_42" in statements[0]
    assert "TABLE IF NOT EXISTS ecom_test_42.orders_payments_facts" in statements[1]


def test_substitution_touches_only_the_whole_keyspace_word():
    schema = "CREATE TABLE ecom_store.t (ecom_store_note TEXT PRIMARY KEY);"
    assert schema_statements("k1", schema) == ["CREATE TABLE k1.t (ecom_store_note TEXT PRIMARY KEY)"]


def test_the_table_has_exactly_the_designs_13_columns_and_types(schema_text):
    columns = table_columns(schema_statements("ecom_store", schema_text)[1])
    assert len(columns) == 13
    assert {name: cql_type for name, cql_type, _ in columns} == DESIGN_COLUMNS
    assert [name for name, _, _ in columns] == list(DESIGN_COLUMNS)


def test_order_id_alone_is_the_primary_key(schema_text):
    columns = table_columns(schema_statements("ecom_store", schema_text)[1])
    assert [name for name, _, rest in columns if "PRIMARY KEY" in rest] == ["order_id"]


def test_the_table_is_the_order_columns_then_the_payment_columns(schema_text):
    columns = [name for name, _, _ in table_columns(schema_statements("ecom_store", schema_text)[1])]
    assert tuple(columns[:8]) == ORDER_COLUMNS
    assert tuple(columns[8:]) == PAYMENT_COLUMNS


def test_the_column_parser_sees_a_changed_type():
    columns = table_columns("CREATE TABLE k.t (order_id BIGINT PRIMARY KEY, price FLOAT)")
    assert columns == [("order_id", "BIGINT", "PRIMARY KEY"), ("price", "FLOAT", "")]


# --- subscriptions ------------------------------------------------------------------------------


def test_every_subscription_is_named_topic_dash_sub():
    specs = pipeline_subscriptions()
    assert {spec.topic: spec.name for spec in specs} == {
        "orders_data": "orders_data-sub",
        "payments_data": "payments_data-sub",
        "dlq_orders_data": "dlq_orders_data-sub",
        "dlq_payments_data": "dlq_payments_data-sub",
    }


def test_the_input_subscriptions_dead_letter_to_their_dlq_topics():
    dead_letter_topics = {spec.topic: spec.dead_letter_topic for spec in pipeline_subscriptions()}
    assert dead_letter_topics["orders_data"] == "dlq_orders_data"
    assert dead_letter_topics["payments_data"] == "dlq_payments_data"


def test_the_dlq_subscriptions_have_no_dead_letter_policy_of_their_own():
    dead_letter_topics = {spec.topic: spec.dead_letter_topic for spec in pipeline_subscriptions()}
    assert dead_letter_topics["dlq_orders_data"] is None
    assert dead_letter_topics["dlq_payments_data"] is None


def test_the_input_subscriptions_dead_letter_only_after_the_most_attempts_pub_sub_allows():
    """Issue 21: every hand-back (a nack, a restart) counts as a delivery attempt, so 5 pushed
    valid messages into the DLQ raw; the consumer dead-letters near the limit itself now, and
    the policy is a backstop at Pub/Sub's maximum, 100."""
    settings = PubSubSettings("p")
    policies = {
        spec.name: subscription_request(settings, spec).get("dead_letter_policy") for spec in pipeline_subscriptions()
    }
    assert policies == {
        "orders_data-sub": {"dead_letter_topic": "projects/p/topics/dlq_orders_data", "max_delivery_attempts": 100},
        "payments_data-sub": {"dead_letter_topic": "projects/p/topics/dlq_payments_data", "max_delivery_attempts": 100},
        "dlq_orders_data-sub": None,
        "dlq_payments_data-sub": None,
    }


def test_the_limit_is_one_the_consumer_can_import_from_config():
    from ecom_pipeline.config import MAX_DELIVERY_ATTEMPTS

    assert MAX_DELIVERY_ATTEMPTS == 100


# --- replication from configuration ----------------------------------------------------------


def test_three_replicas_in_the_clusters_data_centre():
    assert replication_statement("ecom_store", 3, "datacenter1", nodes=3) == (
        "ALTER KEYSPACE ecom_store WITH replication = {'class': 'NetworkTopologyStrategy', 'datacenter1': 3}"
    )


def test_more_replicas_than_nodes_is_refused():
    """Cassandra takes it (with a warning); then no write at LOCAL_QUORUM ever has its replicas,
    and the consumers would wait for nodes that do not exist."""
    with pytest.raises(ValueError, match="CASSANDRA_REPLICATION_FACTOR=3 is more than the 1 nodes in datacenter1"):
        replication_statement("ecom_store", 3, "datacenter1", nodes=1)


@pytest.mark.parametrize(("environ", "factor"), [({}, None), ({"CASSANDRA_REPLICATION_FACTOR": " 3 "}, 3)])
def test_the_replication_factor_comes_from_the_environment(environ, factor):
    assert replication_factor_from(environ) == factor


@pytest.mark.parametrize("text", ["0", "10", "three", "-1"])
def test_a_bad_replication_factor_names_its_variable(text):
    with pytest.raises(ValueError, match="CASSANDRA_REPLICATION_FACTOR must be a number of replicas from 1 to 9"):
        replication_factor_from({"CASSANDRA_REPLICATION_FACTOR": text})


def test_the_pipelines_role_may_select_and_modify_the_fact_table_and_nothing_else():
    create = "CREATE ROLE IF NOT EXISTS ecom_pipeline WITH LOGIN = true AND SUPERUSER = false AND PASSWORD ="
    assert pipeline_role_statements("ecom_store", "ecom_pipeline", "pw-1") == [
        f"{create} 'pw-1'",
        "GRANT SELECT ON TABLE ecom_store.orders_payments_facts TO ecom_pipeline",
        "GRANT MODIFY ON TABLE ecom_store.orders_payments_facts TO ecom_pipeline",
    ]


@pytest.mark.parametrize(
    ("password", "literal"),
    [
        # In a CQL string literal only the quote is special, written twice (no backslash escapes);
        # these literals are written out by hand, not by the encoder under test.
        ("it's", "'it''s'"),
        ("'; DROP ROLE cassandra; --", "'''; DROP ROLE cassandra; --'"),
        ("100%s %d %%", "'100%s %d %%'"),  # the statement is sent as it is: no %-formatting
        ("$$ \\' \n é", "'$$ \\'' \n é'"),
    ],
)
def test_the_password_is_one_cql_string_literal_whatever_it_holds(password, literal):
    """Cassandra 5.0.9 refuses a bind marker after PASSWORD ("mismatched input '?' expecting
    STRING_LITERAL", prepared or not): the password is quoted by the driver's encoder instead."""
    [create, *_] = pipeline_role_statements("ecom_store", "ecom_pipeline", password)
    expected = "CREATE ROLE IF NOT EXISTS ecom_pipeline WITH LOGIN = true AND SUPERUSER = false AND PASSWORD = "
    assert create == expected + literal


def test_a_password_that_is_not_utf8_text_names_its_variable():
    """A variable whose bytes are not UTF-8 reaches Python as lone surrogates, which no CQL text
    can carry (the driver would fail with a UnicodeEncodeError half-way through set-up)."""
    with pytest.raises(ValueError, match=r"^CASSANDRA_PIPELINE_PASSWORD is not UTF-8"):
        pipeline_role_statements("ecom_store", "ecom_pipeline", "caf\udce9")


@pytest.mark.parametrize("role", ["Pipeline", "a b", "x; DROP ROLE cassandra", "", "1st"])
def test_a_role_name_that_is_not_a_plain_identifier_is_refused(role):
    with pytest.raises(ValueError, match="CASSANDRA_PIPELINE_ROLE must be a plain CQL identifier"):
        pipeline_role_statements("ecom_store", role, "pw-1")


# --- requeue and audit, over fakes of the pipeline's own Pub/Sub and Cassandra adapters ---------


class RedeliveringSource:
    """A dead-letter subscription: what is nacked (or never acked) is pulled again."""

    def __init__(self, messages: list[Received]) -> None:
        self.waiting = list(messages)
        self.acked: list[str] = []
        self.nacked: list[str] = []
        self.leased: set[str] = set()
        self.pulls = 0

    def ack_deadline(self) -> int:
        return 60

    def pull(self, max_messages: int, timeout: float) -> list[Received]:
        self.pulls += 1
        assert self.pulls < 100, "requeue pulls the same messages again and again"
        batch = [m for m in self.waiting if m.ack_id not in self.leased][:max_messages]
        return batch

    def ack(self, ack_ids: Sequence[str]) -> None:
        self.acked.extend(ack_ids)
        self.waiting = [m for m in self.waiting if m.ack_id not in ack_ids]

    def modify_deadline(self, ack_ids: Sequence[str], seconds: int) -> None:
        if seconds == 0:
            self.nacked.extend(ack_ids)
            self.leased -= set(ack_ids)
        else:
            self.leased |= set(ack_ids)

    def nack(self, ack_ids: Sequence[str]) -> None:
        self.modify_deadline(ack_ids, 0)

    def close(self) -> None:
        pass


class RefusingTarget:
    """An input topic that refuses, for good, messages whose data is b"refused"."""

    def check(self) -> None:
        pass

    def publish(self, messages: Sequence[tuple[bytes, Mapping[str, str]]]) -> list[str | None]:
        return [
            "InvalidArgument: does not match the topic's schema" if data == b"refused" else None for data, _ in messages
        ]

    def close(self) -> None:
        pass


def test_requeue_ends_and_leaves_what_the_topic_refuses_in_the_dead_letter_subscription(monkeypatch):
    dead = [received(data, message_id=f"m{i}") for i, data in enumerate([b"ok", b"refused", b"ok"])]
    source = RedeliveringSource(dead)
    monkeypatch.setattr(requeuing, "connect_subscriber", lambda *_: source)
    monkeypatch.setattr(requeuing, "connect_sync_publisher", lambda *_: RefusingTarget())
    assert requeue(PubSubSettings("p"), "dlq_orders_data-sub", "orders_data", limit=1000) == (2, 1, 0)
    assert sorted(source.acked) == ["ack-m0", "ack-m2"] and source.nacked == ["ack-m1"]


def test_requeue_acks_without_republishing_a_dead_letter_whose_row_holds_a_newer_version(monkeypatch):
    dead = [received(b"ok", message_id=f"m{i}") for i in range(3)]
    source = RedeliveringSource(dead)
    published: list[bytes] = []

    class Target(RefusingTarget):
        def publish(self, messages: Sequence[tuple[bytes, Mapping[str, str]]]) -> list[str | None]:
            published.extend(data for data, _ in messages)
            return [None] * len(messages)

    monkeypatch.setattr(requeuing, "connect_subscriber", lambda *_: source)
    monkeypatch.setattr(requeuing, "connect_sync_publisher", lambda *_: Target())
    stale = {"m1"}
    moved = requeue(PubSubSettings("p"), "dlq_orders_data-sub", "orders_data", 1000, lambda m: m.message_id in stale)
    assert moved == (2, 0, 1)
    assert len(published) == 2 and sorted(source.acked) == ["ack-m0", "ack-m1", "ack-m2"]


def test_the_version_of_a_dead_letter_is_its_row_column_and_first_write_time():
    first = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    order = received(
        encode(order_dict(order_id=41)),
        message_id="9000000000000002",
        publish_time=first + timedelta(hours=1),
        attributes={"source_publish_time": first.isoformat(), "source_message_id": "4000000000000007"},
    )
    # docs/guarantees.md's rule, written here: the millisecond in microseconds, plus the id modulo 1,000.
    expected = (first - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1) * 1000 + 7
    assert version_of(order) == Version(41, "item", expected)
    payment = received(encode(payment_dict(order_id=42)), message_id="9000000000000003")
    assert version_of(payment) is not None and version_of(payment).column == "payment_id"  # type: ignore[union-attr]  # checked just before
    assert version_of(received(b"not json")) is None


def test_an_audit_whose_reads_fail_is_a_store_error(monkeypatch):
    class Store:
        session = type("Session", (), {"prepare": lambda self, _: None})()

        def close(self) -> None:
            pass

    def timing_out(*_: object, **__: object) -> None:
        raise ReadTimeout("Operation timed out", consistency=1, required_responses=1, received_responses=0)

    monkeypatch.setattr(accounting, "connect", lambda *_: Store())
    monkeypatch.setattr(accounting, "execute_concurrent_with_args", timing_out)
    with pytest.raises(TransientStoreError, match="ReadTimeout"):
        admin.audit(PubSubSettings("p"), CassandraSettings(), 1, 10)


def test_the_audit_says_in_one_line_that_messages_leased_by_a_running_consumer_are_not_counted():
    """Issue 21: the audit printed `waiting_in_dlq_payments_data 0` while the replay held 40 dead
    letters it had deferred; a pull cannot see leased messages, so the report says so."""
    report = {"orders_in_range": 10, "rows": 10, "rows_with_payment": 8, "waiting_in_dlq_payments_data": 0}
    lines = report_lines(report)
    assert lines[:4] == [
        "orders_in_range               10",
        "rows                          10",
        "rows_with_payment             8",
        "waiting_in_dlq_payments_data  0",
    ]
    [caveat] = [line for line in lines if "not counted" in line]
    assert "leased" in caveat and "running consumer" in caveat and "replay" in caveat


# --- setup's refusals: one line, exit 1, no traceback (issue 22) -------------------------------


def free_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_setup_without_credentials_for_real_pub_sub_is_fatal_and_says_what_to_set(monkeypatch):
    def no_credentials(*_: object, **__: object) -> None:
        raise DefaultCredentialsError("Your default credentials were not found.")

    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    monkeypatch.setattr(google.auth, "default", no_credentials)
    with pytest.raises(FatalError, match=r"PUBSUB_EMULATOR_HOST.*Application Default Credentials"):
        admin.ensure_topics(PubSubSettings("p"), ["orders_data"])


def test_setup_with_pub_sub_unreachable_gives_up_after_its_wait_with_one_error(monkeypatch):
    host = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", host)
    with pytest.raises(PipelineError, match=rf"Pub/Sub did not answer within 1 s \(PUBSUB_EMULATOR_HOST={host}\)"):
        admin.ensure_topics(PubSubSettings("p", host), ["orders_data"], wait=1)


class RefusingSession:
    """A session whose statements all fail with `error` (as the driver raises it)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def execute(self, *_: object, **__: object) -> None:
        raise self.error


class RecordingSession:
    def __init__(self) -> None:
        self.executed: list[tuple[object, ...]] = []

    def execute(self, *args: object, **__: object) -> None:
        self.executed.append(args)


class Cluster:
    def shutdown(self) -> None:
        pass


UNAUTHORIZED = Unauthorized(
    'Error from server: code=2100 [Unauthorized] message="User ecom_pipeline has no CREATE permission on '
    '<all keyspaces> or any of its parents"'
)


@pytest.mark.parametrize(
    ("error", "kind"), [(UNAUTHORIZED, FatalStoreError), (OperationTimedOut("errors={}", None), TransientStoreError)]
)
def test_a_statement_cassandra_refuses_during_setup_is_the_pipelines_error(monkeypatch, error, kind):
    monkeypatch.setattr(cassandra_setup, "connect_session", lambda *_, **__: (Cluster(), RefusingSession(error)))
    with pytest.raises(kind):
        admin.apply_schema(CassandraSettings(), SCHEMA.read_text())
    with pytest.raises(kind):
        admin.create_pipeline_role(CassandraSettings(), "ecom_pipeline", "a password")


def run_setup(monkeypatch, caplog, *, pubsub_error: Exception | None = None, cql_error: Exception | None = None):
    """`admin setup --wait 0` with Pub/Sub and Cassandra replaced by what fails: its exit status
    and its error lines (an exception escaping main would be a traceback)."""

    def topics(*_: object, **__: object) -> None:
        if pubsub_error is not None:
            raise pubsub_error

    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "p")
    monkeypatch.setattr(cli, "configure_logging", lambda *_, **__: None)
    monkeypatch.setattr(command, "ensure_topics", topics)
    monkeypatch.setattr(command, "ensure_subscriptions", lambda *_, **__: None)
    session = RecordingSession() if cql_error is None else RefusingSession(cql_error)
    monkeypatch.setattr(cassandra_setup, "connect_session", lambda *_, **__: (Cluster(), session))
    with caplog.at_level(logging.ERROR):
        status = admin.main(["setup", "--wait", "0"])
    return status, [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_setup_refused_by_cassandra_is_one_line_and_exit_1(monkeypatch, caplog):
    status, errors = run_setup(monkeypatch, caplog, cql_error=UNAUTHORIZED)
    assert status == 1
    [line] = errors
    assert "Unauthorized" in line and "no CREATE permission" in line


def test_setup_whose_statement_times_out_until_the_wait_is_over_is_one_line_and_exit_1(monkeypatch, caplog):
    status, errors = run_setup(monkeypatch, caplog, cql_error=OperationTimedOut("errors={}", "127.0.0.1:9042"))
    assert status == 1
    [line] = errors
    assert "Cassandra did not answer" in line and "OperationTimedOut" in line


def test_setup_without_pub_sub_is_one_line_and_exit_1(monkeypatch, caplog):
    status, errors = run_setup(monkeypatch, caplog, pubsub_error=FatalError("no Google Cloud credentials: ..."))
    assert (status, errors) == (1, ["no Google Cloud credentials: ..."])


def test_the_role_statements_go_out_as_they_are_with_no_parameters(monkeypatch):
    """No parameters: the driver would %-format the text, and a '%' in the password would break it."""
    session = RecordingSession()
    monkeypatch.setattr(cassandra_setup, "connect_session", lambda *_, **__: (Cluster(), session))
    admin.create_pipeline_role(CassandraSettings(), "ecom_pipeline", "100%s")
    assert session.executed == [(s,) for s in pipeline_role_statements("ecom_store", "ecom_pipeline", "100%s")]


def test_a_syntax_error_of_the_create_role_statement_does_not_show_its_text(monkeypatch):
    """Cassandra quotes the statement it cannot parse, and that text holds the password."""
    echo = SyntaxException(code=0x2000, message="line 1:98 mismatched input (...PASSWORD = 's3cret-pw'...)", info={})
    monkeypatch.setattr(cassandra_setup, "connect_session", lambda *_, **__: (Cluster(), RefusingSession(echo)))
    with pytest.raises(StoreError) as raised:
        admin.create_pipeline_role(CassandraSettings(), "ecom_pipeline", "s3cret-pw")
    assert "s3cret-pw" not in str(raised.value) and "syntax" in str(raised.value)


def test_setup_refuses_a_bad_role_or_password_before_it_touches_pub_sub(monkeypatch, caplog):
    monkeypatch.setenv("CASSANDRA_PIPELINE_ROLE", "ecom_pipeline")
    monkeypatch.setenv("CASSANDRA_PIPELINE_PASSWORD", "caf\udce9")
    status, errors = run_setup(monkeypatch, caplog, pubsub_error=AssertionError("Pub/Sub was called"))
    assert status == 1
    [line] = errors
    assert line.startswith("CASSANDRA_PIPELINE_PASSWORD is not UTF-8")
