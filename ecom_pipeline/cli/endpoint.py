"""A script's metrics endpoint: its series and probes, served where asked, or one error naming the flag."""

from __future__ import annotations

from collections.abc import Callable

from ..app import SCRIPTS
from ..config import CassandraSettings
from ..consumer import PULL_TIMEOUT
from ..http_server import serve
from ..metrics import ConsumerMetrics, consumer_metrics
from ..probes import Health, Probes
from .arguments import ConsumerOptions

__all__ = ["consumer_endpoint", "liveness_window", "serve_endpoint", "serve_metrics"]


def liveness_window(cassandra: CassandraSettings) -> float:
    """Stuck: no round of the loop for three times the longest a healthy round takes."""
    return 3 * max(PULL_TIMEOUT, cassandra.request_timeout)


def serve_metrics(address: str, port: int, health: Probes | None) -> Callable[[], None]:
    """Start the metrics endpoint; an `OSError` that names the option (a name with no address,
    an address not of this machine, a port taken) is the caller's."""
    try:
        return serve(address, port, health)
    except OSError as exc:
        raise OSError(
            f"cannot serve metrics on --metrics-address {address!r}, port {port}: {exc.strerror or exc}"
        ) from exc


def serve_endpoint(options: ConsumerOptions, health: Probes | None) -> Callable[[], None] | None:
    """Start the metrics endpoint if asked; `OSError` (e.g. the port is taken) is the caller's."""
    if options.metrics_port is None:
        return None
    return serve_metrics(options.metrics_address, options.metrics_port, health)


def consumer_endpoint(
    options: ConsumerOptions,
    cassandra: CassandraSettings,
    probe: Callable[[float, bool], None] | None,
    *,
    serving: bool,
) -> tuple[ConsumerMetrics | None, Health | None, Callable[[], None] | None]:
    """With a metrics port: one consumer's series, its `Health` (telling `probe`, a `--workers`
    worker's slot, at each round) and, when `serving`, the endpoint started; the function that
    stops it is the last of the three. Without a port: nothing."""
    if options.metrics_port is None:
        return None, None, None
    metrics = consumer_metrics(SCRIPTS[options.kind], options.settings.subscription)
    # Stuck: no round of the loop for three times the longest a healthy round takes.
    health = Health(liveness_window=liveness_window(cassandra), publish=probe)
    return metrics, health, serve_endpoint(options, health) if serving else None
