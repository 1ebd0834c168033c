"""`python -m tune_unlearn.export` (and `tune-unlearn export`): the command lives in commands/export.py."""

import sys

from .commands.export import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
