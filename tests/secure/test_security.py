"""The pipeline against a secured Cassandra (issue 15): its own least-privilege role over TLS,
wrong passwords, refused privileges, refused plaintext, and a password that shows up nowhere."""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
from cassandra import Unauthorized
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import Cluster, NoHostAvailable, Session

from ecom_pipeline.admin import create_pipeline_role
from ecom_pipeline.config import CassandraSettings
from stack.secure import ADMIN_PASSWORD, ADMIN_ROLE, PIPELINE_PASSWORD, PIPELINE_ROLE, client_tls
from tests.integration.conftest import Topics, consumer_args, final_counts, wait_for
from tests.integration.test_hardening import refusal
from tests.integration.test_pipeline import ORDERS, ORDERS_DLQ, PAYMENTS, PAYMENTS_DLQ, order, payment, rows_in

from .conftest import login, make_foreign_ca


def test_the_consumers_apply_and_dead_letter_as_usual_with_the_pipelines_role(
    run_script, topics: Topics, cql: Session, first_id: int, stack_env: dict[str, str]
) -> None:
    assert stack_env["CASSANDRA_USERNAME"] == PIPELINE_ROLE
    topics.publish_json(ORDERS, [order(first_id + i) for i in range(5)])
    topics.publish(ORDERS, b"{broken")
    topics.publish_json(PAYMENTS, [payment(first_id + i) for i in range(3)] + [payment(first_id + 100)])
    for script, source, dead in (
        ("order_data_consumer.py", ORDERS, ORDERS_DLQ),
        ("ingest_in_fact_table.py", PAYMENTS, PAYMENTS_DLQ),
    ):
        consumer = run_script(script, *consumer_args(topics, source, dead, "--exit-after-idle", 3))
        assert consumer.wait(120) == 0, consumer.output()
    rows = rows_in(cql, first_id, 5)
    assert len(rows) == 5 and sum(row.payment_id is not None for row in rows.values()) == 3
    assert topics.drain(ORDERS_DLQ, expected=1)[0].message.attributes["error"] == "invalid_json"
    [orphan] = topics.drain(PAYMENTS_DLQ, expected=1)
    assert json.loads(orphan.message.data)["order_id"] == first_id + 100


def test_a_wrong_password_ends_a_consumer_with_one_line_and_is_never_retried(
    run_script, topics: Topics, stack_env: dict[str, str]
) -> None:
    wrong = "not-the-password-7f3a9"  # pragma: allowlist secret  (a wrong password, on purpose)
    consumer = run_script(
        "order_data_consumer.py", *consumer_args(topics, ORDERS, ORDERS_DLQ), env={"CASSANDRA_PASSWORD": wrong}
    )
    assert consumer.wait(60) == 1, consumer.output()
    output = consumer.output()
    [line] = [line for line in output.splitlines() if " ERROR " in line]
    # The driver's NoHostAvailable as cassandra_io.translate_error words it (a FatalStoreError:
    # every node refused the login), holding Cassandra's own refusal of a password: code 0100,
    # Bad credentials. (A node down or a certificate refused reads differently.)
    node = f"{stack_env['CASSANDRA_HOSTS']}:{stack_env['CASSANDRA_PORT']}"
    refused = (
        f"Failed to authenticate to {node}: Error from server: code=0100 [Bad credentials] "
        f'message="Provided username {PIPELINE_ROLE} and/or password are incorrect"'
    )
    _date, _time, logged = line.split(" ", 2)
    assert logged == (
        f"ERROR ecom_pipeline.cli: NoHostAvailable: ('Unable to connect to any servers', "
        f"{{'{node}': AuthenticationFailed('{refused}')}})"
    ), line
    assert "not reachable" not in output and "Traceback" not in output
    assert wrong not in output


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE ecom_store.orders_payments_facts",
        "CREATE KEYSPACE intruder WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        "SELECT * FROM system_auth.roles",
        "ALTER TABLE ecom_store.orders_payments_facts ADD note text",
        "CREATE ROLE intruder WITH LOGIN = true AND PASSWORD = 'x'",
    ],
)
def test_the_pipelines_role_is_refused_what_it_does_not_need(stack_env: dict[str, str], statement: str) -> None:
    cluster, session = login(PIPELINE_ROLE, PIPELINE_PASSWORD.read_text().strip())
    try:
        with pytest.raises(Unauthorized):
            session.execute(statement)
        assert session.execute("SELECT count(*) FROM orders_payments_facts LIMIT 1").one() is not None  # what it may do
    finally:
        cluster.shutdown()


