"""The command line of `python -m ecom_pipeline.admin`: arguments, environment, the command, its status.

`setup`, `audit` or `requeue`: the environment read once, the command run, its report printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from .. import cli
from ..cassandra_io import connect_session
from ..config import CassandraSettings, PubSubSettings, optional_integer
from ..errors import PipelineError, TransientStoreError
from .accounting import audit, report_lines
from .cassandra_setup import SCHEMA, apply_schema, create_pipeline_role, pipeline_role_statements
from .pubsub_setup import ensure_subscriptions, ensure_topics, pipeline_subscriptions
from .requeuing import NewerVersions, requeue

__all__ = ["main", "replication_factor_from"]

log = logging.getLogger(__package__)  # "ecom_pipeline.admin": the command's lines, one name
T = TypeVar("T")
# What `--help` shows first.
DESCRIPTION = """Set-up and accounting: topics, subscriptions and schema (idempotent), and the audit report.

Run as `python -m ecom_pipeline.admin setup|audit` (the Makefile's `make setup`, `make audit`).
"""
PROG = "admin.py"  # the name its usage and error lines have always shown (`-m` would show __main__.py)


def replication_factor_from(environ: Mapping[str, str]) -> int | None:
    """CASSANDRA_REPLICATION_FACTOR (1 to 9), or None: keep schema.cql's."""
    return optional_integer(environ, "CASSANDRA_REPLICATION_FACTOR", low=1, high=9, noun="a number of replicas")


def _reported(run: Callable[[], T]) -> T | None:
    """`run()`, or None once its error is logged in one line (Cassandra unreachable, or what else
    a person must fix)."""
    try:
        return run()
    except TransientStoreError as exc:
        log.error("Cassandra is not reachable: %s", exc)
    except PipelineError as exc:
        log.error("%s", exc)
    return None


def _requeue_unless_newer(
    pubsub: PubSubSettings, cassandra: CassandraSettings, args: argparse.Namespace
) -> tuple[int, int, int]:
    """The requeue, with each dead letter's row checked for a newer version first (`requeue`)."""
    cluster, session = connect_session(cassandra, cassandra.keyspace)
    try:
        newer = NewerVersions(session)
        return requeue(pubsub, args.subscription, args.topic, args.max, newer.holds_newer)
    finally:
        cluster.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
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
        counts = _reported(lambda: _requeue_unless_newer(pubsub, cassandra, args))
        if counts is None:
            return 1
        moved, refused, skipped = counts
        print(f"requeued {moved} messages from {args.subscription} to {args.topic}")
        if skipped:
            print(f"not requeued {skipped} messages whose row holds a newer version (acked)")
        if refused:
            log.error("%s refused %d messages; they stay in %s", args.topic, refused, args.subscription)
            return 1
        return 0
    report = _reported(lambda: audit(pubsub, cassandra, args.first_id, args.last_id))
    if report is None:
        return 1
    for line in report_lines(report):
        print(line)
    return 0
