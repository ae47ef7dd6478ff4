"""The scripts' command line: ranges refused with a usage error, defaults shown, typed options,
and the two-signal stop. No service needed."""

from __future__ import annotations

import argparse
import os
import signal

import pytest

from ecom_pipeline import cli
from ecom_pipeline.app import Kind
from ecom_pipeline.config import ConsumerSettings


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


@pytest.mark.parametrize("argv", [["--count", "-1"], ["--rate", "-0.5"], ["--start-id", "0"]])
def test_out_of_range_producer_flags_are_usage_errors(argv, capsys):
    parser = argparse.ArgumentParser()
    cli.add_producer_arguments(parser, "orders_data", "orders")
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(argv)
    assert exit_.value.code == 2
    assert argv[0] in capsys.readouterr().err


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


def test_a_second_signal_forces_the_exit():
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        stop = cli.stop_on_signals()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
