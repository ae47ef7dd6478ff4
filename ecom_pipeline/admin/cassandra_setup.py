"""Set-up on Cassandra: the schema (schema.cql), its replication, and the pipeline's own role."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cassandra.encoder import cql_quote
from cassandra.protocol import SyntaxException

from ..cassandra_io import TABLE, connect_session, translate_error
from ..config import CassandraSettings
from ..errors import PipelineError, StoreError

__all__ = [
    "SCHEMA",
    "apply_schema",
    "create_pipeline_role",
    "password_literal",
    "pipeline_role_statements",
    "replication_statement",
    "schema_statements",
]

log = logging.getLogger(__package__)  # "ecom_pipeline.admin": the command's lines, one name
SCHEMA = Path(__file__).resolve().parent.parent.parent / "schema.cql"
_ROLE_NAME = re.compile(r"[a-z][a-z0-9_]{0,47}")  # fullmatch: `$` would let a trailing newline in


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
