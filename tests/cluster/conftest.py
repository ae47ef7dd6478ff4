"""Fixtures for the fault tests on a local three-node cluster (`make test-cluster`).

The integration fixtures serve here too: `stack_env` brings the stack up with the caller's
CASSANDRA_NODES=3 and sets the keyspace up with CASSANDRA_REPLICATION_FACTOR=3.
"""

from __future__ import annotations

import os

import pytest

from stack.common import MAX_NODES
from tests.integration.conftest import (  # the same fixtures, for these tests
    cql,
    first_id,
    pytest_collection_modifyitems,
    run_script,
    stack_env,
    topics,
)

__all__ = ["cql", "first_id", "pytest_collection_modifyitems", "run_script", "stack_env", "topics"]


@pytest.fixture(scope="session", autouse=True)
def three_nodes() -> None:
    """These tests need the local cluster; say so at once on a single node."""
    if os.environ.get("CASSANDRA_NODES") != str(MAX_NODES) or os.environ.get("CASSANDRA_REPLICATION_FACTOR") != "3":
        pytest.fail("run these with `make test-cluster` (CASSANDRA_NODES=3, CASSANDRA_REPLICATION_FACTOR=3)")
