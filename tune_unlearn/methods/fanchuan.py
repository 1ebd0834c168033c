"""Fanchuan: a top entry of the NeurIPS 2023 machine unlearning competition (Kaggle discussion
458721, titled "2nd place solution" on the private leaderboard; see Triantafillou et al. 2024,
"Are we making progress in unlearning?"), as DeepUnlearn ports it: xcadet/deepunlearn @
6830ff6, munl/unlearning/kgltop1.py (`kgltop1`). The notebook itself was not retrievable; its
write-up agrees with the port on every value below.

1. One pass over D_f pushing the softmax towards uniform: minimise KL(uniform || softmax)
   (SGD, lr `kl_lr` = 5e-3, momentum 0.9, no schedule).
2. `epochs` (8) rounds of: a contrastive pass over D_f, each forget batch against a retain
   batch, minimising -mean(log_softmax(z_f z_r^T / `temperature`)) over the network's output
   logits z with the retain side detached (SGD, lr `contrast_lr` = 3e-4, momentum 0.9, cosine
   to 1e-6 stepped over the contrastive steps only); then one cross-entropy epoch on D_r (SGD,
   lr `retain_lr` * batch/64, momentum 0.9, weight decay 1e-2, constant).
Three optimisers, their momentum kept from round to round; batch 256 for every stage; train
mode throughout, so BatchNorm statistics move in every pass.

The similarity matrix is computed in fp32 with autocast off: under bf16 autocast a matmul is
cast back to bf16 even from fp32 inputs, and on logits of a few hundred that costs several
units per entry (the reference runs fp32).

Departures, and their likely effect:
- The retain epochs use the experiment's augmentation (the reference's loaders use the test
  transform): slightly slower to fit D_r, slightly better held-out accuracy.
- The retain partners of the contrastive steps come from one endless shuffled stream, where the
  reference pairs each round's forget batches with the first batches of a fresh permutation of
  D_r: the same distribution of pairs.

Searched (the default search space): `epochs`, `temperature` and the three learning rates, and
the batch size from 16 to 256 (log): DeepUnlearn searches 64, 128 and 256 for every method, on
sets of thousands of samples; at 256 a forget set of about 126 samples (the digits
experiments) is one contrastive step per round, at 16 it is eight. The default stays the
reference's 256. A small batch costs more per sample, and the objective's priced cost says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import register
from .base import Context, Float, Int, Method, UnlearnData

if TYPE_CHECKING:  # annotations only; torch is imported where it is used
    import torch


def logit_similarity(forget_logits: torch.Tensor, retain_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """f(x_f) f(x_r)^T / T in fp32 whatever autocast is active, the retain side detached."""
    import torch

    with torch.autocast(device_type=forget_logits.device.type, enabled=False):
        return forget_logits.float() @ retain_logits.detach().float().T / temperature


@register
class Fanchuan(Method):
    name = "fanchuan"
    epochs_hparam = "epochs"
    hparams = (
        Int("epochs", 8, 1, 8, min=1, help="contrastive + retain rounds"),
        Float("temperature", 1.15, 0.5, 2.0, min=1e-3, help="temperature of the forget-retain logit similarity"),
        Float("kl_lr", 5e-3, 1e-3, 2e-2, log=True, min=0.0, help="learning rate of the uniform-KL pass"),
        Float("contrast_lr", 3e-4, 3e-5, 3e-3, log=True, min=0.0, help="initial learning rate of the contrastive steps"),
        Float("retain_lr", 1e-3, 1e-4, 1e-2, log=True, min=0.0, help="retain learning rate at batch 64 (scaled linearly)"),
        Int("batch_size", 256, 16, 256, log=True, min=2, help="batch size of every stage"),
    )

    def unlearn(self, model, data: UnlearnData, hp: dict, ctx: Context) -> dict:
        import torch
        import torch.nn.functional as F
        from ..data.parts import batch_count
        from ..training import check_finite, endless, run_epochs, sgd

        bs, runtime = hp["batch_size"], ctx.runtime
        # 1. one pass over the forget set towards uniform predictions
        model.train()
        kl_opt = sgd(model.parameters(), hp["kl_lr"], weight_decay=0.0)
        for x, _ in data.forget.batches(bs, shuffle=True):
            with runtime.autocast():
                logits = model(x)
                uniform = torch.full_like(logits, 1.0 / logits.shape[1], dtype=torch.float32)
                loss = F.kl_div(F.log_softmax(logits.float(), dim=1), uniform, reduction="batchmean")
            kl_opt.zero_grad(set_to_none=True)
            loss.backward()
            kl_opt.step()
        check_finite(float(loss.detach()), "uniform-KL loss")
        # 2. contrastive forget passes, each followed by a retain epoch
        forget_opt = sgd(model.parameters(), hp["contrast_lr"], weight_decay=0.0)
        forget_steps = hp["epochs"] * batch_count(len(data.forget), bs)
        forget_sched = torch.optim.lr_scheduler.CosineAnnealingLR(forget_opt, T_max=max(1, forget_steps), eta_min=1e-6)
        retain_opt = sgd(model.parameters(), hp["retain_lr"] * bs / 64, weight_decay=1e-2)
        partners = endless(data.retain, bs)
        t = hp["temperature"]

        def contrastive(batch):
            (xf, _), (xr, _) = batch
            return -F.log_softmax(logit_similarity(model(xf), model(xr), t), dim=-1).mean()

        def ce(batch):
            return F.cross_entropy(model(batch[0]), batch[1])

        for epoch in range(hp["epochs"]):
            run_epochs(model, runtime, epochs=1, optimizer=forget_opt, scheduler=forget_sched, loss_fn=contrastive,
                       batches=lambda: zip(data.forget.batches(bs, shuffle=True), partners), what="contrastive loss")
            run_epochs(model, runtime, epochs=1, optimizer=retain_opt, loss_fn=ce, what="retain loss",
                       batches=lambda: data.retain.batches(bs, shuffle=True, augment=True),
                       on_epoch=lambda _, logs: ctx.epoch_end("fanchuan", epoch, logs, True))
        return {}
