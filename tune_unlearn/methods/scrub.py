"""SCRUB (Kurmanji, Triantafillou, Hayes, Triantafillou: "Towards Unbounded Machine
Unlearning", NeurIPS 2023). The student starts from the original model; the teacher is the
frozen original (eval mode); the student trains in train mode.

Every epoch: during the first `max_epochs` epochs, a max-pass over D_f maximising
KL(teacher || student) at temperature `temperature`; then a min-pass over D_r minimising
`ce_weight` * CE + `kl_weight` * KL(teacher || student). One optimiser for both passes; no
data augmentation; D_r shuffled, D_f in a fixed order.

The default `variant` is what DeepUnlearn benchmarks as SCRUB: `scrubv2`
(xcadet/deepunlearn @ 6830ff6, munl/unlearning/scrubv2.py; its settings.py calls the other
port "SCRUBOLD"), which follows SCRUB's MIA_experiments.ipynb:
- SGD (lr 5e-4, momentum 0.9, weight decay 5e-4), 5 epochs, max-passes in the first 3;
- the learning rate times 0.1 for every milestone below the (1-based) epoch, the milestones
  being int(0.5 E), int(0.8 E), int(0.9 E) with repeats counted: at 5 epochs the rates are
  1, 1, 0.1, 0.1, 0.001 of the base, at 1 epoch 0.001 (repdistiller's adjust_learning_rate);
- T 2, kl_weight (alpha) 0.5, ce_weight (gamma) 1; retain batch 32, forget batch 64;
- rewinding: the error on D_f is measured before every epoch and after the last (E + 1
  states, the original first); the run returns the state whose forget error is closest to the
  final model's error on held-out samples of D_f's classes, the earliest on a tie, and the
  final model where that is the original.

Two more presets are the notebooks of meghdadk/SCRUB @ 98ffb11 (last changed in 812dd5d); a
preset fills every hyperparameter the run does not set itself:
- `large_scale` (large_scale_unlearning.ipynb, the README's choice for full CIFAR-10; an
  All-CNN forgetting one whole class): SGD lr 5e-4, momentum 0.9, weight decay 5e-4, 3 epochs,
  2 max-passes, T 4, kl_weight 0.001, ce_weight 0.99, forget batch 512, retain batch 256,
  decay at epochs 3, 5, 9 (never reached in 3 epochs), no rewinding;
- `small_scale` (small_scale_unlearning.ipynb; an All-CNN with frozen BatchNorm on 6 Lacuna
  classes, 300 samples forgotten): Adam lr 5e-4 with weight decay 0.1, 10 epochs, 3
  max-passes, T 2, kl_weight 0.5, ce_weight 1, retain batch 32, forget batch 64, decay at
  epochs 5, 8, 9, no rewinding.

Departures, and their likely effect:
- Methods never see the validation or test split, so the rewinding's held-out samples are a
  seeded `holdout_fraction` of D_r's samples of D_f's classes (DeepUnlearn: its validation
  split restricted to them), set aside and not trained on while rewinding is on: the min-passes
  see that share fewer samples of those classes, the other classes' all. Where D_r holds no
  sample of D_f's classes (a whole class forgotten), there is nothing to compare with and the
  final model is returned.
- Those held-out samples were in the original's training set, unlike DeepUnlearn's validation
  samples: their error is near 0 from the start, below a retrained model's error on D_f, so
  on a random forget set rewinding leans towards the least-forgotten epoch.
- With a corrective forget set (wrong labels, a backdoor) the rule aims at the wrong target:
  held-out samples carry right labels, so their error is low, while a retrained model's error
  on D_f against its wrong labels is near 100%. It rewinds towards a model that still fits
  the wrong labels whenever an intermediate epoch has a low forget error; `rewind: false`
  turns it off (the search space includes it).
- The states are kept in memory, not written to disk; DeepUnlearn's `smoothing` and `beta`
  terms, which have no effect there, are left out.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from ..errors import one_of
from . import register
from .base import Choice, Context, Float, Int, Method, UnlearnData

if TYPE_CHECKING:  # annotations only; torch is imported where it is used
    import torch

# Each preset: its hyperparameters, and its optimiser and decay milestones (None: DeepUnlearn's
# fractions of the epochs), which are not hyperparameters of their own.
VARIANTS = {
    "deepunlearn": {"hparams": {}, "optimizer": "sgd", "milestones": None},
    "large_scale": {"hparams": {"epochs": 3, "max_epochs": 2, "lr": 5e-4, "weight_decay": 5e-4, "temperature": 4.0,
                                "kl_weight": 0.001, "ce_weight": 0.99, "forget_batch_size": 512,
                                "retain_batch_size": 256, "rewind": False},
                    "optimizer": "sgd", "milestones": (3, 5, 9)},
    "small_scale": {"hparams": {"epochs": 10, "max_epochs": 3, "lr": 5e-4, "weight_decay": 0.1, "temperature": 2.0,
                                "kl_weight": 0.5, "ce_weight": 1.0, "forget_batch_size": 64,
                                "retain_batch_size": 32, "rewind": False},
                    "optimizer": "adam", "milestones": (5, 8, 9)},
}


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened outputs, times t^2 (Hinton et al.)."""
    import torch.nn.functional as F

    return F.kl_div(F.log_softmax(student_logits.float() / t, dim=1), F.softmax(teacher_logits.float() / t, dim=1),
                    reduction="batchmean") * t * t


