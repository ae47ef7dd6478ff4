"""The scripts' command line: ranges refused with a usage error, defaults shown, typed options,
and the two-signal stop. No service needed."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from ecom_pipeline import cli
from ecom_pipeline.app import Kind
from ecom_pipeline.cli.signals import pass_on_to
from ecom_pipeline.config import ConsumerSettings
from ecom_pipeline.http_server import serve

from .conftest import ROOT


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--batch-size", "0"], "--batch-size: must be an integer between 1 and 1000, not '0'"),
        (["--batch-size", "1001"], "between 1 and 1000"),
        (["--batch-size", "1.5"], "between 1 and 1000"),
        (["--ack-deadline", "9"], "--ack-deadline: must be an integer between 10 and 600"),
        (["--ack-deadline", "601"], "between 10 and 600"),
        (["--exit-after-idle", "0"], "--exit-after-idle: must be a number greater than 0"),
        (["--exit-after-idle", "nan"], "greater than 0"),
        (["--stats-interval", "-1"], "greater than 0"),
        (["--workers", "0"], "--workers: must be an integer between 1 and 64"),
        (["--workers", "65"], "between 1 and 64"),
    ],
)
def test_out_of_range_consumer_flags_are_usage_errors(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.consumer_parser(None, Kind.ORDERS).parse_args(argv)
    assert exit_.value.code == 2
    assert words in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--count", "-1"],
        ["--rate", "-0.5"],
        ["--rate", "nan"],
        ["--rate", "1e-10"],  # one message every 300 years: beyond what threading can wait (OverflowError)
        ["--rate", "0.0009"],
        ["--start-id", "0"],
    ],
)
def test_out_of_range_producer_flags_are_usage_errors(argv, capsys):
    parser = argparse.ArgumentParser()
    cli.add_producer_arguments(parser, "orders_data", "orders")
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(argv)
    assert exit_.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_a_rate_is_0_or_at_least_a_thousandth(capsys):
    parser = argparse.ArgumentParser()
    cli.add_producer_arguments(parser, "orders_data", "orders")
    assert [parser.parse_args(["--rate", rate]).rate for rate in ("0", "0.001", "2500")] == [0, 0.001, 2500]
    with pytest.raises(SystemExit):
        parser.parse_args(["--rate", "1e-10"])
    assert "--rate: must be 0 (as fast as possible) or a number at least 0.001, not '1e-10'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kind", "subscription", "dead_letter_topic"),
    [
        (Kind.ORDERS, "orders_data-sub", "dlq_orders_data"),
        (Kind.PAYMENTS, "payments_data-sub", "dlq_payments_data"),
        (Kind.REPLAY, "dlq_payments_data-sub", "dlq_payments_data"),
    ],
)
def test_consumer_options_are_typed_and_carry_the_designs_names(kind, subscription, dead_letter_topic):
    args = cli.consumer_parser(None, kind).parse_args(["--batch-size", "200", "--workers", "2"])
    options = cli.consumer_options(kind, args)
    assert options == cli.ConsumerOptions(
        kind=kind,
        settings=ConsumerSettings(subscription=subscription, dead_letter_topic=dead_letter_topic, batch_size=200),
        workers=2,
        log_level="INFO",
    )


def test_help_shows_every_default_and_no_none(capsys):
    with pytest.raises(SystemExit):
        cli.consumer_parser("doc", Kind.REPLAY).parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in (
        "(default: 1000)",
        "(default: 60)",
        "(default: 5.0)",
        "(default: 1)",
        "(default: INFO)",
        "(default: dlq_payments_data-sub)",
    ):
        assert default in text
    assert "None" not in text


@contextlib.contextmanager
def saved_handlers() -> Iterator[None]:
    kinds = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
    previous = [signal.getsignal(kind) for kind in kinds]
    try:
        yield
    finally:
        for kind, handler in zip(kinds, previous, strict=True):
            signal.signal(kind, handler)


def test_a_second_ctrl_c_forces_the_exit_once_and_later_signals_are_ignored():
    with saved_handlers():
        stop = cli.stop_on_signals()
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # a third one must not cut the hand-backs short
        os.kill(os.getpid(), signal.SIGTERM)


def test_any_number_of_sigterms_is_one_stop():
    # kill -TERM -PGID reaches a --workers worker directly and again through its parent.
    with saved_handlers():
        stop = cli.stop_on_signals()
        for _ in range(3):
            os.kill(os.getpid(), signal.SIGTERM)
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):  # Ctrl-C after a SIGTERM still forces
            os.kill(os.getpid(), signal.SIGINT)


def test_a_worker_ignores_sigint_stops_on_sigterm_and_is_forced_by_sigusr1():
    with saved_handlers():
        stop = cli.stop_on_signals(worker=True)
        os.kill(os.getpid(), signal.SIGINT)  # a terminal's Ctrl-C, which the parent also got
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)  # what the parent forwards, maybe twice
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGUSR1)  # the parent's second Ctrl-C


class Slot:
    """What `pass_on_to` reads of a worker: its pid once started, its exit code once ended."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.child = subprocess.Popen(["sleep", "60"])

    @property
    def pid(self) -> int | None:
        return None if self.child is None else self.child.pid

    @property
    def exitcode(self) -> int | None:
        return None if self.child is None else self.child.poll()


