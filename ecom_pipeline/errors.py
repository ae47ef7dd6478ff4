"""The pipeline's domain exceptions, in one place. Adapters raise these `from` the library error."""

from __future__ import annotations

__all__ = [
    "FatalError",
    "FatalStoreError",
    "InvalidMessage",
    "PipelineError",
    "ServiceUnavailable",
    "StoreError",
    "TransientStoreError",
]


class PipelineError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class FatalError(PipelineError):
    """Nothing will work until a person changes something (a missing topic, a refused login).

    The consumer hands every message it holds back to Pub/Sub and exits non-zero with this
    message as its one error line: retrying would wedge it, and nacking message by message
    would push the whole stream through the subscription's dead-letter policy.
    """


class ServiceUnavailable(PipelineError):
    """A service did not answer or is overloaded: wait with backoff, for as long as it lasts."""


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


class TransientStoreError(StoreError, ServiceUnavailable):
    """Cassandra is unreachable, overloaded or timing out: retry later, never dead-letter."""


class FatalStoreError(StoreError, FatalError):
    """Cassandra refuses every statement of ours (authentication, authorisation): stop."""
