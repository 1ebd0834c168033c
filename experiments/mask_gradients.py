"""The useful range of selective forgetting's `lam`, read off the data.

    python experiments/mask_gradients.py                       # digits_class, layer4
    python experiments/mask_gradients.py --experiment fmnist --scope layer4

Adam scales every mask entry's step to about `mask_lr` whatever the size of its gradient, so
`lam` only matters against two other numbers: Adam's eps (1e-8; below it the L1 pressure is
damped to lam/1e-8 of a full step) and the cross-entropy gradient |dCE/dX| of each entry (an
entry sinks out of the selection once lam outweighs it). This prints, at the original model on
the forget set, the share of entries in the scope with no cross-entropy gradient at all (they
sink for any lam above ~1e-8) and the quantiles of the rest: lam between eps and the upper
quantiles is the range where it chooses what the forget data relies on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tune_unlearn.commands.arguments import add_experiment_args, experiment_overrides  # noqa: E402
from tune_unlearn.data.experiment import load_experiment  # noqa: E402
from tune_unlearn.methods.masking import PiggybackMask, maskable_names, scope_names  # noqa: E402
from tune_unlearn.pipeline import prepare  # noqa: E402
from tune_unlearn.files import default_cache_dir  # noqa: E402
from tune_unlearn.runtime import make_runtime  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_experiment_args(p)
    p.add_argument("--scope", default="layer4")
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    exp = load_experiment(args.experiment, experiment_overrides(args))
    prepared = prepare(exp, make_runtime(args.device), args.cache_dir or default_cache_dir(), log=lambda m: None)
    model = prepared.model().eval()
    mask = PiggybackMask(model, 0.01, 0.005, scope_names(maskable_names(model), args.scope))
    batches = 0
    for x, y in prepared.data.forget.batches(args.batch_size):
        F.cross_entropy(mask.forward(x), y).backward()
        batches += 1
    grads = torch.cat([mask.real[n].grad.abs().flatten() / batches for n in mask.names])
    nonzero = grads[grads > 0]
    quantiles = torch.quantile(nonzero.double(), torch.tensor([0.1, 0.5, 0.9, 0.99], dtype=torch.float64)).tolist()
    print(f"{exp.name}, scope {args.scope}: {grads.numel():,} mask entries, "
          f"{100 * (grads == 0).float().mean():.1f}% without cross-entropy gradient")
    print("|dCE/dX| of the others, 10/50/90/99%: " + ", ".join(f"{q:.1e}" for q in quantiles))


if __name__ == "__main__":
    main()
