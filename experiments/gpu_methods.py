"""Does every registered method run on this machine's device? Each one once, at its defaults
with one epoch of its epoch budget (retrain: 10% of the recipe), from one `prepare` of the
experiment's cached references.

    python experiments/gpu_methods.py --experiment fmnist --forget-fraction 0.02 --json methods.json
    python experiments/gpu_methods.py --experiment digits            # anywhere

Prints a line per method (wall time, test accuracy, forget accuracy, test objective, or the
error) and writes them as JSON with --json. Exits 1 when a method failed. A smoke test of the
device paths (bf16 autocast, channels_last, device-resident data), not a comparison: the
budgets are not tuned.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tune_unlearn.commands.arguments import add_experiment_args, experiment_overrides  # noqa: E402
from tune_unlearn.data.experiment import load_experiment  # noqa: E402
from tune_unlearn.files import default_cache_dir, write_json  # noqa: E402
from tune_unlearn.methods import get_method, method_names  # noqa: E402
from tune_unlearn.pipeline import prepare, run_method  # noqa: E402
from tune_unlearn.runtime import make_runtime  # noqa: E402


def one_method(prepared, name: str) -> dict:
    method = get_method(name)
    budget = {method.epochs_hparam: 1} if method.epochs_hparam else {}
    if name == "retrain":  # the recipe's epochs otherwise: 10% of them are enough to exercise it
        budget["epoch_fraction"] = 0.1
    hparams = method.resolve(prepared.experiment.method_defaults.get(name, {}), budget)
    started = time.perf_counter()
    try:
        result = run_method(prepared, method, hparams)
    except Exception as exc:  # noqa: BLE001 - the point is to list every failure, then exit 1
        return {"method": name, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=-4), "wall_s": time.perf_counter() - started}
    return {"method": name, "ok": True, "hparams": hparams, "wall_s": time.perf_counter() - started,
            "unlearn_s": result.metrics["time_s"], "device": result.device,
            "test_acc": result.test_metrics["test_acc"], "forget_acc": result.test_metrics["forget_acc"],
            "test_objective": result.test_objective}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_experiment_args(p, default_experiment="fmnist")
    p.add_argument("--methods", nargs="+", help="default: every registered method")
    p.add_argument("--json", metavar="PATH", help="also write the results to PATH")
    args = p.parse_args()
    exp = load_experiment(args.experiment, experiment_overrides(args))
    runtime = make_runtime(args.device)
    prepared = prepare(exp, runtime, args.cache_dir or default_cache_dir(), args.original, args.download)
    print(f"machine: {runtime.describe()}   experiment: {exp.name}", flush=True)
    rows = []
    for name in args.methods or method_names():
        rows.append(one_method(prepared, name))
        r = rows[-1]
        print(f"{name:14s} " + (f"{r['wall_s']:6.1f} s  test_acc {r['test_acc']:.2f}  forget_acc {r['forget_acc']:.2f}  "
                                f"objective {r['test_objective']:.3f}" if r["ok"] else f"FAILED {r['error']}"), flush=True)
        if args.json:
            write_json(args.json, {"device": runtime.describe(), "experiment": exp.name, "methods": rows})
    sys.exit(0 if all(r["ok"] for r in rows) else 1)


if __name__ == "__main__":
    main()
