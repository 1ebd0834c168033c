"""`python -m tune_unlearn.report` (and `tune-unlearn report`): the command lives in commands/report.py."""

import sys

from .commands.report import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
