"""Does a configuration hold beyond one original model? Runs a method at its defaults, or over
a grid of settings, on several original models (`train.seed`: each original with its own
retrained models, seeds train.seed .. train.seed + K - 1) and forget sets (`forget.seed`), and
prints one Markdown row per setting with every original's result side by side.

    python experiments/robustness.py                                      # selective, defaults, digits_mislabeled
    python experiments/robustness.py --train-seeds 0 1 2 --forget-seeds 0 1 --grid decay=0,0.1 --grid ft_epochs=2,3
    python experiments/robustness.py --method salun --experiment digits_backdoor

Columns: cost as a share of retraining (the estimate the objective uses: cost.py), MACs as a
share of retraining's, optimiser steps, and measured wall time as a share of the retrained
models' training time (both on `--threads`); for each (train seed, forget seed) pair the
weighted sum of the gaps to the retrained models on the test split (the objective without its
cost term: 0 is within their spread on every measure); how many pairs are within spread and
the mean gap sum, on the test and on the validation split; then the test split's measures,
mean ± standard deviation over the pairs. The last row scores each retrained model against the
others the same way: what a perfect unlearning gets with this many retrained models (with 3,
a retrained model is often outside the others' spread on some measure). Train seeds and forget
seeds are models and forget sets the defaults were not chosen on only if you pick them so.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tune_unlearn.commands.arguments import add_experiment_args, experiment_overrides, parse_assignments  # noqa: E402
from tune_unlearn.config import parse_scalar  # noqa: E402
from tune_unlearn.errors import UserError  # noqa: E402
from tune_unlearn.files import default_cache_dir  # noqa: E402
from tune_unlearn.evaluation.objective import components, ensemble, objective  # noqa: E402
from tune_unlearn.pipeline import prepare, run_method  # noqa: E402
from tune_unlearn.run_config import resolve_run  # noqa: E402
from tune_unlearn.runtime import make_runtime  # noqa: E402

MEASURES = (("forget_acc", "forget"), ("forget_true_acc", "forget true"), ("asr", "ASR"), ("test_acc", "test"),
            ("mia", "MIA"))


def cell(values: list[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def gap_sum(comps: dict, weights) -> float:
    """The weighted gaps of an objective's components, without the cost term (0: within spread)."""
    return 0.0 - (objective(comps, weights) + weights.cost * comps["cost_ratio"])


def leave_one_out(models: list[dict]) -> list[dict]:
    """Each retrained model's components against the other retrained models."""
    return [components(m, ensemble(models[:i] + models[i + 1:])) for i, m in enumerate(models)]


def parse_grid(items: list[str]) -> dict[str, list]:
    grid = {}
    for name, values in parse_assignments(items, "--grid").items():
        raw = values if isinstance(values, list) else str(values).split(",")
        grid[name] = [parse_scalar(str(v)) for v in raw]
    return grid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_experiment_args(p)
    p.add_argument("--method", default="selective")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="fixed hyperparameter")
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2", help="hyperparameter values to cross")
    p.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2], help="original models (train.seed)")
    p.add_argument("--forget-seeds", type=int, nargs="+", default=[0], help="forget sets (forget.seed)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads, for training, unlearning and the cost's prices (default 1: as a search's trial)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    fixed, grid = parse_assignments(args.set, "--set"), parse_grid(args.grid)
    base = resolve_run(args.method, args.experiment, experiment_overrides(args), fixed)
    settings = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] or [{}]
    exp0 = base.experiment
    try:  # every setting checked before anything trains
        hparams = [base.method.resolve(exp0.method_defaults.get(args.method, {}), fixed, s) for s in settings]
    except UserError as exc:
        sys.exit(f"error: {exc}")
    runtime = make_runtime(args.device)
    started = time.time()
    pairs = [(t, f) for t in args.train_seeds for f in args.forget_seeds]
    results: dict[int, list] = {i: [] for i in range(len(settings))}
    references, retrained = [], []
    for train_seed, forget_seed in pairs:
        exp = replace(exp0, train=replace(exp0.train, seed=train_seed), forget=replace(exp0.forget, seed=forget_seed))
        prepared = prepare(exp, runtime, args.cache_dir or default_cache_dir(), log=lambda m: None, threads=args.threads)
        references.append((train_seed, forget_seed, prepared.refs.reference("test"), prepared.refs.baseline("test")))
        retrained.append(prepared.refs)
        for i, hp in enumerate(hparams):
            results[i].append(run_method(prepared, base.method, hp, base.weights, seed=0))
    measures = [(k, label) for k, label in MEASURES if k in references[0][2]]
    pair_names = [f"t{t}/f{f}" for t, f in pairs]
    print(f"### {args.method} on {exp0.name}, {len(pairs)} original models x forget sets "
          f"({', '.join(pair_names)}: train seed / forget seed), {runtime.describe()}\n")
    head = ["run", "cost %", "MACs %", "steps", "time %", *(f"gaps {n}" for n in pair_names), "within (test)", "mean gaps (test)",
            "within (val)", "mean gaps (val)", *(label for _, label in measures)]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))

    def summary(test: list[dict], val: list[dict]) -> list[str]:
        test_gaps, val_gaps = [gap_sum(c, base.weights) for c in test], [gap_sum(c, base.weights) for c in val]
        return [f"{sum(g == 0 for g in test_gaps)}/{len(test)}", f"{statistics.fmean(test_gaps):.2f}",
                f"{sum(g == 0 for g in val_gaps)}/{len(val)}", f"{statistics.fmean(val_gaps):.2f}"]

    for i, setting in enumerate(settings):
        rs = results[i]
        row = [", ".join(f"{k}={v}" for k, v in setting.items()) or args.method]
        row.append(cell([100 * r.test_components["cost_ratio"] for r in rs], 1))
        row.append(cell([100 * r.metrics["macs"] / r.reference["macs"] for r in rs], 1))
        row.append(cell([r.metrics["steps"] for r in rs], 0))
        # measured: the unlearning's wall time over the retrained models' training time, same threads
        row.append(cell([100 * r.metrics["time_s"] / r.reference["time_s"] for r in rs], 1))
        row += [f"{gap_sum(r.test_components, base.weights):.2f}" for r in rs]
        row += summary([r.test_components for r in rs], [r.components for r in rs])
        row += [cell([r.test_metrics[k] for r in rs]) for k, _ in measures]
        print("| " + " | ".join(row) + " |")
    loo = {split: [leave_one_out([m[split] for m in refs.retrained]) for refs in retrained] for split in ("test", "val")}
    row = ["(retrained: each against the others)", "100", "100", cell([m["val"]["steps"] for refs in retrained
                                                                     for m in refs.retrained], 0), "100"]
    row += [cell([gap_sum(c, base.weights) for c in pair]) for pair in loo["test"]]
    row += summary([c for pair in loo["test"] for c in pair], [c for pair in loo["val"] for c in pair])
    row += [cell([m["test"][k] for refs in retrained for m in refs.retrained]) for k, _ in measures]
    print("| " + " | ".join(row) + " |")
    print("\nretrained models and the original per pair (test split; retrained: mean ± sd):")
    for train_seed, forget_seed, ref, original in references:
        print(f"- t{train_seed}/f{forget_seed}: " + ", ".join(
            f"{label} {ref[k]:.2f} ± {ref[k + '_sd']:.2f} (original {original[k]:.2f})" for k, label in measures))
    print(f"\nhyperparameters: {hparams[0] if len(hparams) == 1 else {k: v for k, v in hparams[0].items() if k not in grid}}")
    print(f"{time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
