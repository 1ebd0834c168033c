"""SCRUB (Kurmanji, Triantafillou, Hayes, Triantafillou: "Towards Unbounded Machine
Unlearning", NeurIPS 2023). The student starts from the original model; the teacher is the
frozen original.

For `epochs` epochs: during the first `max_epochs`, a max-pass over D_f (batch 64) that
maximises KL(teacher || student) at temperature `temperature`; then, every epoch, a min-pass
over D_r (batch 32) minimising CE + `kl_weight` * KL(teacher || student). Adam (lr `lr`,
weight decay 0.1), the learning rate multiplied by 0.1 at 50%, 80% and 90% of the epochs;
student in train mode, teacher in eval mode.

Defaults as in the SCRUB notebooks (meghdadk/SCRUB, small_scale_unlearning.ipynb: msteps 3,
sgda_epochs 10, lr 5e-4, alpha 0.5, gamma 1, kd_T 2, retain_bs 32, forget_bs 64, Adam with
weight decay 0.1) and DeepUnlearn's port of it (`munl/unlearning/scrub.py`, the same values and
decay epochs). Departures: the min-passes use the experiment's augmentation; DeepUnlearn's
weight-averaging smoothing term (dropped from the original repository) is left out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import copy

from . import register
from .base import Context, Float, Int, Method, UnlearnData

if TYPE_CHECKING:  # annotations only; torch is imported where it is used
    import torch


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened outputs, times t^2 (Hinton et al.)."""
    import torch.nn.functional as F

    return F.kl_div(F.log_softmax(student_logits.float() / t, dim=1), F.softmax(teacher_logits.float() / t, dim=1),
                    reduction="batchmean") * t * t


@register
class SCRUB(Method):
    name = "scrub"
    epochs_hparam = "epochs"
    hparams = (
        Int("epochs", 10, 3, 10, min=1, help="epochs of min-passes over the retain set"),
        Int("max_epochs", 3, 1, 5, min=0, help="epochs that start with a max-pass over the forget set"),
        Float("lr", 5e-4, 1e-4, 5e-3, log=True, min=0.0, help="Adam learning rate (x0.1 at 50, 80, 90% of the epochs)"),
        Float("kl_weight", 0.5, 0.05, 2.0, log=True, min=0.0, help="weight of the KL term in the min-passes"),
        Float("temperature", 2.0, 1.0, 8.0, min=1e-3, help="distillation temperature"),
        Float("weight_decay", 0.1, 0.0, 0.1, min=0.0, searched=False, help="Adam weight decay (L2)"),
        Int("forget_batch_size", 64, 16, 512, log=True, min=2, searched=False, help="batch size of the max-passes"),
        Int("retain_batch_size", 32, 16, 512, log=True, min=2, searched=False, help="batch size of the min-passes"),
    )

    def unlearn(self, model, data: UnlearnData, hp: dict, ctx: Context) -> dict:
        import torch
        import torch.nn.functional as F
        from ..training import run_epochs

        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        t, epochs = hp["temperature"], hp["epochs"]
        optimizer = torch.optim.Adam(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
        decay_at = {int(epochs * f) for f in (0.5, 0.8, 0.9)}  # epochs (from 1) after which the rate drops

        def teacher_logits(x):
            with torch.no_grad():
                return teacher(x)

        def maximise(batch):
            x, _ = batch
            return -distill_kl(model(x), teacher_logits(x), t)

        def minimise(batch):
            x, y = batch
            logits = model(x)
            return F.cross_entropy(logits, y) + hp["kl_weight"] * distill_kl(logits, teacher_logits(x), t)

        for epoch in range(epochs):
            if epoch < hp["max_epochs"]:
                run_epochs(model, ctx.runtime, epochs=1, optimizer=optimizer, loss_fn=maximise, what="SCRUB max loss",
                           batches=lambda: data.forget.batches(hp["forget_batch_size"], shuffle=True),
                           on_epoch=lambda _, logs: ctx.epoch_end("scrub_max", epoch, logs, False))
            run_epochs(model, ctx.runtime, epochs=1, optimizer=optimizer, loss_fn=minimise, what="SCRUB min loss",
                       batches=lambda: data.retain.batches(hp["retain_batch_size"], shuffle=True, augment=True),
                       on_epoch=lambda _, logs: ctx.epoch_end("scrub", epoch, logs, True))
            if epoch + 1 in decay_at:
                for group in optimizer.param_groups:
                    group["lr"] *= 0.1
        return {}
