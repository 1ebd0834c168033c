"""Kookmin: a top entry of the NeurIPS 2023 machine unlearning competition (Kaggle discussion
459200, titled "3rd place solution"; see Triantafillou et al. 2024, "Are we making progress in
unlearning?"), as DeepUnlearn ports it: xcadet/deepunlearn @ 6830ff6,
munl/unlearning/kgltop2.py (`kgltop2`; the write-up gives no learning rate, epochs or batch
size, so those are DeepUnlearn's).

1. Accumulate gradients of +CE on a random retain subset as large as D_f and of -CE on D_f
   (mean-reduced per batch, summed over batches).
2. In every conv layer, re-initialise (Kaiming normal, fan_out) the `reinit_fraction` (30%) of
   weights with the smallest |gradient|, chosen per layer: the weights neither set needs.
3. Fine-tune on D_r for `epochs` (5): SGD (lr `lr` = 1e-3, momentum 0.9, weight decay 5e-4),
   batch 64, the learning rate warming up linearly for half the epochs, then decaying
   linearly, stepped per epoch (at 5 epochs: 1/3, 2/3, 1, 2/3, 1/3 of `lr`), with the loss
   gradients of conv weights scaled by 1 where re-initialised and `other_grad_scale` (0.1)
   elsewhere (weight decay acts on all of them in full, as in the reference).

Departures, and their likely effect:
- The gradients of step 1 are taken in eval mode; the reference runs them in train mode,
  where the forget batches also shift BatchNorm's running statistics (the write-up is silent):
  ours leaves the original's statistics for fine-tuning to adjust.
- The fine-tuning uses the experiment's augmentation (the reference's loaders use the test
  transform): slightly slower to fit D_r.
- The write-up says the 30% is chosen "globally"; the port, like DeepUnlearn's, chooses it per
  layer.
"""

from __future__ import annotations

from . import register
from .base import Context, Float, Int, Method, UnlearnData


def warmup_then_decay(epochs: int):
    """Per-epoch factor: linear warm-up over (epochs + 1) // 2 epochs, then linear decay."""
    total, warm = epochs + 1, max(1, (epochs + 1) // 2)

    def factor(epoch: int) -> float:
        step = epoch + 1
        return step / warm if step <= warm else (total - step) / (total - warm)

    return factor


@register
class Kookmin(Method):
    name = "kookmin"
    epochs_hparam = "epochs"
    hparams = (
        Float("reinit_fraction", 0.3, 0.05, 0.6, min=0.0, max=1.0, help="share of each conv layer re-initialised"),
        Int("epochs", 5, 1, 8, min=1, help="fine-tuning epochs on the retain set"),
        Float("lr", 1e-3, 1e-4, 1e-2, log=True, min=0.0, help="peak learning rate"),
        Float("other_grad_scale", 0.1, 0.01, 1.0, log=True, min=0.0, max=1.0,
              help="gradient scale of the conv weights that were not re-initialised"),
        Int("batch_size", 64, 32, 512, log=True, min=2, searched=False, help="batch size"),
    )

    def unlearn(self, model, data: UnlearnData, hp: dict, ctx: Context) -> dict:
        import torch
        from torch import nn
        from ..training import accumulate_gradients, train_epochs

        bs, runtime = hp["batch_size"], ctx.runtime
        # 1. gradients: +CE on a retain subset of |D_f| samples, -CE on D_f
        subset = data.retain.subset(torch.randperm(len(data.retain))[: len(data.forget)])
        accumulate_gradients(model, ((subset, 1.0), (data.forget, -1.0)), runtime, bs)
        # 2. re-initialise the weights with the smallest |gradient| in every conv layer
        scales, reinit = {}, 0
        with torch.no_grad():
            for name, module in model.named_modules():
                if not isinstance(module, nn.Conv2d):
                    continue
                w = module.weight
                k = round(hp["reinit_fraction"] * w.numel())
                chosen = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
                if k:
                    chosen[torch.topk(-w.grad.abs().flatten(), k).indices] = True
                chosen = chosen.view_as(w)
                fresh = nn.init.kaiming_normal_(torch.empty_like(w), mode="fan_out", nonlinearity="relu")
                w.copy_(torch.where(chosen, fresh, w))
                scales[w] = torch.where(chosen, 1.0, hp["other_grad_scale"]).to(w.dtype)
                reinit += k
        model.zero_grad(set_to_none=True)

        # 3. fine-tune, re-initialised conv weights at full gradient, the others scaled down
        def scale_gradients():
            for w, scale in scales.items():
                if w.grad is not None:
                    w.grad.mul_(scale)

        optimizer = torch.optim.SGD(model.parameters(), lr=hp["lr"], momentum=0.9, weight_decay=5e-4)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_decay(hp["epochs"]))

        def epoch_end(epoch, logs):
            schedule.step()  # the schedule moves per epoch
            ctx.epoch_end("kookmin", epoch, logs, True)

        train_epochs(model, data.retain, runtime, epochs=hp["epochs"], batch_size=bs, optimizer=optimizer,
                     before_step=scale_gradients, on_epoch=epoch_end, what="fine-tuning loss")
        return {"reinitialised_weights": reinit}
