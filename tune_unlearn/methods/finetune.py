"""Fine-tuning on the retain set only ("FT"; the standard baseline of the unlearning
literature, e.g. Warnecke et al. 2023, Golatkar et al. 2020): forgetting happens only through
catastrophic forgetting of what D_r does not support. It never reads the forget set.

SGD (momentum 0.9, weight decay 5e-4), cosine decay from `lr` over the epochs, stepped per
batch, the recipe's batch size and augmentation. DeepUnlearn's baseline (xcadet/deepunlearn @
6830ff6, munl/unlearning/finetune.py) differs, with the likely effect: lr 0.1 and batch 256 (a
larger step, more forgetting and more damage at the same epochs), the cosine stepped per epoch,
no augmentation; it tunes these with Optuna, as the `finetune` space here does.
"""

from __future__ import annotations

from . import register
from .base import Context, Float, Int, Method, UnlearnData


@register
class Finetune(Method):
    name = "finetune"
    uses_forget = False
    epochs_hparam = "epochs"
    hparams = (
        Int("epochs", 5, 1, 10, min=1, help="fine-tuning epochs on the retain set"),
        Float("lr", 0.02, 1e-3, 0.1, log=True, min=0.0, help="initial learning rate (cosine to 0)"),
    )

    def unlearn(self, model, data: UnlearnData, hp: dict, ctx: Context) -> dict:
        from ..training import finetune

        finetune(model, data.retain, ctx.runtime, epochs=hp["epochs"], lr=hp["lr"], batch_size=ctx.batch_size,
                 on_epoch=lambda epoch, logs: ctx.epoch_end("finetune", epoch, logs, True))
        return {}
