"""Selective Synaptic Dampening (Foster, Schoepf, Brintrup: "Fast Machine Unlearning Without
Retraining Through Selective Synaptic Dampening", AAAI 2024). The closest relative of the
selective decay step of the paper this project implements, and very fast: no fine-tuning.
Follows if-loops/selective-synaptic-dampening @ cdfdc0e (src/ssd.py `ParameterPerturber`,
unchanged since 1a7db5b; the driver src/forget_full_class_strategies.py `ssd_tuning`: the
random-forgetting driver has the same logic but fails at that commit).

1. Diagonal Fisher importances: for every parameter (BatchNorm's included), the squared
   gradient of the mean cross-entropy of each batch, averaged over the batches, in eval mode,
   unshuffled and unaugmented; on all of D = D_r + D_f (I_D) and on D_f (I_f).
2. Where I_f > `alpha` * I_D (strictly), multiply the element by min(`beta` * I_D / I_f, 1);
   everything else is left as it is, and nothing is trained.

`beta` is the paper's and the code's dampening constant lambda (the paper's beta is the
per-element factor it yields); alpha (selection weighting) 10 and lambda 1 are the reference's
setting for ResNet-18 on CIFAR (its ViT runs use alpha 5 or 25). Batch 128, as its random-
forgetting script (its class-forgetting scripts use 64): the importances are means over
batches, so the batch size changes them only through the noise of each batch's gradient. No
other known departure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import register
from .base import Context, Float, Int, Method, UnlearnData

if TYPE_CHECKING:  # annotations only; torch is imported where it is used
    import torch

    from ..data.parts import Part
    from ..runtime import Runtime


def fisher_diagonal(model, part: Part, runtime: Runtime, batch_size: int) -> dict[str, torch.Tensor]:
    """Mean over batches of the squared gradient of the batch cross-entropy, per parameter."""
    import torch
    import torch.nn.functional as F

    model.eval()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    importance = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    batches = 0
    for x, y in part.batches(batch_size):
        model.zero_grad(set_to_none=True)
        with runtime.autocast():
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        for n, p in params.items():
            if p.grad is not None:
                importance[n] += p.grad.float() ** 2
        batches += 1
    model.zero_grad(set_to_none=True)
    return {n: v / max(batches, 1) for n, v in importance.items()}


@register
class SSD(Method):
    name = "ssd"
    hparams = (
        Float("alpha", 10.0, 1.0, 100.0, log=True, min=0.0, help="selection: dampen where I_f > alpha * I_D"),
        Float("beta", 1.0, 0.1, 10.0, log=True, min=0.0, help="dampening: multiply by min(beta * I_D / I_f, 1)"),
        Int("batch_size", 128, 32, 1024, log=True, min=1, searched=False, help="batch size of the importance passes"),
    )

    def unlearn(self, model, data: UnlearnData, hp: dict, ctx: Context) -> dict:
        import torch

        whole = fisher_diagonal(model, data.train, ctx.runtime, hp["batch_size"])
        forget = fisher_diagonal(model, data.forget, ctx.runtime, hp["batch_size"])
        dampened = total = 0
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name not in whole:
                    continue
                selected = forget[name] > hp["alpha"] * whole[name]
                factor = (hp["beta"] * whole[name] / forget[name].clamp_min(1e-30)).clamp(max=1.0)
                p.mul_(torch.where(selected, factor, 1.0).to(p.dtype))
                dampened += int(selected.sum())
                total += p.numel()
        return {"dampened_share": dampened / max(total, 1)}
