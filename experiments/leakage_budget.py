"""How the leakage attack's budget changes what it sees.

    python experiments/leakage_budget.py --experiment digits --forget-classes 0 1 2 3 4

For the original model, the retrained reference (never trained on the forget set) and an
untrained network of the same architecture, prints pl_forget_acc under probes of growing
budget (epochs x batch size). A useful budget separates the first two; a budget so large
that the untrained network scores as high as the others measures nothing.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tune_unlearn.commands.arguments import add_experiment_args, experiment_overrides  # noqa: E402
from tune_unlearn.data.experiment import load_experiment  # noqa: E402
from tune_unlearn.evaluation.leakage import relearn_accuracy  # noqa: E402
from tune_unlearn.network.resnet import build_model  # noqa: E402
from tune_unlearn.pipeline import prepare  # noqa: E402
from tune_unlearn.files import default_cache_dir  # noqa: E402
from tune_unlearn.runtime import make_runtime, seed_everything  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_experiment_args(p, default_experiment="digits")
    p.add_argument("--budgets", nargs="+", default=["5x128", "5x32", "20x32"], metavar="EPOCHSxBATCH")
    args = p.parse_args()
    exp = load_experiment(args.experiment, experiment_overrides(args))
    runtime = make_runtime(args.device)
    prepared = prepare(exp, runtime, args.cache_dir or default_cache_dir(), args.original, args.download)
    seed_everything(0)
    untrained = runtime.prepare(build_model(exp.model, prepared.data.num_classes, prepared.data.in_channels))
    models = {"original": prepared.model(), "retrained": prepared.model(prepared.refs.retrain_states[0]),
              "untrained": untrained}
    print(f"{exp.name}, forget {exp.forget.rule} {list(exp.forget.classes) or exp.forget.fraction}, "
          f"{len(prepared.data.forget)} forget samples, {runtime.describe()}")
    print(f"{'budget':>10s}  " + "  ".join(f"{name:>10s}" for name in models))
    for budget in args.budgets:
        epochs, batch = (int(v) for v in budget.split("x"))
        spec = replace(exp.leakage, epochs=epochs, batch_size=batch)
        scores = [relearn_accuracy(m, prepared.data.forget, runtime, spec, exp.eval.batch_size) for m in models.values()]
        print(f"{budget:>10s}  " + "  ".join(f"{s:10.1f}" for s in scores))


if __name__ == "__main__":
    main()
