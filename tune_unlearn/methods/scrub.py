"""SCRUB (Kurmanji, Triantafillou, Hayes, Triantafillou: "Towards Unbounded Machine
Unlearning", NeurIPS 2023). The student starts from the original model; the teacher is the
frozen original.

For `epochs` epochs: during the first `max_epochs` (all of them if larger), a max-pass over D_f that maximises
KL(teacher || student) at temperature `temperature` (4); then, every epoch, a min-pass over
D_r minimising 0.99 * CE + `kl_weight` * KL(teacher || student). SGD (lr `lr`, momentum 0.9,
weight decay 5e-4), both in train mode.

Departures: the reference code's step decay of the learning rate (epochs 3, 5, 9) is left out,
since the default runs are shorter; the min-passes use the experiment's augmentation.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..training import run_epochs, sgd
from . import register
from .base import Context, Float, Int, Method, UnlearnData


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened outputs, times t^2 (Hinton et al.)."""
    return F.kl_div(F.log_softmax(student_logits.float() / t, dim=1), F.softmax(teacher_logits.float() / t, dim=1),
                    reduction="batchmean") * t * t


@register
class SCRUB(Method):
    name = "scrub"
    epochs_hparam = "epochs"
    hparams = (
        Int("epochs", 3, 1, 10, min=1, help="epochs of min-passes over the retain set"),
        Int("max_epochs", 1, 1, 3, min=0, help="epochs that start with a max-pass over the forget set"),
        Float("lr", 5e-4, 1e-4, 1e-2, log=True, min=0.0, help="learning rate"),
        Float("kl_weight", 0.001, 1e-4, 1.0, log=True, min=0.0, help="weight of the KL term in the min-passes"),
        Float("temperature", 4.0, 1.0, 8.0, min=1e-3, help="distillation temperature"),
        Int("forget_batch_size", 64, 16, 512, log=True, min=2, searched=False, help="batch size of the max-passes"),
    )

    def unlearn(self, model, data: UnlearnData, hp: dict, ctx: Context) -> dict:
        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        t, bs = hp["temperature"], ctx.batch_size
        optimizer = sgd(model.parameters(), hp["lr"])

        def teacher_logits(x):
            with torch.no_grad():
                return teacher(x)

        def maximise(batch):
            x, _ = batch
            return -distill_kl(model(x), teacher_logits(x), t)

        def minimise(batch):
            x, y = batch
            logits = model(x)
            return 0.99 * F.cross_entropy(logits, y) + hp["kl_weight"] * distill_kl(logits, teacher_logits(x), t)

        for epoch in range(hp["epochs"]):
            if epoch < hp["max_epochs"]:
                run_epochs(model, ctx.runtime, epochs=1, optimizer=optimizer, loss_fn=maximise, what="SCRUB max loss",
                           batches=lambda: data.forget.batches(hp["forget_batch_size"], shuffle=True))
            run_epochs(model, ctx.runtime, epochs=1, optimizer=optimizer, loss_fn=minimise, what="SCRUB min loss",
                       batches=lambda: data.retain.batches(bs, shuffle=True, augment=True),
                       on_epoch=lambda _, logs: ctx.epoch_end("scrub", epoch, logs, True))
        return {}
