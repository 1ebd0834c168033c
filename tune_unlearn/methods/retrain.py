"""Retraining from scratch on the retain set with the experiment's own recipe: the gold
standard every method is compared with, run as a method so that its time and metrics are
measured exactly like the others'. It never reads the forget set. (DeepUnlearn's `naive`,
xcadet/deepunlearn @ 6830ff6, munl/unlearning/naive.py, is the same idea with its own recipe.)

`epoch_fraction` < 1 retrains for that share of the recipe's epochs (a cheaper "retrain"
baseline); at 1.0 with run seed = the recipe's seed it reproduces the cached reference.
"""

from __future__ import annotations

from dataclasses import replace

from . import register
from .base import Context, Float, Method, UnlearnData


@register
class Retrain(Method):
    name = "retrain"
    uses_forget = False
    hparams = (
        Float("epoch_fraction", 1.0, 0.1, 1.0, min=0.01, max=1.0,
              help="share of the recipe's epochs (1.0: the reference procedure)"),
    )

    def unlearn(self, model, data: UnlearnData, hp: dict, ctx: Context) -> dict:
        from ..training import train_recipe

        epochs = max(1, round(ctx.recipe.epochs * hp["epoch_fraction"]))
        fresh = ctx.new_model()  # the runner has seeded the RNG: same initialisation as the reference
        train_recipe(fresh, data.retain, replace(ctx.recipe, epochs=epochs), ctx.runtime,
                     on_epoch=lambda epoch, logs: ctx.epoch_end("retrain", epoch, logs, False))
        model.load_state_dict(fresh.state_dict())
        return {"epochs": epochs}
