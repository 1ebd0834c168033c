"""Every method side by side, on several forget sets, against the retrained reference.

    python -m tune_unlearn compare --experiment fmnist --seeds 0 1 2
    python -m tune_unlearn compare --experiment fmnist --forget-fraction 0.02 --seeds 1 2 3 \\
        --methods selective fanchuan kookmin --configs runs/*/best_config.yaml
    python -m tune_unlearn compare --experiment fmnist --forget-classes 3 --seeds 0 1 2

Seed s chooses the forget set (forget.seed = s) and seeds every method's run, so the spread
covers both. Each method runs with its defaults, or with a tuned configuration from
`--configs` (a search's best_config.yaml). The retrained reference for each forget set is
trained once and cached, as in every run.

Writes, in `--out` (default runs/compare-<experiment>-<time>/):
- compare.csv: one row per (method, configuration, seed), appended as each run ends; re-running
  with the same --out skips the rows already there, so a killed comparison loses nothing;
- compare.md: mean and spread of retain, forget and test accuracy, MIA, cost and time per
  method, each beside the retrained models, plus the objective; the original model and the
  retrained models (each scored against the others) are scored the same way;
- with --per-example N: per_example.csv and per_example.json (tune_unlearn/per_example/), the
  competition's forgetting quality and a likelihood-ratio attack per method, from ensembles of
  N models, on the experiment's forget set.

Every figure is the test split's: the validation split is what searches tune on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from .arguments import add_experiment_args, experiment_overrides, main_guard, parse_weights, prog
from ..errors import Diverged, UserError
from ..data.experiment import DEFAULT_EXPERIMENT
from ..files import default_cache_dir, log_stderr
from ..methods import method_names
from ..evaluation.per_example.limits import MIN_MODELS as PER_EXAMPLE_MIN_MODELS
from ..progress_bar import Progress
from ..reporting.comparison import ORIGINAL, RETRAINED, append_row, markdown, read_rows
from ..run_config import load_run_config, resolve_run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog("compare"), description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="forget-set and run seeds (default: 0 1 2)")
    p.add_argument("--methods", nargs="+", help="methods to compare (default: every registered method)")
    p.add_argument("--configs", nargs="+", default=[], metavar="YAML",
                   help="tuned configurations (best_config.yaml); they replace their method's defaults")
    p.add_argument("--weight", action="append", default=[], metavar="NAME=VALUE", help="objective weight")
    p.add_argument("--leakage", action="store_true",
                   help="also measure leakage: forget accuracy a Piggyback mask recovers (pl_forget_acc)")
    p.add_argument("--out", help="output directory (default: runs/compare-<experiment>-<time>)")
    p.add_argument("--per-example", type=int, metavar="N",
                   help="also evaluate per example from ensembles of N models (the competition's forgetting quality, "
                        "a likelihood-ratio attack): writes per_example.csv; trains N original and N retrained models "
                        "and runs each method N times, all cached")
    add_experiment_args(p, default_experiment=DEFAULT_EXPERIMENT)
    return p


def load_configs(paths: list[str]) -> dict[str, tuple[str, dict]]:
    """method -> (label, hparams) from tuned run configs; one configuration per method."""
    tuned: dict[str, tuple[str, dict]] = {}
    for path in paths:
        cfg = load_run_config(path)
        if not cfg.method:
            raise UserError(f"{path}: a configuration for compare must name its method")
        if cfg.method in tuned:
            raise UserError(f"two configurations for method {cfg.method!r} in --configs (the second: {path})")
        where = Path(path).parent.name if Path(path).name == "best_config.yaml" else Path(path).stem
        tuned[cfg.method] = (f"tuned:{where}", cfg.hparams)
    return tuned


def plan_runs(args: argparse.Namespace) -> tuple[list, dict]:
    """Validate everything before any training: (runs, overrides). Each run is
    (method, config label, resolved run) for seed 0's experiment; seeds are applied later."""
    if args.per_example is not None and args.per_example < PER_EXAMPLE_MIN_MODELS:
        raise UserError(f"--per-example needs N >= {PER_EXAMPLE_MIN_MODELS} models per side, got {args.per_example}")
    if args.per_example is not None and args.original:
        raise UserError("--per-example trains its own original models; it cannot use --original")
    methods = args.methods or method_names()
    tuned = load_configs(args.configs)
    unused = [m for m in tuned if m not in methods]
    if unused:
        raise UserError(f"--configs holds a configuration for {unused[0]!r}, which is not among --methods")
    if not args.seeds:
        raise UserError("--seeds needs at least one seed")
    overrides = experiment_overrides(args)
    base_weights = parse_weights(args.weight)
    runs = []
    for method in methods:
        label, hparams = tuned.get(method, ("default", {}))
        runs.append((method, label, resolve_run(method, args.experiment, overrides, hparams, weights=base_weights)))
    return runs, overrides


