"""`python -m tune_unlearn.compare` (and `tune-unlearn compare`): the command lives in commands/compare.py."""

import sys

from .commands.compare import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
