"""`python -m tune_unlearn.search`: see command.py."""

import sys

from .command import main

sys.exit(main())
