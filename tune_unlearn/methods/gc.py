"""Gradient Collision (Koh et al.: "Disposable Transfer Learning for Selective Source Task
Unlearning", ICCV 2023): knowledge disposal of a source task after transfer learning. No
public code accompanies the paper: the reference is its text.

For `epochs` passes over the target (retain) set, each step minimises

    CE(target batch) + `gc_weight` * mean over pairs (i < j) of sim(g_i, g_j),

where g_i is the gradient of the source loss (cross-entropy on forget / source batch i) with
respect to the parameters in `scope`, and sim is their cosine similarity (or their inner
product floored at zero).
Driving the gradients of different source mini-batches apart leaves the model no consistent
direction for the source task, which is what Piggyback relearning would exploit. SGD
(momentum 0.9, weight decay 5e-4), cosine decay.

What the similarity is taken between: the paper's abstract says GC "leads the gradient vectors
of mini-batches in different directions", so here g_i are gradients of different source
mini-batches (`source_batches` of them, `source_batch_size` samples each). The seed article of
this project paraphrases it as the inner product of *sample* gradients. No public code settles
it; a per-sample version would need one second-order gradient per sample, many times the cost.

Departures: the gradient inner products are taken over the parameters in `scope` (all by
default), not only over a feature extractor with a separate source head; the inner product is
floored at zero (unbounded, it drives the weights to diverge); the step uses
`source_batches` source mini-batches drawn anew at every step; the source passes run with
BatchNorm in eval mode, so they do not drift its statistics towards the source task; each
step's gradient norm is clipped at `max_grad_norm`.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from .scopes import SCOPES
from . import register
from .base import Choice, Context, Float, Int, Method, UnlearnData

if TYPE_CHECKING:  # annotations only; torch is imported where it is used
    import torch


def gradient_collision(model, batches: list[tuple[torch.Tensor, torch.Tensor]], params: list[torch.Tensor],
                       similarity: str = "cosine") -> torch.Tensor:
    """Mean pairwise similarity of the source-loss gradients of `batches` (differentiable)."""
    import torch
    import torch.nn.functional as F

    grads = []
    for x, y in batches:
        g = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)
        grads.append(torch.cat([t.flatten().float() for t in g]))
    values = []
    for a, b in itertools.combinations(grads, 2):
        # The inner product is floored at zero: below it, minimising only inflates opposed
        # gradients without bound (the weights diverge); orthogonal is already "apart".
        values.append(F.cosine_similarity(a, b, dim=0) if similarity == "cosine" else F.relu((a * b).sum()))
    return torch.stack(values).mean()


@register
class GradientCollision(Method):
    name = "gc"
    epochs_hparam = "epochs"
    hparams = (
        Float("gc_weight", 1.0, 1e-2, 1e2, log=True, min=0.0, help="weight of the gradient-collision term"),
        Choice("similarity", "cosine", ("cosine", "inner"), help="similarity of source gradients to minimise"),
        Int("epochs", 3, 1, 8, min=1, help="passes over the retain (target) set"),
        Float("lr", 0.01, 1e-3, 0.1, log=True, min=0.0, help="initial learning rate (cosine to 0)"),
        Int("source_batches", 2, 2, 4, min=2, help="source mini-batches compared at every step"),
        Float("max_grad_norm", 5.0, 0.5, 50.0, log=True, min=0.0, searched=False,
              help="clip the step's gradient norm (second-order terms can be large); 0 turns it off"),
        Choice("scope", "all", SCOPES, searched=False, help="parameters whose source gradients collide"),
        Int("source_batch_size", 64, 16, 256, log=True, min=2, searched=False, help="source mini-batch size"),
    )

    def unlearn(self, model, data: UnlearnData, hp: dict, ctx: Context) -> dict:
        import torch
        import torch.nn.functional as F
        from ..data.parts import batch_count
        from .masking import maskable_names, scope_names
        from ..training import cosine_schedule, endless, run_epochs, sgd

        params = dict(model.named_parameters())
        scoped = [params[n] for n in scope_names(maskable_names(model), hp["scope"])]  # conv and linear weights
        source = endless(data.forget, hp["source_batch_size"])
        bs = ctx.batch_size
        optimizer = sgd(model.parameters(), hp["lr"])
        scheduler = cosine_schedule(optimizer, hp["epochs"] * batch_count(len(data.retain), bs))
        last = {}

        def loss(batch):
            x, y = batch
            # The source passes only produce gradients: in eval mode they leave BatchNorm's
            # running statistics to the target task (train mode would drift them towards the
            # source and cost target accuracy at evaluation).
            model.eval()
            collision = gradient_collision(model, [next(source) for _ in range(hp["source_batches"])], scoped,
                                           hp["similarity"])
            model.train()
            last["collision"] = collision.detach()
            return F.cross_entropy(model(x), y) + hp["gc_weight"] * collision

        def epoch_end(epoch, logs):
            ctx.epoch_end("gc", epoch, {**logs, "collision": float(last["collision"])}, True)

        def clip():
            if hp["max_grad_norm"] > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), hp["max_grad_norm"])

        run_epochs(model, ctx.runtime, epochs=hp["epochs"], optimizer=optimizer, scheduler=scheduler, loss_fn=loss,
                   batches=lambda: data.retain.batches(bs, shuffle=True, augment=True), what="GC loss",
                   on_epoch=epoch_end, before_step=clip)
        return {"collision_at_end": float(last.get("collision", float("nan")))}
