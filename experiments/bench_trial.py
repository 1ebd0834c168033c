"""Speed of one trial against retraining, on the machine at hand.

    python experiments/bench_trial.py --experiment fmnist            # on a GPU machine
    python experiments/bench_trial.py --experiment digits --repeats 2 # anywhere

Prints: training throughput (images/s at the recipe's batch size, after a warm-up epoch), the
retraining time and cost of the cached retrained models (trained here first if missing), the
wall time of one selective-forgetting run at the default hyperparameters split into mask
learning and the rest, its time and cost ratios, and how close the result is to the retrained
models on the test split. `--json PATH` also writes these figures (experiments/gpu_suite.sh).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tune_unlearn.commands.arguments import add_experiment_args, experiment_overrides, parse_assignments  # noqa: E402
from tune_unlearn.network.resnet import build_model  # noqa: E402
from tune_unlearn.pipeline import prepare, run_method  # noqa: E402
from tune_unlearn.files import default_cache_dir, write_json  # noqa: E402
from tune_unlearn.run_config import resolve_run  # noqa: E402
from tune_unlearn.runtime import Stopwatch, make_runtime, seed_everything  # noqa: E402
from tune_unlearn.training import train_recipe  # noqa: E402


def training_throughput(prepared, epochs: int) -> float:
    exp, data, runtime = prepared.experiment, prepared.data, prepared.runtime
    seed_everything(0)
    model = runtime.prepare(build_model(exp.model, data.num_classes, data.in_channels))
    train_recipe(model, data.train, replace(exp.train, epochs=1), runtime)  # warm-up (cudnn autotuning)
    clock = Stopwatch(runtime).start()
    train_recipe(model, data.train, replace(exp.train, epochs=epochs), runtime)
    return epochs * len(data.train) / clock.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_experiment_args(p, default_experiment="fmnist")
    p.add_argument("--method", default="selective")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--repeats", type=int, default=3, help="unlearning runs to time (median reported)")
    p.add_argument("--train-epochs", type=int, default=2, help="epochs timed for the throughput figure (0: skip it)")
    p.add_argument("--json", metavar="PATH", help="also write the figures to PATH (experiments/gpu_suite.sh)")
    args = p.parse_args()
    run = resolve_run(args.method, args.experiment, experiment_overrides(args), parse_assignments(args.set, "--set"))
    runtime = make_runtime(args.device)
    prepared = prepare(run.experiment, runtime, args.cache_dir or default_cache_dir(), args.original, args.download)
    exp, refs = prepared.experiment, prepared.refs
    print(f"machine: {runtime.describe()}   experiment: {exp.name} ({len(prepared.data.train)} training images, "
          f"forget {len(prepared.data.forget)})")
    figures = {"device": runtime.describe(), "torch": torch.__version__, "experiment": exp.name,
               "forget_size": len(prepared.data.forget), "train_size": len(prepared.data.train)}
    if args.train_epochs:
        images_per_s = training_throughput(prepared, args.train_epochs)
        figures["train_img_per_s"] = round(images_per_s)
        print(f"training: {images_per_s:,.0f} images/s (batch {exp.train.batch_size}, {args.train_epochs} epochs after a warm-up epoch)")
    ref = refs.reference("val")
    retrain_s = ref["time_s"]
    figures.update(original_s=refs.original["test"]["time_s"], original_test_acc=refs.original["test"]["test_acc"],
                   retrain_s=retrain_s, retrained_models=ref["n_models"])
    print(f"retrain: {retrain_s:.1f} s, priced at {ref['cost']:.1f} ({exp.train.epochs} epochs on D_r, mean of "
          f"{ref['n_models']} cached models: {', '.join(f'{k} {v}' for k, v in refs.status.items() if k != 'original')})")
    results = [run_method(prepared, run.method, run.hparams, run.weights, seed=i) for i in range(args.repeats)]
    times = [r.metrics["time_s"] for r in results]
    best = results[times.index(statistics.median_low(times))]
    phases: dict[str, float] = {}
    previous = 0.0
    for entry in best.history:  # history times are the unlearning clock at each epoch's end
        phases[entry["phase"]] = phases.get(entry["phase"], 0.0) + entry["time_s"] - previous
        previous = entry["time_s"]
    split = ", ".join(f"{k} {v:.2f} s" for k, v in phases.items())
    print(f"{run.method.name} (hparams {run.hparams}): {statistics.median(times):.2f} s median of {len(times)} "
          f"[{split}, rest {best.metrics['time_s'] - previous:.2f} s]")
    print(f"ratio: {100 * statistics.median(times) / retrain_s:.1f} % of retraining time, "
          f"{100 * best.components['cost_ratio']:.1f} % of its priced cost (cost model: docs/cost.md)")
    m, ref, orig = best.test_metrics, best.reference_test, best.original_test
    print(f"{run.method.name} vs retrain (test split, mean ± sd of {ref['n_models']}): "
          + ", ".join(f"{k} {m[k]:.2f} vs {ref[k]:.2f} ± {ref[k + '_sd']:.2f}"
                      for k in ("test_acc", "forget_acc", "retain_acc", "mia"))
          + f"; original: test {orig['test_acc']:.2f}, forget {orig['forget_acc']:.2f}")
    scored = refs.scored(run.weights)["test"]
    original_objective = scored["original"]["objective"]
    retrained = scored["retrained"]["objectives"]  # each retrained model scored against the others
    print(f"objective (test split): {best.test_objective:.3f}; the original model's {original_objective:.3f}; "
          f"the retrained models' {', '.join(f'{v:.3f}' for v in retrained)}")
    if args.json:
        figures.update(
            method=run.method.name, hparams=best.hparams, selective_s=statistics.median(times), selective_runs_s=times,
            selective_phases_s=phases, selective_time_ratio=statistics.median(times) / retrain_s,
            selective_cost_ratio=best.components["cost_ratio"], test_objective=best.test_objective,
            original_objective=original_objective, retrained_objectives=retrained,
            within_retrained_spread=best.test_objective >= min(retrained),
            test_metrics={k: best.test_metrics[k] for k in ("test_acc", "forget_acc", "retain_acc", "mia")},
            reference_test={k: ref[k] for k in ref if not k.startswith("_")},
            original_distances=scored["original"]["distances"])
        write_json(Path(args.json), figures)


if __name__ == "__main__":
    main()
