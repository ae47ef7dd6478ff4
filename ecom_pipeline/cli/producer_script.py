"""The body of the producer scripts: publish mock records, flush, summarise; the exit status."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterator, Mapping

from ..config import PubSubSettings
from ..errors import PipelineError
from ..metrics import producer_metrics
from ..mockdata import MockData
from ..producer import publish
from ..pubsub_io import connect_publisher, translate_error
from .arguments import metrics_port
from .endpoint import serve_metrics
from .logs import configure_logging
from .signals import FORCED_EXIT, stop_on_signals

__all__ = ["run_producer_script"]

log = logging.getLogger(__package__)  # "ecom_pipeline.cli": the scripts' own lines, one name


def run_producer_script(
    script: str, args: argparse.Namespace, messages: Callable[[MockData], Iterator[bytes]], environ: Mapping[str, str]
) -> int:
    """The body of the producer scripts: publish, flush, summarise; 1 if any publish failed."""
    configure_logging(args.log_level, log_format=args.log_format)
    stop = stop_on_signals()
    stop_server = None
    try:
        settings = PubSubSettings.from_env(environ)
        publisher = connect_publisher(settings)
        port = metrics_port(args.metrics_port, environ)
        metrics = None
        if port is not None:
            metrics = producer_metrics(script, args.topic)
            stop_server = serve_metrics(args.metrics_address, port, None)
    except (ValueError, PipelineError, OSError) as exc:
        log.error("%s", exc)
        return 1
    try:
        stats = publish(
            publisher,
            settings.topic_path(args.topic),
            messages(MockData(args.seed)),
            count=args.count,
            rate=args.rate,
            stop=stop,
            metrics=metrics,
        )
    except KeyboardInterrupt:
        log.warning("forced exit: messages not yet confirmed may not have been published")
        return FORCED_EXIT
    finally:
        if stop_server is not None:
            stop_server()
    if stats.fatal is not None:
        log.error("%s", translate_error(stats.fatal, f"publish to {args.topic}", f"topic {args.topic}"))
    log.info("final: %s", stats.summary())
    return 1 if stats.failed or stats.published < stats.submitted else 0
