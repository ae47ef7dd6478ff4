"""The operator's commands: set-up (Pub/Sub, then Cassandra), the audit, and the requeue.

Run as `python -m ecom_pipeline.admin setup|audit|requeue` (`make setup`, `make audit`; the
requeue in docs/dead-letters.md). One room a job: `command` (the command line) over
`pubsub_setup` (topics, subscriptions), `cassandra_setup` (schema, replication, role),
`accounting` (the audit) and `requeuing` (with its check for a newer version of the row).
"""

from __future__ import annotations

from .accounting import AUDIT_BLIND_SPOT, Waiting, audit, count_waiting, report_lines
from .cassandra_setup import (
    SCHEMA,
    apply_schema,
    create_pipeline_role,
    password_literal,
    pipeline_role_statements,
    replication_statement,
    schema_statements,
)
from .command import main, replication_factor_from
from .pubsub_setup import (
    SubscriptionSpec,
    ensure_subscriptions,
    ensure_topics,
    patience,
    pipeline_subscriptions,
    subscription_request,
)
from .requeuing import NewerVersions, Version, requeue, version_of

__all__ = [
    "AUDIT_BLIND_SPOT",
    "SCHEMA",
    "NewerVersions",
    "SubscriptionSpec",
    "Version",
    "Waiting",
    "apply_schema",
    "audit",
    "count_waiting",
    "create_pipeline_role",
    "ensure_subscriptions",
    "ensure_topics",
    "main",
    "password_literal",
    "patience",
    "pipeline_role_statements",
    "pipeline_subscriptions",
    "replication_factor_from",
    "replication_statement",
    "report_lines",
    "requeue",
    "schema_statements",
    "subscription_request",
    "version_of",
]
