"""A consumer script's body: logging, the environment read once, one consumer or `--workers` of them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from ..config import CassandraSettings, PubSubSettings
from .arguments import ConsumerOptions, metrics_port
from .logs import configure_logging
from .one_consumer import run_one
from .workers import run_workers

__all__ = ["run_consumer_script"]

log = logging.getLogger(__package__)  # "ecom_pipeline.cli": the scripts' own lines, one name


def run_consumer_script(options: ConsumerOptions, environ: Mapping[str, str]) -> int:
    """The body of the consumer scripts: logging, stop signals, settings, run; the exit status."""
    configure_logging(options.log_level, log_format=options.log_format)
    try:
        # Read once, here: with --workers a bad variable is one line, not one per worker.
        options = replace(options, metrics_port=metrics_port(options.metrics_port, environ))
        pubsub, cassandra = PubSubSettings.from_env(environ), CassandraSettings.from_env(environ)
    except ValueError as exc:
        log.error("%s", exc)
        return 1
    if options.workers > 1:
        return run_workers(options, pubsub, cassandra)
    return run_one(options, pubsub, cassandra)
