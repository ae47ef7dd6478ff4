"""`--workers N`: the worker processes, their probes summed in the parent, the stop passed on to each.

One final line and one exit status for all of them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from typing import Any

from prometheus_client import multiprocess

from ..config import CassandraSettings, PubSubSettings
from ..consumer import ConsumerStats
from ..metrics import MULTIPROCESS_DIR
from ..probes import WorkerProbes
from .arguments import ConsumerOptions
from .endpoint import liveness_window, serve_endpoint
from .logs import configure_logging
from .one_consumer import run_one
from .signals import STOP_SIGNALS, pass_on_to

__all__ = ["run_workers"]

log = logging.getLogger(__package__)  # "ecom_pipeline.cli": the scripts' own lines, one name


def run_workers(options: ConsumerOptions, pubsub: PubSubSettings, cassandra: CassandraSettings) -> int:
    """`--workers N`: N consumer processes on the same subscription, each with its own clients
    (Pub/Sub shares the messages out between them). SIGINT and SIGTERM are passed on to every
    worker; the exit status is 0 only if every worker exited 0; one line sums them up.

    With metrics, the workers write their series to files in a directory of their own
    (PROMETHEUS_MULTIPROC_DIR, set before they start) and this process serves the sum; its
    probes answer for every worker (`WorkerProbes`): /healthz 503 once one is gone or has made
    no round within its liveness window, /readyz 503 while one is not ready. A worker that exits
    is marked dead for prometheus_client, so its live gauges leave the sum.
    """
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no gRPC state is forked
    results = context.SimpleQueue()
    slots = context.Array("d", 2 * options.workers)
    workers = [
        context.Process(target=_worker, args=(options, pubsub, cassandra, results, slots, i), name=f"worker-{i + 1}")
        for i in range(options.workers)
    ]
    metrics_dir = None
    stop_server = None
    if options.metrics_port is not None:
        metrics_dir = tempfile.mkdtemp(prefix="ecom-pipeline-metrics-")
        os.environ[MULTIPROCESS_DIR] = metrics_dir  # inherited by the workers spawned below

        def every_worker() -> bool:
            return all(w.is_alive() for w in workers)

        health = WorkerProbes(slots, liveness_window(cassandra), processes_up=every_worker)
        try:
            stop_server = serve_endpoint(options, health)
        except OSError as exc:
            log.error("%s", exc)
            shutil.rmtree(metrics_dir, ignore_errors=True)
            return 1
    # A stop that comes while the workers start must neither kill a worker that has no handler
    # yet (it would exit -15: "did not exit cleanly") nor this process. The handlers go in first:
    # a mask is per thread, and this process has others (the driver imports numpy when it is
    # there, and its BLAS threads leave every signal unblocked), so a blocked signal is not a
    # pending one here. The mask is for the workers: each inherits it, its stop stays pending
    # until `stop_on_signals` has installed its handlers, and `catch_up` passes a stop that came
    # meanwhile to the workers started after it.
    catch_up = pass_on_to(workers)
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        for worker in workers:
            worker.start()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    catch_up()
    parts: list[ConsumerStats] = []
    marked: set[int] = set()
    while any(w.is_alive() for w in workers) or not results.empty():
        if metrics_dir is not None:  # an exited worker's live gauges (in flight) leave the sum
            for worker in workers:
                if worker.pid is not None and worker.exitcode is not None and worker.pid not in marked:
                    marked.add(worker.pid)
                    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]  # unannotated upstream
        if results.empty():
            time.sleep(0.2)  # a worker puts its stats just before it exits; read as they come
        else:
            parts.append(results.get())
    log.info("final: %d workers: %s", len(workers), ConsumerStats.merge(parts).summary())
    if stop_server is not None and metrics_dir is not None:
        stop_server()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    failed = [w.name for w in workers if w.exitcode != 0]
    if failed:
        log.error("%s did not exit cleanly", ", ".join(failed))
    return 1 if failed else 0


def _worker(
    options: ConsumerOptions,
    pubsub: PubSubSettings,
    cassandra: CassandraSettings,
    results: multiprocessing.SimpleQueue[ConsumerStats],
    slots: Any,
    index: int,
) -> None:
    configure_logging(options.log_level, multiprocessing.current_process().name, options.log_format)
    raise SystemExit(run_one(options, pubsub, cassandra, results, WorkerProbes.writer(slots, index)))
