"""Is there something to unlearn? How far an experiment's original model sits from its
retrained models, per measure, in units of their spread (trains and caches them if missing).

    python experiments/recipe_separation.py --experiment fmnist_mislabeled --json sep.json
    python experiments/recipe_separation.py --experiment digits_backdoor

A corrective recipe is useful when the original is far from the retrained models on the
measures that define its task (forget_true for mislabeled samples, asr for a backdoor): the
GPU issue asks for at least 10 spreads. Prints, for the validation and the test split, each
measure's distance, the original's and the retrained models' metrics, and the objective of the
original against those of the retrained models scored against each other.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tune_unlearn.commands.arguments import add_experiment_args, experiment_overrides  # noqa: E402
from tune_unlearn.data.experiment import load_experiment  # noqa: E402
from tune_unlearn.evaluation.objective import Weights  # noqa: E402
from tune_unlearn.files import default_cache_dir, write_json  # noqa: E402
from tune_unlearn.pipeline import prepare  # noqa: E402
from tune_unlearn.runtime import make_runtime  # noqa: E402


COSTS = {"time_s", "macs", "calls", "steps", "cost"}  # what unlearning spends, not what it changes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_experiment_args(p, default_experiment="fmnist_mislabeled")
    p.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    args = p.parse_args()
    exp = load_experiment(args.experiment, experiment_overrides(args))
    runtime = make_runtime(args.device)
    refs = prepare(exp, runtime, args.cache_dir or default_cache_dir(), args.original, args.download).refs
    out = {"device": runtime.describe(), "experiment": exp.name, "original_s": refs.original["test"]["time_s"],
           "retrain_s": [m["test"]["time_s"] for m in refs.retrained]}
    print(f"machine: {runtime.describe()}   experiment: {exp.name}   original trained in {out['original_s']:.1f} s")
    for split, scored in refs.scored(Weights()).items():
        original = scored["original"]
        reference = scored["reference"]
        measures = [k for k in original["metrics"] if f"{k}_sd" in reference and k not in COSTS]
        out[split] = {"distances": original["distances"], "original_objective": original["objective"],
                      "retrained_objectives": scored["retrained"]["objectives"],
                      "original": {k: original["metrics"][k] for k in measures},
                      "retrained": {k: [reference[k], reference[f"{k}_sd"]] for k in measures}}
        print(f"{split}: distances (|difference| / spread) "
              + ", ".join(f"{k} {v:.1f}" for k, v in original["distances"].items())
              + f"; objective: original {original['objective']:.2f}, retrained "
              + ", ".join(f"{v:.2f}" for v in scored["retrained"]["objectives"]))
        print("   " + ", ".join(f"{k} {original['metrics'][k]:.3f} vs {reference[k]:.3f} ± {reference[f'{k}_sd']:.3f}"
                                for k in measures))
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