def milestones(epochs: int, variant: str) -> tuple[int, ...]:
    """The decay milestones of a variant (repeats count: each one multiplies by 0.1)."""
    fixed = VARIANTS[variant]["milestones"]
    return fixed if fixed is not None else tuple(int(epochs * f) for f in (0.5, 0.8, 0.9))


def lr_factor(epoch: int, marks: tuple[int, ...]) -> float:
    """The learning rate's factor in 1-based `epoch`: 0.1 per milestone below it."""
    return 0.1 ** sum(m < epoch for m in marks)


def rewind_index(forget_errors: list[float], heldout_error: float) -> int:
    """The state to return (0: the original, len - 1: the final model): the one whose forget
    error is closest to the held-out error, the earliest on a tie; the final model instead of
    the original."""
    best = min(range(len(forget_errors)), key=lambda k: (abs(forget_errors[k] - heldout_error), k))
    return len(forget_errors) - 1 if best == 0 else best


@register
class SCRUB(Method):
    name = "scrub"
    epochs_hparam = "epochs"
    hparams = (
        Choice("variant", "deepunlearn", tuple(VARIANTS), searched=False,
               help="preset: deepunlearn (scrubv2, SGD, rewinding), large_scale or small_scale (the SCRUB notebooks)"),
        Int("epochs", 5, 1, 10, min=1, help="epochs of min-passes over the retain set"),
        Int("max_epochs", 3, 0, 5, min=0, help="epochs that start with a max-pass over the forget set"),
        Float("lr", 5e-4, 1e-4, 5e-2, log=True, min=0.0, help="learning rate (x0.1 per decay milestone passed)"),
        Float("kl_weight", 0.5, 1e-3, 2.0, log=True, min=0.0, help="weight of the KL term in the min-passes (alpha)"),
        Float("ce_weight", 1.0, 0.5, 1.0, min=0.0, searched=False, help="weight of the CE term in the min-passes (gamma)"),
        Float("temperature", 2.0, 1.0, 5.0, min=1e-3, help="distillation temperature"),
        Float("weight_decay", 5e-4, 1e-5, 0.1, log=True, min=0.0, help="weight decay (L2)"),
        Int("forget_batch_size", 64, 16, 512, log=True, min=2, searched=False, help="batch size of the max-passes"),
        Int("retain_batch_size", 32, 16, 512, log=True, min=2, searched=False, help="batch size of the min-passes"),
        Choice("rewind", True, (True, False), help="return the epoch whose forget error is closest to the held-out error"),
        Float("holdout_fraction", 0.1, 0.05, 0.3, min=0.0, max=0.5, searched=False,
              help="share of the retain set set aside for the rewinding's held-out error"),
    )

    def early_stopping_refusal(self, hp: dict, searched: set[str]) -> str | None:
        # With rewinding SCRUB returns the state of the epoch chosen after its last one, so the
        # per-epoch states ASHA would compare trials on are not the models the trials end with.
        if hp["rewind"] or "rewind" in searched:
            return ("SCRUB rewinds to an epoch chosen after its last one, so its per-epoch reports are not the model it "
                    "returns and ASHA would stop trials on states they never end with; use --scheduler fifo, or fix "
                    "rewind: false")
        return None

    def resolve(self, *layers: dict) -> dict:
        """The variant's preset under the run's own values (the last layer naming a variant wins)."""
        variant = "deepunlearn"
        for layer in layers:
            variant = (layer or {}).get("variant", variant)
        if variant not in VARIANTS:
            raise one_of("value for hyperparameter variant:", variant, VARIANTS)
        return super().resolve(VARIANTS[variant]["hparams"], *layers)

    def unlearn(self, model, data: UnlearnData, hp: dict, ctx: Context) -> dict:
        import torch
        import torch.nn.functional as F
        from ..training import predict, run_epochs

        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        t, epochs = hp["temperature"], hp["epochs"]
        preset = VARIANTS[hp["variant"]]
        if preset["optimizer"] == "adam":
            optimizer = torch.optim.Adam(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
        else:
            optimizer = torch.optim.SGD(model.parameters(), lr=hp["lr"], momentum=0.9, weight_decay=hp["weight_decay"])
        marks = milestones(epochs, hp["variant"])
        retain, heldout = data.retain, None
        if hp["rewind"]:
            retain, heldout = set_aside(data, hp["holdout_fraction"])

        def teacher_logits(x):
            with torch.no_grad():
                return teacher(x)

        def maximise(batch):
            x, _ = batch
            return -distill_kl(model(x), teacher_logits(x), t)

        def minimise(batch):
            x, y = batch
            logits = model(x)
            return hp["ce_weight"] * F.cross_entropy(logits, y) + hp["kl_weight"] * distill_kl(logits, teacher_logits(x), t)

        def error(part) -> float:
            logits, labels = predict(model, part, ctx.runtime, ctx.eval_batch_size)
            return 100.0 * float((logits.argmax(1) != labels).float().mean())

        forget_errors, states = [], []
        for epoch in range(epochs):
            if heldout is not None:  # the state before this epoch (the original before the first)
                forget_errors.append(error(data.forget))
                states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            for group in optimizer.param_groups:
                group["lr"] = hp["lr"] * lr_factor(epoch + 1, marks)
            if epoch < hp["max_epochs"]:
                run_epochs(model, ctx.runtime, epochs=1, optimizer=optimizer, loss_fn=maximise, what="SCRUB max loss",
                           batches=lambda: data.forget.batches(hp["forget_batch_size"]),
                           on_epoch=lambda _, logs: ctx.epoch_end("scrub_max", epoch, logs, False))
            run_epochs(model, ctx.runtime, epochs=1, optimizer=optimizer, loss_fn=minimise, what="SCRUB min loss",
                       batches=lambda: retain.batches(hp["retain_batch_size"], shuffle=True),
                       on_epoch=lambda _, logs: ctx.epoch_end("scrub", epoch, logs, True))
        if heldout is None:
            return {}
        forget_errors.append(error(data.forget))
        chosen = rewind_index(forget_errors, error(heldout))
        if chosen < epochs:  # an earlier epoch's state: the final one is already in the model
            model.load_state_dict(states[chosen])
        return {"rewound_to_epoch": chosen, "heldout_samples": len(heldout)}


def set_aside(data: UnlearnData, fraction: float):
    """(retain part to train on, held-out part): a seeded `fraction` of D_r's samples of the
    classes D_f holds; (D_r, None) where D_r holds none of them (nothing to compare with)."""
    import torch

    labels = data.retain.labels.cpu()
    same = torch.nonzero(torch.isin(labels, torch.unique(data.forget.labels.cpu()))).squeeze(1)
    k = round(fraction * len(same))  # a share of those classes' samples, not of all of D_r
    if k < 1:
        return data.retain, None
    generator = torch.Generator().manual_seed(0)  # the same held-out samples in every run
    chosen = same[torch.randperm(len(same), generator=generator)[:k]]
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[chosen] = False
    return (data.retain.subset(torch.nonzero(keep).squeeze(1), "scrub-retain"),
            data.retain.subset(chosen.sort().values, "scrub-heldout"))
