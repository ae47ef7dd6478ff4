"""The local stack's script: `python stack/localstack.py up|down|status|observe` runs `stack.cli`.

The Makefile's `make stack`, `stack-down`, `stack-status` and `observe` call it, and so do the
test fixtures. With STACK=docker the same commands drive docker-compose-cassandra.yml
(stack/compose.py). Nothing else lives here: see stack/__init__.py for the package's parts.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: `stack` is a package of the checkout, not of stack/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from stack.cli import main

# A deliberate re-export: tests/unit/test_compose_file.py loads this file by its path and reads
# `Endpoints` from it (the defaults it compares with docker-compose-cassandra.yml).
from stack.common import Endpoints

__all__ = ["Endpoints", "main"]

if __name__ == "__main__":
    sys.exit(main(sys.argv))
