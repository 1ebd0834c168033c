"""Forget rules: which training samples form the forget set, and how the corrective rules
change the training set D before any model sees it (experiment.ForgetSpec holds the settings).

- random: a seeded `fraction` of D.
- classes: every sample of `classes`.
- mislabeled (corrective): a seeded `fraction` of D, drawn from `classes` when given, carries a
  wrong label drawn uniformly from the other classes with the same seed. The original trains
  on D with those labels and memorises them; the retrained models train on D_r and never see
  them. D_f is those samples with their wrong labels.
- backdoor (corrective, BadNets): a seeded `fraction` of D, drawn from `classes` when given,
  else from every class but `target`, gets the trigger stamped on and the label `target`. D_f is
  the seeded `identified` share of those samples; the rest stay in D_r (retraining on D_r then
  keeps part of the backdoor, as in corrective-unlearning studies).

The trigger is a `size` x `size` patch of `value` in one corner of the image (pixels in [0, 1],
before normalisation); it is stamped on the stored image, so training augmentation (a random
crop of a pixel or two) moves it as it moves the digit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError
from .experiment import ForgetSpec, TriggerSpec


@dataclass(frozen=True)
class Split:
    """Positions (into the training set) of the forget and the retain set, disjoint and sorted;
    for a corrective rule also D's labels as the models train on them (`labels`), the labels as
    they should be (`true_labels`), and the positions that carry the trigger (`poisoned`)."""

    forget: torch.Tensor
    retain: torch.Tensor
    labels: torch.Tensor | None = None
    true_labels: torch.Tensor | None = None
    poisoned: torch.Tensor | None = None


def _draw(pool: torch.Tensor, k: int, generator: torch.Generator, what: str) -> torch.Tensor:
    """k positions drawn without replacement from the boolean `pool`, sorted."""
    candidates = torch.nonzero(pool).squeeze(1)
    if k > len(candidates):
        raise UserError(f"the forget rule asks for {k} {what} samples, but only {len(candidates)} are eligible; "
                        "allowed: a smaller forget fraction or more classes")
    return candidates[torch.randperm(len(candidates), generator=generator)[:k]].sort().values


def _in_classes(labels: torch.Tensor, classes) -> torch.Tensor:
    return torch.isin(labels, torch.tensor(list(classes), dtype=labels.dtype))


def make_split(labels: torch.Tensor, forget: ForgetSpec, num_classes: int | None = None) -> Split:
    """The forget set for `forget` on training labels `labels` (and, for a corrective rule, the
    labels D trains on); seeded and reproducible."""
    n = len(labels)
    num_classes = num_classes or int(labels.max()) + 1
    generator = torch.Generator().manual_seed(forget.seed)
    k = min(max(1, round(forget.fraction * n)), n - 1)
    positions = torch.arange(n)
    if forget.rule == "classes":
        chosen = _in_classes(labels, forget.classes)
        if not chosen.any():
            raise UserError(f"the forget classes {list(forget.classes)} hold no training sample")
        return Split(forget=positions[chosen], retain=positions[~chosen])
    if forget.rule == "random":
        chosen = torch.zeros(n, dtype=torch.bool)
        chosen[torch.randperm(n, generator=generator)[:k]] = True
        return Split(forget=positions[chosen], retain=positions[~chosen])
    pool = _in_classes(labels, forget.classes) if forget.classes else torch.ones(n, dtype=torch.bool)
    trained = labels.clone()
    if forget.rule == "mislabeled":
        wrong = _draw(pool, k, generator, "mislabeled")
        # An offset of 1..C-1 classes: uniform over the other classes, never the true one.
        offset = torch.randint(1, num_classes, (len(wrong),), generator=generator)
        trained[wrong] = (labels[wrong] + offset) % num_classes
        forget_positions = wrong
        poisoned = None
    elif forget.rule == "backdoor":
        if not forget.classes:
            pool &= labels != forget.target
        poisoned = _draw(pool, k, generator, "poisoned")
        trained[poisoned] = forget.target
        kept = max(1, round(forget.identified * len(poisoned)))
        forget_positions = poisoned[torch.randperm(len(poisoned), generator=generator)[:kept]].sort().values
    else:
        raise ValueError(f"unknown forget rule {forget.rule!r}")
    retain = torch.ones(n, dtype=torch.bool)
    retain[forget_positions] = False
    return Split(forget=forget_positions, retain=positions[retain], labels=trained, true_labels=labels.clone(),
                 poisoned=poisoned)


def stamp(images: torch.Tensor, trigger: TriggerSpec) -> torch.Tensor:
    """A copy of NCHW `images` (pixels in [0, 1]) with the trigger patch in its corner."""
    out = images.clone()
    h, w = images.shape[-2:]
    s = trigger.size
    rows = slice(h - s, h) if trigger.corner.startswith("bottom") else slice(0, s)
    cols = slice(w - s, w) if trigger.corner.endswith("right") else slice(0, s)
    out[..., rows, cols] = trigger.value
    return out


def training_set(images: torch.Tensor, labels: torch.Tensor, split: Split,
                 forget: ForgetSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """D as the models train on it: the rule's labels, and the trigger on the poisoned images."""
    if split.labels is not None:
        labels = split.labels.to(labels.device)
    if split.poisoned is not None:
        images = images.clone()
        where = split.poisoned.to(images.device)
        images[where] = stamp(images[where], forget.trigger)
    return images, labels


def triggered_positions(labels: torch.Tensor, forget: ForgetSpec) -> torch.Tensor:
    """Positions of the held-out samples an attack success rate is measured on: every class but
    the target's."""
    return torch.nonzero(labels != forget.target).squeeze(1)
