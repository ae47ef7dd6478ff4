"""Apply dead-lettered payments whose order has arrived since (`dlq_payments_data-sub`).

A payment whose order now exists is applied exactly as ingest_in_fact_table.py would, with its
original event time, and leaves the dead-letter topic. One still without its order stays in
`dlq_payments_data`, untouched, and is tried again when its age has grown by 40 % (at least 5 s,
at most 10 minutes later): a payment that raced ahead of its order is applied seconds after the
order. An invalid one is looked at once per 10 minutes and left for a person. When the replay
stops, everything it deferred is visible in the dead-letter subscription again at once.
Run it continuously, or on a schedule with `--exit-after-idle` (see docs/replay.md).
"""

from __future__ import annotations

import os
import sys

from ecom_pipeline import cli
from ecom_pipeline.app import Kind


def main(argv: list[str] | None = None) -> int:
    args = cli.consumer_parser(__doc__, Kind.REPLAY).parse_args(argv)
    return cli.run_consumer_script(cli.consumer_options(Kind.REPLAY, args), os.environ)


if __name__ == "__main__":
    sys.exit(main())
