"""The report of a search: tables and pictures in one page that opens offline.

    python -m tune_unlearn report runs/<name> [--compare runs/compare-.../compare.csv] [--top 10]

Writes runs/<name>/report/index.html, report.md and the PNG pictures they show (built by the
`analysis` package). Works on finished and interrupted searches; the page says which.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .arguments import main_guard, prog
from ..errors import UserError


@main_guard
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog("report"), description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a search's directory, e.g. runs/default-digits-20261122-170323, or its URI "
                                   "(s3://bucket/runs/<name>, as --storage-path gave it)")
    p.add_argument("--compare", metavar="CSV",
                   help="a compare.csv: adds the paper's Figure 4 (radar) and the table, and the per-example section "
                        "when compare --per-example wrote per_example.csv beside it")
    p.add_argument("--top", type=int, default=10, help="rows of the best-trials table (default: 10)")
    args = p.parse_args(argv)
    if args.compare and not Path(args.compare).is_file():
        raise UserError(f"no such compare file: {args.compare}")
    if args.top < 1:
        raise UserError(f"--top must be >= 1, got {args.top}")
    from ..reporting.report import build_report
    from ..search.storage import RunStore

    store, name = RunStore.fetch_run(args.run_dir)
    out = build_report(store.local / name, args.compare, args.top)
    store.upload(name)
    if store.uri:
        print(f"uploaded to {store.where(name)}/report/")
    print(f"report: {out / 'index.html'}\nmarkdown: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