def baseline_rows(prepared, seed: int, weights) -> list[dict]:
    """The compare.csv rows of the original and of each retrained model on the test split,
    scored like the methods."""
    scored = prepared.refs.scored(weights)
    val, test = scored["val"], scored["test"]
    rows = [{"method": ORIGINAL, "config": "cached", "seed": seed, "status": "ok", **test["original"]["metrics"],
             **test["original"]["components"], "objective": test["original"]["objective"],
             "val_objective": val["original"]["objective"]}]
    objectives = test["retrained"]["objectives"] or [None] * len(test["retrained"]["metrics"])
    val_objectives = val["retrained"]["objectives"] or [None] * len(objectives)
    for i, (metrics, objective, val_objective) in enumerate(zip(test["retrained"]["metrics"], objectives, val_objectives)):
        rows.append({"method": RETRAINED, "config": f"model-{i}", "seed": seed, "status": "ok", **metrics,
                     "cost_ratio": 1.0, "objective": objective, "val_objective": val_objective})
    return rows


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runs, overrides = plan_runs(args)
    # Everything above validated the arguments without torch; now the work starts.
    from ..pipeline import prepare, run_method
    from ..runtime import make_runtime

    exp0 = runs[0][2].experiment
    out = Path(args.out or f"runs/compare-{exp0.name}-{time.strftime('%Y%m%d-%H%M%S')}").expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "compare.csv"
    done = {(r["method"], r["config"], r["seed"]) for r in read_rows(csv_path)}
    runtime = make_runtime(args.device)
    cache = args.cache_dir or default_cache_dir()
    leakage = args.leakage or runs[0][2].weights.leak > 0
    (out / "compare.json").write_text(json.dumps({"experiment": exp0.name, "overrides": overrides, "seeds": args.seeds,
                                                  "methods": [[m, label] for m, label, _ in runs]}, indent=1))
    todo = sum((method, label, str(seed)) not in done for seed in args.seeds for method, label, _ in runs)
    # A bar over the runs on a terminal; otherwise the "seed s: method" lines below say it
    bar = Progress("compare", todo, "run", lines=False)
    for seed in args.seeds:
        exp = replace(exp0, forget=replace(exp0.forget, seed=seed))
        prepared = None
        if (ORIGINAL, "cached", str(seed)) not in done:
            prepared = prepare(exp, runtime, cache, args.original, args.download, leakage=leakage)
            for row in baseline_rows(prepared, seed, runs[0][2].weights):
                append_row(csv_path, row)
        for method, label, run in runs:
            if (method, label, str(seed)) in done:
                continue
            prepared = prepared or prepare(exp, runtime, cache, args.original, args.download, leakage=leakage)
            log_stderr(f"seed {seed}: {method} ({label}) [{bar.done + 1}/{todo}]")
            row = {"method": method, "config": label, "seed": seed, "hparams": json.dumps(run.hparams)}
            try:
                result = run_method(prepared, run.method, run.hparams, run.weights, seed=seed, leakage=leakage)
                row.update(status="ok", **result.test_metrics, **result.test_components,
                           objective=result.test_objective, val_objective=result.objective)
            except Diverged as exc:
                row.update(status=f"diverged: {exc}")
            append_row(csv_path, row)
            bar.update(text=f"seed {seed}: {method}")
    bar.close()
    rows = read_rows(csv_path)
    title = f"{exp0.name}, forget {exp0.forget.describe(seed=False)}, seeds {' '.join(map(str, args.seeds))}, on {runtime.describe()}"
    table = markdown([r for r in rows if int(r["seed"]) in args.seeds], title)
    (out / "compare.md").write_text(table)
    print(table)
    print(f"rows: {csv_path}\ntable: {out / 'compare.md'}")
    if args.per_example:
        from .per_example import run as per_example_run

        per_example_run(out, runs, exp0, runtime, cache, args.per_example, args.download)
    return 0


if __name__ == "__main__":
    sys.exit(main())
