"""Does the cost the objective uses (cost.py: MACs and layer calls at calibrated prices) follow
the time a user waits, and how much does it move between calibrations?

    python experiments/cost_model.py --calibrations 5 --repeats 3

1. Calibrates the default experiment's network `--calibrations` times, each from nothing, on
   `--threads` threads (1: as a search's trial), and prints each price's median and range.
2. Runs a few unlearnings and one retraining (the `retrain` method: the recipe on D_r from
   scratch, timed in the same process on the same threads), `--repeats` times each, and prints
   per configuration its MACs and steps, the estimated cost and the measured wall time, each as
   a share of retraining's, and the estimate's ratio range over the calibrations.
"""

from __future__ import annotations

import argparse
import statistics

import torch

CONFIGS = [  # (method, hyperparameters changed from the experiment's defaults)
    ("selective", {"ft_batch_size": 16}),
    ("selective", {"ft_batch_size": 64}),
    ("selective", {"ft_batch_size": 128}),
    ("finetune", {"epochs": 2}),
    ("neggrad_plus", {"batch_size": 64}),
    ("ssd", {}),
]


def spread(values: list[float], digits: int = 1, scale: float = 1.0) -> str:
    values = [v * scale for v in values]
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", default="digits_mislabeled")
    p.add_argument("--calibrations", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", help="reference cache (default: the usual one)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from dataclasses import asdict

    from tune_unlearn.cost import calibrate, processor
    from tune_unlearn.data.experiment import load_experiment
    from tune_unlearn.evaluation.references import network
    from tune_unlearn.files import default_cache_dir
    from tune_unlearn.methods import get_method
    from tune_unlearn.pipeline import prepare, run_method
    from tune_unlearn.runtime import make_runtime

    runtime = make_runtime("cpu")
    exp = load_experiment(args.experiment)
    prepared = prepare(exp, runtime, args.cache_dir or default_cache_dir(), log=lambda m: None, threads=args.threads)
    data = prepared.data
    shape = tuple(next(iter(data.train.batches(1)))[0].shape[1:])
    models = [calibrate(lambda: runtime.prepare(network(exp, data)), shape, data.num_classes, runtime.device,
                        runtime.sync, runtime.describe()) for _ in range(args.calibrations)]
    print(f"{exp.name}, {runtime.describe()}, {processor()}, torch {torch.__version__}, model {asdict(exp.model)}")
    print(f"prices over {len(models)} calibrations (median, range): "
          f"{spread([m.mac_s for m in models], 2, 1e12)} ps per MAC, {spread([m.call_s for m in models], 1, 1e6)} us "
          f"per layer call")

    def timed(method: str, changes: dict) -> list:
        m = get_method(method)
        hp = m.resolve(exp.method_defaults.get(method, {}), changes)
        return [run_method(prepared, m, hp, seed=0) for _ in range(args.repeats)]

    retrain = timed("retrain", {})
    base_time = statistics.median(r.metrics["time_s"] for r in retrain)
    base = retrain[0].metrics
    print(f"retraining (the recipe on D_r, {args.repeats} runs): {base_time:.2f} s measured, "
          f"{base['cost']:.2f} s estimated, {base['steps']} steps\n")
    print("| configuration | MACs % | steps | estimated cost % | measured time % | estimate / measured | "
          f"estimated % over the calibrations |\n|---|---|---|---|---|---|---|")
    for method, changes in CONFIGS:
        runs = timed(method, changes)
        counts = runs[0].metrics
        measured = 100 * statistics.median(r.metrics["time_s"] for r in runs) / base_time
        estimated = 100 * counts["cost"] / base["cost"]
        over = [100 * m.seconds(counts["macs"], counts["calls"]) / m.seconds(base["macs"], base["calls"]) for m in models]
        name = method + "".join(f", {k}={v}" for k, v in changes.items())
        print(f"| {name} | {100 * counts['macs'] / base['macs']:.1f} | {counts['steps']} | {estimated:.1f} | "
              f"{measured:.1f} | {estimated / measured:.2f} | {spread(over)} |")


if __name__ == "__main__":
    main()
