"""The objective's noise floor: one configuration run with several unlearning seeds and thread
counts on the same original and forget set. Differences between trials smaller than this spread
say nothing about the configurations (why the search chooses its best on a mean over seeds:
search/reseed.py).

    python experiments/noise_floor.py                                    # selective's defaults, digits_mislabeled
    python experiments/noise_floor.py --config runs/<name>/best_config.yaml --seeds 0 1 2 3 4 --threads 1 2
    python experiments/noise_floor.py --method salun --experiment digits_backdoor

Prints one line per (threads, seed): the objective on the validation split (what a search
ranks on) and on the test split; then per thread count and over all runs the mean, standard
deviation and range of both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tune_unlearn.commands.arguments import add_experiment_args, experiment_overrides  # noqa: E402
from tune_unlearn.cost import processor, torch_threads  # noqa: E402
from tune_unlearn.evaluation.objective import Weights  # noqa: E402
from tune_unlearn.files import default_cache_dir  # noqa: E402
from tune_unlearn.pipeline import prepare, run_method  # noqa: E402
from tune_unlearn.run_config import load_run_config, resolve_run  # noqa: E402
from tune_unlearn.runtime import make_runtime  # noqa: E402


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f} (range {max(values) - min(values):.3f}, n {len(values)})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", default="selective")
    p.add_argument("--config", help="a run config (best_config.yaml): its method, experiment and hyperparameters")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="unlearning seeds (default 0..4)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="intra-op thread counts (default 1 2)")
    add_experiment_args(p, default_experiment="digits_mislabeled")
    args = p.parse_args()
    if args.config:
        cfg = load_run_config(args.config)
        run = resolve_run(cfg.method, cfg.experiment, {**cfg.experiment_overrides, **experiment_overrides(args)},
                          cfg.hparams, weights=Weights().updated(cfg.weights, args.config))
    else:
        run = resolve_run(args.method, args.experiment, experiment_overrides(args))
    runtime = make_runtime(args.device)
    prepared = prepare(run.experiment, runtime, args.cache_dir or default_cache_dir())
    print(f"{run.method.name} on {run.experiment.name}, forget {run.experiment.forget.describe()}, on {processor()}")
    print(f"hyperparameters: {run.hparams}")
    by_threads: dict[int, list[tuple[float, float]]] = {}
    for threads in args.threads:
        for seed in args.seeds:
            with torch_threads(threads):
                result = run_method(prepared, run.method, run.hparams, run.weights, seed=seed)
            by_threads.setdefault(threads, []).append((result.objective, result.test_objective))
            print(f"threads {threads} seed {seed}: objective {result.objective:.4f}  test {result.test_objective:.4f}",
                  flush=True)
    print()
    for threads, values in by_threads.items():
        print(f"threads {threads}: validation {spread([v for v, _ in values])}; test {spread([t for _, t in values])}")
    everything = [v for values in by_threads.values() for v in values]
    print(f"all runs: validation {spread([v for v, _ in everything])}; test {spread([t for _, t in everything])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
