"""What the top-level scripts call: their arguments, then the run of a consumer or a producer.

One room a job, each importing only the rooms below it: `consumer_script` and `producer_script`
(a script's body) -> `workers` (`--workers N`) -> `one_consumer` (one consumer process) ->
`endpoint` (the metrics endpoint and its probes) -> `arguments`, `logs`, `signals`.

Exit statuses: 0 after a clean stop (Ctrl-C, SIGTERM, `--exit-after-idle`); 1 when something
needs a person (a missing topic, refused credentials, a bad variable: one error line says
what); 2 for a bad flag (argparse); 130 when a second signal forced the exit.
"""

from __future__ import annotations

from .arguments import (
    ConsumerOptions,
    HelpFormatter,
    add_log_level,
    add_producer_arguments,
    consumer_options,
    consumer_parser,
    metrics_port,
    ranged,
)
from .consumer_script import run_consumer_script
from .logs import JsonFormatter, configure_logging
from .producer_script import run_producer_script
from .signals import FORCED_EXIT, stop_on_signals

__all__ = [
    "FORCED_EXIT",
    "ConsumerOptions",
    "HelpFormatter",
    "JsonFormatter",
    "add_log_level",
    "add_producer_arguments",
    "configure_logging",
    "consumer_options",
    "consumer_parser",
    "metrics_port",
    "ranged",
    "run_consumer_script",
    "run_producer_script",
    "stop_on_signals",
]
