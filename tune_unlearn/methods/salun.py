"""SalUn (Fan, Liu, Zhang, Wong, Wei, Liu: "SalUn: Empowering Machine Unlearning via Gradient-
based Weight Saliency in Both Image Classification and Generation", ICLR 2024), in its
random-label form.

1. Saliency: the gradient of the forgetting loss (-CE on D_f), accumulated over D_f; the
   `mask_ratio` (50%) of all weights with the largest |gradient| are salient.
2. For `epochs` passes over D_r together with D_f relabelled at random (labels drawn once,
   uniformly over the classes, as in the reference code), cross-entropy training that updates
   only the salient weights (SGD, momentum 0.9, weight decay 5e-4, cosine decay).

Departures: the saliency gradients are taken in eval mode (BatchNorm statistics untouched);
the training uses the experiment's augmentation.
"""

from __future__ import annotations

import torch

from ..data import batch_count
from ..training import accumulate_gradients, cosine_schedule, sgd, train_epochs
from . import register
from .base import Context, Float, Int, Method, UnlearnData


@register
class SalUn(Method):
    name = "salun"
    epochs_hparam = "epochs"
    hparams = (
        Float("mask_ratio", 0.5, 0.1, 0.9, min=0.0, max=1.0, help="share of weights updated (largest forget gradient)"),
        Int("epochs", 3, 1, 10, min=1, help="passes over the retain set plus the relabelled forget set"),
        Float("lr", 0.01, 1e-3, 0.1, log=True, min=0.0, help="initial learning rate (cosine to 0)"),
    )

    def unlearn(self, model, data: UnlearnData, hp: dict, ctx: Context) -> dict:
        runtime, bs = ctx.runtime, ctx.batch_size
        # 1. saliency of every parameter for the forgetting loss
        accumulate_gradients(model, ((data.forget, -1.0),), runtime, bs)
        params = [p for p in model.parameters() if p.grad is not None]
        magnitudes = torch.cat([p.grad.abs().flatten().float() for p in params])
        k = max(1, round(hp["mask_ratio"] * magnitudes.numel()))
        # exactly k weights, chosen by index: many gradients tie at 0, so a value cutoff would not do
        flat = torch.zeros_like(magnitudes)
        flat[torch.topk(magnitudes, k).indices] = 1.0
        masks = {p: m.view_as(p).to(p.dtype) for p, m in zip(params, flat.split([p.numel() for p in params]))}
        model.zero_grad(set_to_none=True)
        # 2. random labels on D_f, true labels on D_r, updates only where salient
        random_labels = torch.randint(0, data.num_classes, (len(data.forget),))
        mixed = data.train.relabel(data.forget, random_labels)

        def mask_gradients():
            for p, m in masks.items():
                if p.grad is not None:
                    p.grad.mul_(m)

        optimizer = sgd(model.parameters(), hp["lr"])
        scheduler = cosine_schedule(optimizer, hp["epochs"] * batch_count(len(mixed), bs))
        train_epochs(model, mixed, runtime, epochs=hp["epochs"], batch_size=bs, optimizer=optimizer,
                     scheduler=scheduler, before_step=mask_gradients, what="SalUn loss",
                     on_epoch=lambda epoch, logs: ctx.epoch_end("salun", epoch, logs, True))
        return {"salient_share": k / magnitudes.numel()}
