"""Where selective forgetting spends its cost, and what each saving costs in quality.

    python experiments/selective_scopes.py --experiment digits_class
    python experiments/selective_scopes.py --experiment digits --forget-fraction 0.1

Runs the selective method at its defaults with every combination of `mask_scope` x `ft_scope`
x recovery (fine-tuning epochs, BatchNorm re-estimation) over three seeds (with a random or a
corrective forget set, the seed also chooses the forget set), and prints one Markdown row per
setting: cost as a share of retraining (MACs), the objective on the validation split (what a
choice of defaults may look at) and on the test split, the test split's forget and test accuracy
and MIA, and in how many seeds every validation gap was 0 (within the retrained models' spread).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tune_unlearn.commands.arguments import add_experiment_args, experiment_overrides  # noqa: E402
from tune_unlearn.pipeline import prepare, run_method  # noqa: E402
from tune_unlearn.files import default_cache_dir  # noqa: E402
from tune_unlearn.run_config import resolve_run  # noqa: E402
from tune_unlearn.runtime import make_runtime  # noqa: E402

RECOVERY = [  # (ft_epochs, bn_recalibrate)
    (2, False), (1, False), (1, True), (0, True), (0, False)]


def cell(values: list[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_experiment_args(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = p.parse_args()
    base = resolve_run("selective", args.experiment, experiment_overrides(args))
    runtime = make_runtime(args.device)
    settings = []
    for mask_scope, ft_scope, (ft_epochs, recal) in itertools.product(("all", "scope"), ("all", "scope"), RECOVERY):
        if ft_epochs == 0 and ft_scope == "scope":
            continue  # nothing is fine-tuned: the same as ft_scope all
        settings.append({"mask_scope": mask_scope, "ft_scope": ft_scope, "ft_epochs": ft_epochs, "bn_recalibrate": recal})
    rows: dict[int, list] = {i: [] for i in range(len(settings))}
    for seed in args.seeds:
        exp = base.experiment
        if exp.forget.rule != "classes":  # the seed chooses the forget set (under a corrective rule, the original too)
            exp = replace(exp, forget=replace(exp.forget, seed=seed))
        prepared = prepare(exp, runtime, args.cache_dir or default_cache_dir(), log=lambda m: None)
        for i, setting in enumerate(settings):
            hp = base.method.resolve(exp.method_defaults.get("selective", {}), setting)
            rows[i].append(run_method(prepared, base.method, hp, base.weights, seed=seed))
    print(f"### selective on {base.experiment.name} ({runtime.describe()}), seeds {' '.join(map(str, args.seeds))}\n")
    print("| mask_scope | ft_scope | ft_epochs | bn_recalibrate | cost % | objective (val) | objective (test) "
          "| forget (test) | test acc | MIA (test) | seeds within spread (val) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for i, setting in enumerate(settings):
        results = rows[i]
        within = sum(all(v == 0 for k, v in r.components.items() if k != "cost_ratio") for r in results)
        print(f"| {setting['mask_scope']} | {setting['ft_scope']} | {setting['ft_epochs']} | {setting['bn_recalibrate']} "
              f"| {cell([100 * r.components['cost_ratio'] for r in results], 1)} "
              f"| {cell([r.objective for r in results], 3)} | {cell([r.test_objective for r in results], 3)} "
              f"| {cell([r.test_metrics['forget_acc'] for r in results])} "
              f"| {cell([r.test_metrics['test_acc'] for r in results])} "
              f"| {cell([r.test_metrics['mia'] for r in results])} | {within}/{len(results)} |")
    ref = rows[0][0].reference_test
    print(f"\nretrained models (test split, mean ± sd of {ref['n_models']}, last seed): forget {ref['forget_acc']:.2f} ± "
          f"{ref['forget_acc_sd']:.2f}, test {ref['test_acc']:.2f} ± {ref['test_acc_sd']:.2f}, "
          f"MIA {ref['mia']:.2f} ± {ref['mia_sd']:.2f}")


if __name__ == "__main__":
    main()
