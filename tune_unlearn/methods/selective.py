"""Selective destructive forgetting (Murakami, Shibata, Yamauchi: "Speeding up machine
unlearning by selective destructive forgetting", the paper this project implements; no public
code accompanies it, so the reference is the paper, with Piggyback (Mallya et al. 2018) for the
mask).

1. Mask learning on the forget set only (Piggyback): every weight frozen, a real-valued mask
   per conv/linear weight initialised to `x_init`, binarised at `threshold`, trained with
   Adam (`mask_lr`) on cross-entropy + `lam` * ||X||_1 for `mask_epochs` passes over D_f.
   The L1 term sinks the masks of weights the forget data does not need; the survivors
   (Y = 1) are the weights the forget data relies on.
2. Selective decay: inside `layer_scope` only (the paper: `layer4`, the last two residual
   blocks), multiply the selected weights (Y = 1) by `decay`.
3. Recovery on the retain set: optionally re-estimating the BatchNorm statistics
   (`bn_recalibrate`: decaying a filter before a BatchNorm mostly changes what its running
   statistics should be), then fine-tuning for `ft_epochs` (SGD, momentum 0.9, cosine from
   `ft_lr`).

Where the work happens (searched, so the paper's behaviour stays one setting away):
- `mask_scope`: `all` learns a mask on every conv/linear weight (the paper); `scope` only on
  the weights in `layer_scope`, with the rest frozen and unmasked. Nothing before the scope
  changes during mask learning (eval mode, no augmentation), so the activations entering it are
  computed once for D_f and the mask is learned through the scope alone. The decay only ever
  touches the scope, so both select the same kind of weights; `scope` spends nothing on masks
  it would throw away. With `layer_scope: all` the two are the same.
- `ft_scope`: `all` fine-tunes every weight (the paper); `scope` only the scope and the
  classifier, with everything before the scope frozen in eval mode, so backward stops at the
  scope's input.

Defaults: `mask_scope: scope`, `ft_scope: all`, `bn_recalibrate: false`: the cheapest setting
that matched the retrained models within their spread on the default experiment
(experiments/selective_scopes.py; docs/methods.md has the measurements). `mask_scope: all,
ft_scope: all` is the paper's procedure.

`lam`: the L1 term is a sum over every mask entry, as in the paper's equation (6), so `lam` is
the L1 gradient of each entry. Adam scales every entry's step to about `mask_lr` whatever its
gradient, so `lam` acts only against two numbers: Adam's eps (1e-8; below it the L1 pressure is
damped to lam/1e-8 of a full step, so at 1e-9 entries sink at ~9% of the rate) and each entry's
cross-entropy gradient |dCE/dX| (an entry leaves the selection once lam outweighs it). Entries
without any cross-entropy gradient sink for every lam above ~1e-8; among the rest, lam sweeps
the selection between about 1e-8 and the largest gradients (`experiments/mask_gradients.py`
prints their distribution for any experiment). Above that nothing stays selected. Mask learning uses no
data augmentation, so the mask selects what the forget samples themselves rely on.
"""

from __future__ import annotations

from ..errors import UserError
from .scopes import SCOPES
from . import register
from .base import Choice, Context, Float, Int, Method, UnlearnData


