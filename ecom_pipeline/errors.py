"""The pipeline's domain exceptions, in one place. Adapters raise these `from` the library error."""

from __future__ import annotations

__all__ = ["InvalidMessage", "StoreError", "TransientStoreError", "PipelineError"]


class PipelineError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class InvalidMessage(PipelineError):
    """A message that can never be applied: it goes to the dead-letter topic with this reason.

    `code` is a short machine-readable reason (`invalid_json`, ...); `detail` says which field
    and what was wrong, for a person reading the dead-letter topic.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class StoreError(PipelineError):
    """Cassandra refused a statement for a reason that retrying will not fix by itself."""


class TransientStoreError(StoreError):
    """Cassandra is unreachable, overloaded or timing out: retry later, never dead-letter."""
