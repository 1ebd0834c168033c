"""SalUn (Fan, Liu, Zhang, Wong, Wei, Liu: "SalUn: Empowering Machine Unlearning via Gradient-
based Weight Saliency in Both Image Classification and Generation", ICLR 2024), in its
random-label form.

1. Saliency: the gradient of the forgetting loss (-CE on D_f), accumulated over D_f in eval
   mode (as `save_gradient_ratio` in OPTML-Group/Unlearn-Saliency); the `mask_ratio` (50%) of
   all weights with the largest |gradient| are salient.
2. For `epochs` passes over D_r together with D_f relabelled at random, cross-entropy training
   that updates only the salient weights (SGD, momentum 0.9, weight decay 5e-4, constant
   learning rate). As in the reference, the random labels are drawn anew every epoch (its
   `RL` is called once per epoch and relabels the forget set each time), and its learning-rate
   milestones (91, 136) lie beyond its 10 unlearning epochs: the rate is constant.

Departures: 3 epochs by default instead of the reference's 10 (which follow 182-epoch
recipes; the search range reaches 10); the training uses the experiment's augmentation.
"""

from __future__ import annotations

from . import register
from .base import Context, Float, Int, Method, UnlearnData


@register
class SalUn(Method):
    name = "salun"
    epochs_hparam = "epochs"
    hparams = (
        Float("mask_ratio", 0.5, 0.1, 0.9, min=0.0, max=1.0, help="share of weights updated (largest forget gradient)"),
        Int("epochs", 3, 1, 10, min=1, help="passes over the retain set plus the relabelled forget set"),
        Float("lr", 0.01, 1e-3, 0.1, log=True, min=0.0, help="learning rate (constant)"),
    )

    def unlearn(self, model, data: UnlearnData, hp: dict, ctx: Context) -> dict:
        import torch
        from ..training import accumulate_gradients, sgd, train_epochs

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
        # 2. random labels on D_f (drawn anew every epoch), true labels on D_r, updates only where salient
        def mask_gradients():
            for p, m in masks.items():
                if p.grad is not None:
                    p.grad.mul_(m)

        optimizer = sgd(model.parameters(), hp["lr"])
        for epoch in range(hp["epochs"]):
            random_labels = torch.randint(0, data.num_classes, (len(data.forget),))
            mixed = data.train.relabel(data.forget, random_labels)
            train_epochs(model, mixed, runtime, epochs=1, batch_size=bs, optimizer=optimizer,
                         before_step=mask_gradients, what="SalUn loss",
                         on_epoch=lambda _, logs: ctx.epoch_end("salun", epoch, logs, True))
        return {"salient_share": k / magnitudes.numel()}