@register
class SelectiveForgetting(Method):
    name = "selective"
    epochs_hparam = "ft_epochs"
    hparams = (
        Float("lam", 1e-6, 1e-10, 1e-2, log=True, min=0.0,
              help="L1 weight on the real-valued mask (a sum over all entries)"),
        Float("threshold", 5e-3, 1e-4, 9e-3, min=0.0,
              help="binarisation threshold: Y = [X >= threshold]; must not exceed x_init"),
        Float("x_init", 1e-2, 1e-2, 5e-2, min=0.0, help="initial value of every mask entry"),
        Float("decay", 0.1, 0.0, 1.0, min=0.0, max=1.0, help="factor applied to the selected weights in scope"),
        Choice("layer_scope", "layer4", SCOPES, help="where selected weights are decayed"),
        Int("ft_epochs", 2, 0, 6, min=0, help="fine-tuning epochs on the retain set"),
        Choice("mask_scope", "scope", ("all", "scope"), help="mask only the layer scope's weights, or every weight (the paper)"),
        Choice("ft_scope", "all", ("all", "scope"), help="fine-tune every weight or only the scope and the classifier"),
        Choice("bn_recalibrate", False, (False, True), help="re-estimate BatchNorm statistics on D_r before fine-tuning"),
        # An entry needs about (x_init - threshold) / mask_lr Adam steps to cross the threshold:
        # 10 steps at these defaults, against ~120 steps on a 6,000-sample forget set.
        Int("mask_epochs", 10, 3, 100, log=True, min=1, searched=False, help="mask-learning passes over the forget set"),
        Float("mask_lr", 5e-4, 1e-5, 2e-3, log=True, min=0.0, searched=False, help="Adam learning rate of the mask"),
        Int("mask_batch_size", 512, 32, 2048, log=True, min=1, searched=False, help="mask-learning batch size"),
        Float("ft_lr", 0.02, 1e-3, 0.1, log=True, min=0.0, searched=False, help="initial fine-tuning learning rate (cosine to 0)"),
        # Recovery's batch size trades steps against time (cost.py prices every step): searched,
        # as DeepUnlearn searches its methods' batch sizes.
        Int("ft_batch_size", 128, 16, 256, log=True, min=2, help="fine-tuning batch size"),
        Float("mask_stop_delta", 0.0, 0.0, 0.05, min=0.0, searched=False,
              help="stop mask learning once an epoch adds less than this to the zero share (0: never)"),
    )

    ordered = (("threshold", "x_init"),)  # every mask entry must start selected

    def check(self, hp: dict) -> None:
        if hp["threshold"] <= 0:
            raise UserError(f"hyperparameter threshold must be > 0, got {hp['threshold']!r}")
        super().check(hp)

    def unlearn(self, model, data: UnlearnData, hp: dict, ctx: Context) -> dict:
        import torch
        from .masking import CachedInputs, learn_mask, maskable_names, scope_names
        from ..network.stages import first_stage, prefix_modules
        from ..training import finetune, recalibrate_batchnorm

        scope = scope_names(maskable_names(model), hp["layer_scope"])
        start = first_stage(scope)
        if hp["mask_scope"] == "scope" and start != "stem":  # the prefix is frozen: learn from its output
            part, names = CachedInputs(model, data.forget, ctx.runtime, start, ctx.eval_batch_size), scope
        else:
            part, names, start = data.forget, None, "stem"
        mask = learn_mask(
            model, part, ctx.runtime,
            x_init=hp["x_init"], threshold=hp["threshold"], lam=hp["lam"], lr=hp["mask_lr"],
            epochs=hp["mask_epochs"], batch_size=hp["mask_batch_size"], names=names, start=start,
            stop_delta=hp["mask_stop_delta"],
            on_epoch=lambda epoch, logs: ctx.epoch_end("mask", epoch, logs, False),
        )
        selected = mask.selected()
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name in scope:
                params[name].mul_(torch.where(selected[name], hp["decay"], 1.0))
        decayed = int(sum(selected[n].sum() for n in scope))
        in_scope = sum(selected[n].numel() for n in scope)
        stats = {
            "mask_zero_share": mask.zero_share(),
            "mask_zero_share_scope": mask.zero_share(scope),
            "decayed_weights": decayed,
            "scope_weights": in_scope,
        }
        del mask, selected, part
        if hp["bn_recalibrate"]:
            recalibrate_batchnorm(model, data.retain, ctx.eval_batch_size)
        frozen = [] if hp["ft_scope"] == "all" else prefix_modules(model, first_stage(scope + ["fc.weight"]))
        finetune(model, data.retain, ctx.runtime, epochs=hp["ft_epochs"], lr=hp["ft_lr"], batch_size=hp["ft_batch_size"],
                 frozen=frozen, on_epoch=lambda epoch, logs: ctx.epoch_end("finetune", epoch, logs, True))
        return stats
