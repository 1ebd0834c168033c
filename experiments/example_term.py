"""Does the per-example term help? Tune selective forgetting with `example_gap` in the objective
and without it (weight 0), same trials and sampler seed, on two tuning requests; then evaluate
both tuned configurations and the defaults per example on held-out requests: the competition's
forgetting quality F and a likelihood-ratio attack, from ensembles of N models, beside the
original and the retrained models (the code of `compare --per-example N`).

    python experiments/example_term.py                                   # both experiments below
    python experiments/example_term.py --experiments digits_class --samples 12 --n 8

Prints, per experiment and held-out request, one row per configuration: the held-out objective
(test split, recomputed with the default weights from the held-out components, so that both
searches are scored alike), its example_gap, and F, LiRA AUC and TPR at 1% FPR. Searches and per-example models are cached under
--out and the cache: a rerun reuses them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

# The requests of each experiment: two to tune on, two held out (a new forget set, and a new
# forget set on an original trained with another seed).
SETTINGS = {
    "digits_mislabeled": (["seed=0", "seed=1"], ["seed=2", "seed=3,train_seed=1"]),
    "digits_class": (["classes=3", "classes=5"], ["classes=1", "classes=7,train_seed=1"]),
}
VARIANTS = {"with example_gap": [], "without": ["--weight", "example=0"]}


def search(experiment: str, name: str, extra: list[str], args) -> Path:
    tuning, holdout = SETTINGS[experiment]
    storage = Path(args.out) / experiment
    if not (storage / name / "holdout.json").exists():
        command = [sys.executable, "-m", "tune_unlearn.search", "--space", "default", "--experiment", experiment,
                   "--requests", *tuning, "--holdout", *holdout, "--num-samples", str(args.samples), "--seed", "0",
                   "--storage-path", str(storage), "--name", name, *extra]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    return storage / name


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiments", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--samples", type=int, default=20, help="trials per search (default 20)")
    p.add_argument("--n", type=int, default=8, help="models per per-example ensemble (default 8)")
    p.add_argument("--per-example-requests", type=int, default=1,
                   help="how many of the held-out requests get the per-example evaluation (default 1: the first)")
    p.add_argument("--out", default="runs/example-term")
    args = p.parse_args()

    from tune_unlearn.commands.per_example import evaluate
    from tune_unlearn.data.requests import parse_request
    from tune_unlearn.files import default_cache_dir
    from tune_unlearn.run_config import load_run_config, resolve_run
    from tune_unlearn.runtime import make_runtime

    runtime = make_runtime("auto")
    lines = []
    for experiment in args.experiments:
        runs_dirs = {variant: search(experiment, name.replace(" ", "_"), extra, args)
                     for (variant, extra), name in zip(VARIANTS.items(), ("with_example", "without_example"))}
        holdouts = {v: json.loads((d / "holdout.json").read_text()) for v, d in runs_dirs.items()}
        bests = {v: load_run_config(d / "best_config.yaml") for v, d in runs_dirs.items()}
        base = resolve_run("selective", experiment, {}, {})
        for spec in SETTINGS[experiment][1][:args.per_example_requests]:
            request = parse_request(spec, "holdout")
            exp = request.experiment(base.experiment)
            runs = [("selective", f"tuned {v}", resolve_run("selective", experiment, dict(request.overrides),
                                                            bests[v].hparams)) for v in VARIANTS]
            runs.append(("selective", "defaults", resolve_run("selective", experiment, dict(request.overrides), {})))
            rows, details = evaluate(runs, exp, runtime, default_cache_dir(), args.n)
            lines += [f"\n{experiment}, held-out request {request.label} ({exp.forget.describe()}, train seed "
                      f"{exp.train.seed}), N = {args.n} models per ensemble, {details['per_side']} per side, "
                      f"{runtime.describe()}",
                      "| configuration | held-out obj. (this request) | its example_gap | held-out obj. (all held-out) "
                      "| F | LiRA AUC | TPR @ 1% FPR |", "|---|---|---|---|---|---|---|"]
            for r in rows:
                row = None
                if r["config"].startswith("tuned "):
                    row = holdouts[r["config"].removeprefix("tuned ")]["configs"][0]  # rank 1: what each search chose
                elif r["config"] == "defaults":
                    row = next(c for c in holdouts["with example_gap"]["configs"] if c["name"] == "defaults")
                this, gap, held = rescored(row, request.label) if row else (None, None, None)
                lines.append(f"| {r['method'] if r['method'] in ('original', 'retrain') else r['config']} | {fmt(this)} | "
                             f"{fmt(gap)} | {fmt(held)} | {fmt(r['forget_quality'])} | {fmt(r['lira_auc'])} | "
                             f"{fmt(r['lira_tpr_at_1fpr'])} |")
        for variant, holdout in holdouts.items():
            best = holdout["configs"][0]
            lines.append(f"{experiment}, tuned {variant}: trial {best['trial_id']}, tuning objective "
                         f"{fmt(best['tuning']['objective'])} (validation), {fmt(best['tuning']['test_objective'])} "
                         f"(test); hparams {json.dumps(bests[variant].hparams)}")
    print("\n".join(lines))
    return 0


def rescored(row: dict, label: str) -> tuple:
    """A held-out row's test objective on request `label` and its mean over every held-out
    request, both with the default weights (the search without the term scored with weight 0),
    and its example_gap on `label`."""
    from tune_unlearn.evaluation.objective import Weights, objective

    values = {name: objective(result["test_components"], Weights())
              for name, result in row["requests"].items() if result and "test_components" in result}
    gap = ((row["requests"].get(label) or {}).get("test_components") or {}).get("example_gap")
    return values.get(label), gap, sum(values.values()) / len(values) if len(values) == len(row["requests"]) else None


def fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
