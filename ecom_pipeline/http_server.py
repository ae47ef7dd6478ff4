"""The HTTP server of a script: /metrics (prometheus_client's text format), /healthz and /readyz.

`GET /healthz` answers 200 while the consumer loop makes rounds and 503 once it has made none
for its liveness window; `GET /readyz` answers 200 once Pub/Sub and Cassandra have answered and
503 while either is unavailable (`probes.py`). With `--workers N`, /metrics is the sum of the
workers' files in PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app, multiprocess
from prometheus_client.process_collector import ProcessCollector

from .metrics import MULTIPROCESS_DIR
from .probes import Probes

__all__ = ["serve"]

log = logging.getLogger(__name__)


class _Server(ThreadingMixIn, WSGIServer):
    """A thread per connection, none waited for at exit: a client that connects and sends
    nothing (a TCP probe) holds its own thread only, not the probes or the shutdown."""

    daemon_threads = True
    block_on_close = False


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


def _is_ipv6(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).version == 6
    except ValueError:
        return False


class _QuietHandler(WSGIRequestHandler):
    timeout = 10  # seconds a connection may stay silent before it is closed

    def log_message(self, format: str, *args: object) -> None:  # wsgiref's own signature
        """Scrapes every few seconds are not worth a log line each."""


def serve(address: str, port: int, health: Probes | None) -> Callable[[], None]:
    """Serve /metrics, /healthz and /readyz on a daemon thread; return a function that stops it.

    With PROMETHEUS_MULTIPROC_DIR set, /metrics is the sum over the worker processes' files,
    plus this process's own process metrics.
    """
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # unannotated upstream
        ProcessCollector(registry=registry)
        metrics_app = make_wsgi_app(registry)
    else:
        metrics_app = make_wsgi_app()

    def app(environ: dict[str, object], start_response: Callable[..., object]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if path in ("/healthz", "/readyz"):
            ok = health is None or (health.alive() if path == "/healthz" else health.ready())
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"unavailable\n"]
        return metrics_app(environ, start_response)  # type: ignore[no-any-return]  # prometheus_client's app is untyped

    ipv6 = _is_ipv6(address)  # wsgiref's server is IPv4 only unless told otherwise
    server_class = _IPv6Server if ipv6 else _Server
    server = make_server(address, port, app, server_class=server_class, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    log.info("metrics on http://%s:%d/metrics", f"[{address}]" if ipv6 else address, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop
