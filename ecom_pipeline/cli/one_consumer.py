"""One consumer process (the script, or a `--workers` worker): its stop, endpoint, run and exit status."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable

from ..app import run_consumer
from ..config import CassandraSettings, PubSubSettings
from ..consumer import ConsumerStats
from ..errors import PipelineError
from .arguments import ConsumerOptions
from .endpoint import consumer_endpoint
from .signals import FORCED_EXIT, stop_on_signals

__all__ = ["run_one"]

log = logging.getLogger(__package__)  # "ecom_pipeline.cli": the scripts' own lines, one name


def run_one(
    options: ConsumerOptions,
    pubsub: PubSubSettings,
    cassandra: CassandraSettings,
    results: multiprocessing.SimpleQueue[ConsumerStats] | None = None,
    probe: Callable[[float, bool], None] | None = None,
) -> int:
    """One consumer: the script itself, or a `--workers` worker (`results`: where its stats go;
    `probe`: where its liveness and readiness go; the parent serves the metrics and probes)."""
    worker = results is not None
    stop = stop_on_signals(worker=worker)
    stop_server = None
    try:
        metrics, health, stop_server = consumer_endpoint(options, cassandra, probe, serving=not worker)
        stats = run_consumer(options.kind, pubsub, cassandra, options.settings, stop, metrics=metrics, health=health)
    except (ValueError, PipelineError, OSError) as exc:  # ValueError: a variable; OSError: the port
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.warning("forced exit")
        return FORCED_EXIT
    finally:
        if stop_server is not None:
            stop_server()
    if results is not None:
        results.put(stats)
    return 0
