"""Read a search's results and export them; works on finished and interrupted runs alike.

    python -m tune_unlearn export runs/<name> [--top 5] [--format yaml|json]

Writes into the run directory:
- results.csv: one row per trial (trial_id, status, error, hyperparameters, validation metrics,
  components, objective, the test split's columns, trial wall time), then the baselines scored
  the same way: `original` (no unlearning, time and cost 0) and `retrained-<i>` (each retrained
  model against the others: what a perfect unlearning scores), status BASELINE;
- best_config.yaml: the best finished trial as a run config (method, experiment, overrides, the
  complete hyperparameters, weights, seed), with `metrics` (validation split: what was
  optimised) and `test_metrics` (test split), so that
  `python -m tune_unlearn run --config runs/<name>/best_config.yaml` re-runs it;
- pareto.csv (multi-objective searches): the finished trials no other trial dominates;
- top<N>.yaml / top<N>.json: the N best configurations (with --top / --format).
"""

from __future__ import annotations

import argparse
import sys

from .arguments import main_guard, prog
from ..errors import UserError
from ..search.export import export_run
from ..search.summary import summary


@main_guard
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog("export"), description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a search's directory, e.g. runs/default-digits-20261122-170323, or its URI "
                                   "(s3://bucket/runs/<name>, as --storage-path gave it)")
    p.add_argument("--top", type=int, default=5, help="how many of the best configurations (default: 5)")
    p.add_argument("--format", choices=["yaml", "json"], default="yaml", help="format of top<N> (default: yaml)")
    args = p.parse_args(argv)
    if args.top < 1:
        raise UserError(f"--top must be >= 1, got {args.top}")
    from ..search.storage import RunStore

    store, name = RunStore.fetch_run(args.run_dir)
    record = export_run(store.local / name, args.top, args.format)
    store.upload(name)
    print(summary(record, record.run_dir, args.top))
    print(f"top {args.top}: {record.run_dir / f'top{args.top}.{args.format}'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
