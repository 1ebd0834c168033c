"""What a perfect unlearning scores per example, as the ensembles grow: the forgetting quality F
and the attack's AUC of one half of the first N retrained models against the other half (the
`retrain` row of compare --per-example N), for several N.

    python experiments/per_example_halves.py                      # digits_class, N = 4 6 8
    python experiments/per_example_halves.py --sizes 6 8 10 12

Uses the cached original and retrained models (the ones compare --per-example trained) and
trains those missing. With N models the halves have N // 2 per side; F needs 3 per side.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tune_unlearn.commands.arguments import add_experiment_args, experiment_overrides  # noqa: E402
from tune_unlearn.data.experiment import load_experiment  # noqa: E402
from tune_unlearn.commands.ensembles import Ensemble, reference_ensemble  # noqa: E402
from tune_unlearn.evaluation.per_example.quality import bin_count  # noqa: E402
from tune_unlearn.commands.per_example import Scorer  # noqa: E402
from tune_unlearn.pipeline import prepare  # noqa: E402
from tune_unlearn.files import default_cache_dir  # noqa: E402
from tune_unlearn.runtime import make_runtime  # noqa: E402


def first(ensemble: Ensemble, n: int) -> Ensemble:
    return Ensemble(ensemble.name, ensemble.confs[:n], ensemble.retain_acc[:n], ensemble.test_acc[:n])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_experiment_args(p)
    p.add_argument("--sizes", type=int, nargs="+", default=[4, 6, 8], help="ensemble sizes N (default: 4 6 8)")
    args = p.parse_args()
    exp = load_experiment(args.experiment, experiment_overrides(args))
    runtime = make_runtime(args.device)
    cache = args.cache_dir or default_cache_dir()
    prepared = prepare(exp, runtime, cache, log=lambda m: None)
    largest = max(args.sizes)
    originals, _ = reference_ensemble(prepared, cache, "original", largest, lambda m: None)
    retrained, _ = reference_ensemble(prepared, cache, "retrain", largest, lambda m: None)
    print(f"{exp.name}: retrained halves, {len(prepared.data.forget)} forget examples\n")
    print("| N | models per side | bins | F of the held-out half | LiRA AUC of the halves |")
    print("|---|---|---|---|---|")
    for n in sorted(args.sizes):
        scorer = Scorer(first(originals, n), first(retrained, n))
        quality, _ = scorer.quality(scorer.heldout)
        cell = "-" if quality is None else f"{quality:.3f}"
        print(f"| {n} | {scorer.per_side} | {bin_count(scorer.per_side)} | {cell} | "
              f"{scorer.lira.evaluate_retrained().auc:.3f} |")


if __name__ == "__main__":
    main()
