"""`python -m ecom_pipeline.admin ...`: runs the command line (`command.main`), nothing else."""

import sys

from .command import main

if __name__ == "__main__":
    sys.exit(main())
