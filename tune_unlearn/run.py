"""`python -m tune_unlearn.run` (and `tune-unlearn run`): the command lives in commands/run.py."""

import sys

from .commands.run import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
