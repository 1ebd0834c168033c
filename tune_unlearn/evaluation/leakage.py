"""Leakage after unlearning: how much forget accuracy Piggyback learning brings back.

Following Disposable Transfer Learning (Koh et al., 2023): freeze the unlearned model, learn
a binary mask over its feature extractor (Piggyback, no L1 term) together with a new linear
classifier, on a fixed part of the forget set for a few epochs, and measure the accuracy:
`pl_forget_acc`. With whole classes forgotten it is measured on the forgotten classes'
held-out samples (the validation or the test split's), as DTL measures relearning on the
source task's test data: forget-set samples were memorised by the original, so scoring on
them would mix membership into task knowledge. With a random forget set it is measured on the
rest of the forget set. The new head matters: unlearning often only pushes
the old head's outputs for forgotten classes down, and a mask cannot undo a bias. Knowledge
the features still hold comes back; knowledge that is gone does not. Compare it with the
retrained model under the same attack (the reference carries its own `pl_forget_acc`), not
with zero: any network's features carry some information about any data.

A head trained on one class always answers that class, so a forget set of one class (a
forgotten class, a backdoor's poisoned samples, all labelled with its target) is learned
together with as many retain samples (`others`), drawn with the attack's seed: the head must
tell the forget set's class from the rest, and the score is still measured on the forget side.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from ..data.parts import Part
from ..data.experiment import LeakageSpec
from ..methods.masking import learn_mask, maskable_names, masked_accuracy
from ..runtime import Runtime


def attack_split(forget: Part, spec: LeakageSpec, others: Part | None = None) -> tuple[Part, Part]:
    """The attacker's part of D_f and the held-out rest: fixed for a given seed, so every model
    of an experiment faces the same attack. A one-class D_f's attacker part is followed by as
    many samples of `others` (a part of the same data set)."""
    if len(forget) < 2:
        raise ValueError("the leakage attack needs a forget set of at least two samples")
    generator = torch.Generator().manual_seed(spec.seed)
    order = torch.randperm(len(forget), generator=generator)
    k = min(max(1, round(spec.fraction * len(forget))), len(forget) - 1)
    learn, held_out = forget.subset(order[:k], "leakage-learn"), forget.subset(order[k:], "leakage-held-out")
    if len(torch.unique(forget.labels)) < 2:
        if others is None or len(others) == 0:
            raise ValueError("the leakage attack needs a forget set of at least two classes, or other samples to "
                             "learn beside a one-class forget set")
        rest = torch.randperm(len(others), generator=generator)[:k]
        learn = learn.join(others.subset(rest), "leakage-learn")
    return learn, held_out


def relearn_accuracy(model: nn.Module, forget: Part, runtime: Runtime, spec: LeakageSpec, eval_batch_size: int,
                     others: Part | None = None) -> float:
    """pl_forget_acc (%) on the held-out rest of the forget set (see relearn_accuracies)."""
    return relearn_accuracies(model, forget, runtime, spec, eval_batch_size, [None], others)[0]


def relearn_accuracies(model: nn.Module, forget: Part, runtime: Runtime, spec: LeakageSpec, eval_batch_size: int,
                       targets: Sequence[Part | None], others: Part | None = None) -> list[float]:
    """pl_forget_acc (%) on each of `targets` (None: the held-out rest of the forget set) of a
    copy of `model` whose feature extractor is masked and whose classifier is new, both learned
    once on the attacker's part of the forget set (with as many samples of `others` when the
    forget set holds one class). `model` itself is not changed."""
    learn, held_out = attack_split(forget, spec, others)
    probe = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[runtime.device] if runtime.cuda else []):
        torch.manual_seed(spec.seed)  # the new head and the batch order, independent of the run's RNG
        probe.fc = runtime.prepare(nn.Linear(probe.fc.in_features, probe.fc.out_features))
        features = [n for n in maskable_names(probe) if not n.startswith("fc.")]
        mask = learn_mask(probe, learn, runtime, x_init=spec.x_init, threshold=spec.threshold, lam=0.0,
                          lr=spec.lr, epochs=spec.epochs, batch_size=spec.batch_size, names=features,
                          trainable=list(probe.fc.parameters()), trainable_lr=spec.head_lr)
    return [masked_accuracy(mask, held_out if target is None else target, runtime, eval_batch_size)
            for target in targets]
