"""NegGrad+ (Kurmanji, Triantafillou, Hayes, Triantafillou: "Towards Unbounded Machine
Unlearning", NeurIPS 2023): gradient descent on the retain set and ascent on the forget set,
minimising alpha * CE(D_r) - (1 - alpha) * CE(D_f). DeepUnlearn found it among the strongest
methods once tuned.

Every retain batch is paired with a forget batch of the same size (the forget set is cycled);
one epoch is one pass over D_r. SGD (momentum 0.9, weight decay 5e-4) with cosine decay. The
ascent term is unbounded: too small an `alpha` or too large an `lr` diverges, and the trial
then fails as diverged.
"""

from __future__ import annotations

import torch.nn.functional as F

from ..data import batch_count
from ..training import cosine_schedule, endless, run_epochs, sgd
from . import register
from .base import Context, Float, Int, Method, UnlearnData


@register
class NegGradPlus(Method):
    name = "neggrad_plus"
    epochs_hparam = "epochs"
    hparams = (
        Float("alpha", 0.99, 0.9, 0.999, min=0.0, max=1.0, help="weight of the retain loss (1 - alpha on the forget ascent)"),
        Int("epochs", 3, 1, 8, min=1, help="passes over the retain set"),
        Float("lr", 0.01, 1e-3, 0.1, log=True, min=0.0, help="initial learning rate (cosine to 0)"),
    )

    def unlearn(self, model, data: UnlearnData, hp: dict, ctx: Context) -> dict:
        a, bs = hp["alpha"], ctx.batch_size
        forget = endless(data.forget, bs)
        optimizer = sgd(model.parameters(), hp["lr"])
        scheduler = cosine_schedule(optimizer, hp["epochs"] * batch_count(len(data.retain), bs))

        def loss(batch):
            (xr, yr), (xf, yf) = batch
            return a * F.cross_entropy(model(xr), yr) - (1 - a) * F.cross_entropy(model(xf), yf)

        run_epochs(model, ctx.runtime, epochs=hp["epochs"], optimizer=optimizer, scheduler=scheduler, loss_fn=loss,
                   batches=lambda: zip(data.retain.batches(bs, shuffle=True, augment=True), forget),
                   what="NegGrad+ loss", on_epoch=lambda epoch, logs: ctx.epoch_end("neggrad_plus", epoch, logs, True))
        return {}
