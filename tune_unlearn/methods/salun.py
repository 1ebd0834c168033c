"""SalUn (Fan, Liu, Zhang, Wong, Wei, Liu: "SalUn: Empowering Machine Unlearning via Gradient-
based Weight Saliency in Both Image Classification and Generation", ICLR 2024), in its
random-label form, following OPTML-Group/Unlearn-Saliency @ a6e89fd (Classification/:
generate_mask.py, unlearn/RL.py, unlearn/impl.py).

1. Saliency (generate_mask.py): the gradient of -CE on D_f, summed over D_f in eval mode;
   the `mask_ratio` (50%) of all parameters with the largest |gradient|, ranked globally
   (not per layer), are salient.
2. `epochs` epochs of SGD (momentum 0.9, weight decay 5e-4, constant learning rate: the
   reference's milestones 91 and 136 lie beyond its 10 epochs), batch 256, training mode, the
   experiment's augmentation (the reference's loaders use its training transform). Gradients
   are masked to the salient parameters, and after every step the non-salient parameters are
   put back to their original values and their momentum is zeroed (commit a6e89fd, "Fix weight
   decay", 2026-02: before it, weight decay and momentum still moved them).
   `loop` is RL.py's loop, which depends on the data set:
   - `two_pass` (its CIFAR-10 and SVHN branch): a pass over D_f with labels drawn uniformly at
     random for every batch (the true one may come up), then a separate pass over D_r;
   - `mixed` (its CIFAR-100 and TinyImageNet branch): one pass over D_r together with D_f,
     whose random labels are drawn anew every epoch;
   - `auto` (default): `two_pass` for 10 classes or fewer (digits, Fashion-MNIST, CIFAR-10,
     SVHN), `mixed` above (CIFAR-100, ImageNet-style sets), the reference's choice on the data
     sets it names.

Departures, and their likely effect: 3 epochs by default instead of the reference's 10, which
follow 182-epoch recipes (the search range reaches 10): less forgetting and less damage at
the defaults. BatchNorm running statistics are not masked (nor are they in the reference).

Searched (the default search space): `mask_ratio`, `epochs` and `lr`, and the batch size from 16 to 256 (log):
DeepUnlearn searches 64, 128 and 256 for every method, on sets of thousands of samples; 16 and
32 give the digits experiments' forget set of about 126 samples a comparable number of steps.
The default stays the reference's 256. A small batch costs more per sample, and the objective's
priced cost says so.
"""

from __future__ import annotations

from . import register
from .base import Choice, Context, Float, Int, Method, UnlearnData

LOOPS = ("auto", "two_pass", "mixed")


def chosen_loop(loop: str, num_classes: int) -> str:
    """The loop `auto` stands for: the reference's per data set, by its number of classes."""
    if loop != "auto":
        return loop
    return "two_pass" if num_classes <= 10 else "mixed"


@register
class SalUn(Method):
    name = "salun"
    epochs_hparam = "epochs"
    hparams = (
        Float("mask_ratio", 0.5, 0.1, 0.9, min=0.0, max=1.0, help="share of weights updated (largest forget gradient)"),
        Int("epochs", 3, 1, 10, min=1, help="passes over the forget and the retain set"),
        Float("lr", 0.01, 1e-3, 0.1, log=True, min=0.0, help="learning rate (constant)"),
        Choice("loop", "auto", LOOPS, searched=False,
               help="two_pass (D_f with per-batch random labels, then D_r), mixed (one pass over both), or auto: "
                    "the reference's choice by number of classes"),
        Int("batch_size", 256, 16, 256, log=True, min=2, help="batch size"),
    )

    def unlearn(self, model, data: UnlearnData, hp: dict, ctx: Context) -> dict:
        import torch
        import torch.nn.functional as F
        from ..training import accumulate_gradients, run_epochs, sgd, train_epochs

        runtime, bs = ctx.runtime, hp["batch_size"]
        # 1. saliency of every parameter for the forgetting loss
        accumulate_gradients(model, ((data.forget, -1.0),), runtime, bs)
        params = [p for p in model.parameters() if p.grad is not None]
        magnitudes = torch.cat([p.grad.abs().flatten().float() for p in params])
        k = max(1, round(hp["mask_ratio"] * magnitudes.numel()))
        # exactly k weights, chosen by index: many gradients tie at 0, so a value cutoff would not do
        flat = torch.zeros_like(magnitudes)
        flat[torch.topk(magnitudes, k).indices] = 1.0
        masks = {p: m.view_as(p).to(p.dtype) for p, m in zip(params, flat.split([p.numel() for p in params]))}
        original = {p: p.detach().clone() for p in params}
        model.zero_grad(set_to_none=True)
        optimizer = sgd(model.parameters(), hp["lr"])

        # 2. only the salient weights learn: masked gradients, and after every step the others
        # back at their original values with no momentum (weight decay would move them)
        def mask_gradients():
            for p, m in masks.items():
                if p.grad is not None:
                    p.grad.mul_(m)

        def restore_others():
            with torch.no_grad():
                for p, m in masks.items():
                    p.copy_(torch.where(m.bool(), p, original[p]))
                    buffer = optimizer.state.get(p, {}).get("momentum_buffer")
                    if buffer is not None:
                        buffer.mul_(m)

        def random_label_loss(batch):  # labels drawn anew for every batch
            x, y = batch
            return F.cross_entropy(model(x), torch.randint(0, data.num_classes, y.shape, device=y.device))

        loop = chosen_loop(hp["loop"], data.num_classes)
        for epoch in range(hp["epochs"]):
            if loop == "two_pass":
                run_epochs(model, runtime, epochs=1, optimizer=optimizer, loss_fn=random_label_loss,
                           batches=lambda: data.forget.batches(bs, shuffle=True, augment=True),
                           before_step=mask_gradients, after_step=restore_others, what="SalUn forget loss",
                           on_epoch=lambda _, logs: ctx.epoch_end("salun_forget", epoch, logs, False))
                part = data.retain
            else:
                part = data.train.relabel(data.forget, torch.randint(0, data.num_classes, (len(data.forget),)))
            train_epochs(model, part, runtime, epochs=1, batch_size=bs, optimizer=optimizer,
                         before_step=mask_gradients, after_step=restore_others, what="SalUn loss",
                         on_epoch=lambda _, logs: ctx.epoch_end("salun", epoch, logs, True))
        return {"salient_share": k / magnitudes.numel()}
