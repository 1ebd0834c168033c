"""`python -m tune_unlearn.search`, the form users know: the same command as `tune-unlearn search`
(commands/search.py). The one module of search/ that reaches up to commands/: it is a program,
not a part anything imports."""

import sys

from ..commands.search import main

sys.exit(main())