def test_a_stop_while_the_workers_start_reaches_the_ones_started_after_it():
    started, later = Slot(), Slot()
    with saved_handlers():
        catch_up = pass_on_to([started, later])  # type: ignore[list-item]  # duck-typed workers
        try:
            started.start()
            os.kill(os.getpid(), signal.SIGTERM)  # the stop, while `later` has no process yet
            assert started.child is not None and started.child.wait(10) == -signal.SIGTERM
            later.start()
            assert later.exitcode is None
            catch_up()
            assert later.child is not None and later.child.wait(10) == -signal.SIGTERM
        finally:
            for slot in (started, later):
                if slot.child is not None and slot.child.poll() is None:
                    slot.child.kill()
                    slot.child.wait()


def test_json_logs_are_one_object_per_line_with_what_cloud_logging_reads():
    record = logging.LogRecord(
        "ecom_pipeline.consumer", logging.WARNING, __file__, 1, "retry %d in %.1f s", (2, 0.5), None
    )
    record.created = 1_764_000_000.25
    entry = json.loads(cli.JsonFormatter("worker-2").format(record))
    assert entry == {
        "severity": "WARNING",
        "message": "retry 2 in 0.5 s",
        "time": "2025-11-24T16:00:00.250+00:00",
        "logger": "ecom_pipeline.consumer",
        "worker": "worker-2",
    }


def test_json_logs_carry_the_exception_inside_the_one_line():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = cli.JsonFormatter().format(record)
    assert "\n" not in line and "RuntimeError: boom" in json.loads(line)["message"]


def _refusal(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """The consumer script run with only `variables` of the pipeline's own; it must stop before
    it connects to anything."""
    own = ("CASSANDRA_", "PUBSUB_", "GOOGLE_", "METRICS_", "PROMETHEUS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    env |= {"GOOGLE_CLOUD_PROJECT": "ecom-local", "PUBSUB_EMULATOR_HOST": "127.0.0.1:1", **variables}
    command = [sys.executable, str(ROOT / "order_data_consumer.py"), *args]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_a_bad_variable_with_workers_is_one_line_from_the_parent_and_no_worker_starts():
    done = _refusal("--workers", "3", CASSANDRA_PORT="abc")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].endswith("ERROR ecom_pipeline.cli: CASSANDRA_PORT must be an integer from 1 to 65535, not 'abc'")


@pytest.mark.parametrize("address", ["bad host", "192.0.2.1"])  # no name, no address of this machine
def test_a_metrics_address_the_machine_has_not_is_one_line_naming_the_option(address):
    done = _refusal("--metrics-address", address, "--metrics-port", "9")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert f"ERROR ecom_pipeline.cli: cannot serve metrics on --metrics-address {address!r}, port 9: " in lines[0]


def test_the_metrics_endpoint_serves_on_an_ipv6_literal():
    with socket.socket(socket.AF_INET6) as probe:  # a free port (these machines have ::1)
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    stop = serve("::1", port, None)
    try:
        with urllib.request.urlopen(f"http://[::1]:{port}/healthz", timeout=10) as answer:
            assert (answer.status, answer.read()) == (200, b"ok\n")
    finally:
        stop()


def test_a_silent_connection_neither_blocks_the_probes_nor_the_exit():
    # A TCP probe or a port scanner that connects and sends nothing.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stop = serve("127.0.0.1", port, None)
    silent = socket.create_connection(("127.0.0.1", port))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert (answer.status, answer.read()) == (200, b"ok\n")
    finally:
        stopping = threading.Thread(target=stop, daemon=True)
        stopping.start()
        stopping.join(5)
        silent.close()
    assert not stopping.is_alive(), "stopping the endpoint waited for the silent connection"