def test_a_plaintext_connection_to_the_secured_node_is_refused(stack_env: dict[str, str]) -> None:
    cluster = Cluster(
        ["127.0.0.1"],
        protocol_version=5,
        connect_timeout=5,
        auth_provider=PlainTextAuthProvider(PIPELINE_ROLE, PIPELINE_PASSWORD.read_text().strip()),
    )
    try:
        with pytest.raises(NoHostAvailable):
            cluster.connect()
    finally:
        cluster.shutdown()


def test_the_password_is_in_no_log_line_no_help_no_error_and_no_argument_list(
    run_script, topics: Topics, cql: Session, first_id: int, stack_env: dict[str, str]
) -> None:
    password = stack_env["CASSANDRA_PASSWORD"]
    consumer = run_script("order_data_consumer.py", *consumer_args(topics, ORDERS, ORDERS_DLQ, "--log-level", "DEBUG"))
    topics.publish_json(ORDERS, [order(first_id)])
    wait_for(lambda: rows_in(cql, first_id, 1), 60, "the order written")
    arguments = Path(f"/proc/{consumer.process.pid}/cmdline").read_bytes().decode(errors="replace")
    every_process = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    consumer.stop(signal.SIGTERM)
    assert consumer.wait(30) == 0
    assert final_counts(consumer.output())["applied"] == 1
    helper = run_script("order_data_consumer.py", "--help")
    assert helper.wait(30) == 0
    refused = run_script(
        "order_data_consumer.py", *consumer_args(topics, ORDERS, ORDERS_DLQ), env={"CASSANDRA_PASSWORD": password + "x"}
    )
    assert refused.wait(60) == 1
    for where, text in (
        ("the consumer's log at DEBUG", consumer.output()),
        ("--help", helper.output()),
        ("the error of a refused login", refused.output()),
        ("its argument list", arguments),
        ("ps", every_process),
    ):
        assert password not in text, where


def test_a_ca_that_did_not_sign_the_nodes_certificate_ends_a_consumer_with_one_line_naming_it(
    run_script, topics: Topics, tmp_path: Path, stack_env: dict[str, str]
) -> None:
    """Issue 22: the consumer retried for ever, printing the driver's whole error at every retry.
    A certificate that every node fails is a setting to fix: one line that names it, exit 1."""
    foreign = make_foreign_ca(tmp_path)
    consumer = run_script(
        "order_data_consumer.py",
        *consumer_args(topics, ORDERS, ORDERS_DLQ),
        env={"CASSANDRA_SSL_CA_CERT": str(foreign)},
    )
    line = refusal(consumer, timeout=60)
    assert "CASSANDRA_SSL_CA_CERT" in line and "certificate" in line, line
    assert "not reachable" not in consumer.output()  # no retry line before it


def test_setup_as_the_pipelines_role_is_refused_with_one_line(run_script, stack_env: dict[str, str]) -> None:
    """The role may not create a keyspace (CREATE KEYSPACE IF NOT EXISTS is checked all the same):
    issue 22's traceback of a refused statement, now one line and exit 1."""
    assert stack_env["CASSANDRA_USERNAME"] == PIPELINE_ROLE
    line = refusal(run_script("-m", "ecom_pipeline.admin", "setup", "--wait", 10), timeout=120)
    assert "Unauthorized" in line and PIPELINE_ROLE in line, line


def test_a_pipeline_role_whose_password_holds_quotes_and_cql_logs_in_with_exactly_that_password(
    cql: Session, stack_env: dict[str, str]
) -> None:
    """Issue 22: the password is a CQL string literal in CREATE ROLE's text (Cassandra takes no
    bind marker there), quoted by the driver's encoder; whatever it holds, it is one literal."""
    role = f"pipeline_check_{uuid.uuid4().hex[:8]}"
    password = "it's 'quoted'; DROP ROLE cassandra; -- 100%s $$ \\ é"  # pragma: allowlist secret  (made up)
    admin = CassandraSettings.from_env(
        {**stack_env, "CASSANDRA_USERNAME": ADMIN_ROLE, "CASSANDRA_PASSWORD": ADMIN_PASSWORD.read_text().strip()}
    )
    try:
        create_pipeline_role(admin, role, password)
        cluster, session = login(role, password)
        try:
            assert session.execute("SELECT count(*) FROM orders_payments_facts LIMIT 1").one() is not None
        finally:
            cluster.shutdown()
        wrong = Cluster(
            ["127.0.0.1"],
            protocol_version=5,
            auth_provider=PlainTextAuthProvider(role, password[:-1]),
            ssl_context=client_tls(),
        )
        try:
            with pytest.raises(NoHostAvailable):  # and only that password
                wrong.connect()
        finally:
            wrong.shutdown()
        assert cql.execute("SELECT role FROM system_auth.roles WHERE role = %s", (ADMIN_ROLE,)).one() is not None
    finally:
        cql.execute(f"DROP ROLE IF EXISTS {role}")
