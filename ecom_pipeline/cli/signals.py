"""Stop signals: SIGINT and SIGTERM as one stop, a second Ctrl-C as a forced exit, passed on to workers."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess

__all__ = ["FORCED_EXIT", "STOP_SIGNALS", "pass_on_to", "stop_on_signals"]

log = logging.getLogger(__package__)  # "ecom_pipeline.cli": the scripts' own lines, one name
FORCED_EXIT = 130  # the shell's status for "ended by SIGINT"
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGUSR1}


def stop_on_signals(*, worker: bool = False) -> threading.Event:
    """An event set by SIGINT or SIGTERM: the scripts finish what is in flight and exit 0.

    SIGTERM is one stop however many copies of it arrive (`kill -TERM -PGID` and systemd's
    KillMode=control-group reach a `--workers` worker directly and again through its parent).
    A second SIGINT (Ctrl-C) forces the exit, once: KeyboardInterrupt, the consumer stops waiting,
    hands every message it holds back to Pub/Sub, and exits with FORCED_EXIT; later signals are
    ignored, so the hand-backs run to their end.

    A `--workers` worker ignores SIGINT (a terminal's Ctrl-C reaches the whole process group) and
    is forced by the SIGUSR1 its parent sends on a second Ctrl-C.
    """
    stop = threading.Event()
    forced = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if not stop.is_set():
            stop.set()  # set before logging: a second signal can interrupt this handler's own logging
            log.info("%s received, stopping (Ctrl-C again to force)", name)
        elif signum != signal.SIGTERM:
            _force(signum, _frame)

    def _force(signum: int, _frame: object) -> None:
        stop.set()
        if forced.is_set():
            return
        forced.set()
        log.warning("%s received again: forced exit, handing back what is held", signal.Signals(signum).name)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.SIG_IGN if worker else _stop)
    signal.signal(signal.SIGTERM, _stop)
    if worker:
        signal.signal(signal.SIGUSR1, _force)
    # A `--workers` worker starts with them blocked (see `workers.run_workers`): what came
    # meanwhile is delivered now, to the handlers above.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    return stop


def pass_on_to(workers: Sequence[BaseProcess]) -> Callable[[], None]:
    """The `--workers` parent's handlers for SIGINT and SIGTERM: each passes the stop on to every
    worker running. Installed before the workers start; the function returned passes a stop that
    came while they started to those started since."""
    passing: int | None = None  # the signal passed on: SIGTERM, then SIGUSR1 to force
    told: dict[int, int] = {}  # each worker's pid: the signal it was sent last

    def _pass(sig: int) -> None:
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None and told.get(worker.pid) != sig:
                told[worker.pid] = sig
                os.kill(worker.pid, sig)

    def _forward(signum: int, _frame: object) -> None:
        """The first signal stops the workers (SIGTERM); a second Ctrl-C forces them (SIGUSR1);
        another SIGTERM is the same stop (see stop_on_signals)."""
        nonlocal passing
        if passing is not None and signum == signal.SIGTERM:
            return
        passing = signal.SIGTERM if passing is None else signal.SIGUSR1
        log.info(
            "%s received, %s %d workers",
            signal.Signals(signum).name,
            "forcing" if passing == signal.SIGUSR1 else "stopping",
            len(workers),
        )
        _pass(passing)

    def catch_up() -> None:
        if passing is not None:
            _pass(passing)

    signal.signal(signal.SIGINT, _forward)
    signal.signal(signal.SIGTERM, _forward)
    return catch_up
