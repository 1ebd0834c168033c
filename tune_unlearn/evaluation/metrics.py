"""The measures every run reports, always computed the same way for the unlearned, the
retrained and the original model.

Every measure is taken per held-out split: the validation split (`val`, what trials are
scored on) and the test split (`test`, final numbers only).

- accuracies (%) on the retain set, the forget set and the held-out split (`val_acc` or
  `test_acc`; with class forgetting on the retained classes' samples, and `forget_val_acc` /
  `forget_test_acc` on the forgotten ones');
- `mia`: membership-inference member rate on the forget set (%). A logistic-regression attack
  on the per-sample loss is trained to tell retain samples (members) from held-out samples
  (non-members), then applied to the forget set. Compare with the retrained models' value,
  not with 0.
- `mia_cv_acc`: the NeurIPS 2023 unlearning competition starting kit's attack, a logistic
  regression on the per-sample loss telling forget samples from held-out samples, as
  cross-validated accuracy (%); 50 means indistinguishable.

Corrective rules (forget_rules.py) add, on every split:
- `forget_true_acc`: accuracy (%) on the forget set against its true labels, i.e. what a
  corrected model recovers (`forget_acc` is against the labels the original was trained on,
  i.e. what unlearning must remove);
- `asr` (backdoor): attack success rate (%), the share of the split's triggered images of
  every class but the target that the model assigns to the target.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.load import ExperimentData
from ..data.experiment import LeakageSpec
from .leakage import relearn_accuracies
from ..runtime import Runtime
from ..training import Diverged, predict

SPLITS = ("val", "test")  # trials are scored on val; test is for final numbers
# The measures of one split's evaluation, with `val_acc` standing for the split's accuracy
# (`test_acc` in a test evaluation); `cost` is estimated seconds from the counted `macs`, layer
# `calls` and optimiser `steps` (cost.py).
METRIC_KEYS = ("retain_acc", "forget_acc", "val_acc", "mia", "mia_cv_acc", "time_s", "cost", "macs", "calls", "steps")
# Measures only some experiments have: the corrective rules' (ForgetSpec.measures) and leakage's
OPTIONAL_KEYS = ("forget_true_acc", "asr", "pl_forget_acc")


def sample_losses(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Per-sample cross-entropy loss on the label, as an (N,) array."""
    if not torch.isfinite(logits).all():
        raise Diverged("the model outputs non-finite logits")
    loss = F.cross_entropy(logits.float(), labels, reduction="none")
    return loss.cpu().numpy().astype(np.float64)


def _balanced(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return np.sort(rng.choice(n, size=min(n, k), replace=False))


def member_rate(retain: np.ndarray, test: np.ndarray, forget: np.ndarray, seed: int = 0) -> float:
    """Share (%) of forget samples that an attack trained on retain (member) vs test (non-member)
    losses labels 'member'. Retain is sub-sampled to the size of test (balanced classes).

    The loss on the label alone, as the competition kit's attack and SalUn's MIA-efficacy
    (confidence on the label) use: one feature keeps the attack monotone. Label-free features
    (max confidence, entropy) were dropped because they flip it where the forget labels are
    wrong: a model that predicts a mislabeled sample's true class confidently has a high loss
    (unseen) but a confident, low-entropy output (seen), and retain and held-out samples, nearly
    all classified correctly, do not tell the attack which to believe."""
    # scikit-learn (a second of a core to import) where an attack is fitted: a search's driver on
    # a cluster imports this module with the references and never fits one
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    members = retain[_balanced(rng, len(retain), len(test))]
    x = np.concatenate([members, test]).reshape(-1, 1)
    y = np.concatenate([np.ones(len(members)), np.zeros(len(test))])
    attack = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    attack.fit(x, y)
    return 100.0 * float(attack.predict(forget.reshape(-1, 1)).mean())


def forget_test_attack(forget_loss: np.ndarray, test_loss: np.ndarray, seed: int = 0, n_splits: int = 10) -> float | None:
    """The competition kit's attack (`simple_mia` in unlearning-challenge/starting-kit):
    cross-validated accuracy (%) of a logistic regression on losses telling forget from
    held-out samples, on balanced sets; 10 stratified shuffle splits with sklearn's default
    test size (10%), as in the kit. None if there are too few."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

    rng = np.random.default_rng(seed)
    n = min(len(forget_loss), len(test_loss))
    if n < 10:
        return None
    x = np.concatenate([forget_loss[_balanced(rng, len(forget_loss), n)], test_loss[_balanced(rng, len(test_loss), n)]])
    y = np.concatenate([np.ones(n), np.zeros(n)])
    cv = StratifiedShuffleSplit(n_splits=n_splits, random_state=seed)
    scores = cross_val_score(LogisticRegression(), x.reshape(-1, 1), y, cv=cv, scoring="accuracy")
    return 100.0 * float(scores.mean())


def evaluate(model: nn.Module, data: ExperimentData, runtime: Runtime, batch_size: int, seed: int = 0,
             full_retain: bool = True, leakage: LeakageSpec | None = None,
             splits: tuple[str, ...] = SPLITS) -> dict[str, dict]:
    """Measures of `model` for each held-out split in `splits` ('val', 'test'): split -> dict.

    Each dict holds the retain and forget accuracy, the split's own accuracy (`val_acc` or
    `test_acc`; with class forgetting also `forget_val_acc` / `forget_test_acc` on the forgotten
    classes; with a corrective forget rule `forget_true_acc` and, with a trigger, `asr`), and both
    attacks with that split as the non-members. With a `leakage` spec the
    Piggyback relearning attack's `pl_forget_acc` is added to every split (learned once; scored
    on the split's forgotten-class samples with class forgetting, else on the rest of D_f). With
    `full_retain=False` (per-epoch reports) the retain accuracy is estimated on a sample of
    the retain set as large as the first split."""
    retain = data.retain
    first, _ = data.heldout(splits[0])
    if not full_retain and len(retain) > len(first):
        positions = torch.from_numpy(_balanced(np.random.default_rng(seed + 1), len(retain), len(first)))
        retain = retain.subset(positions)
    outputs = {"retain": predict(model, retain, runtime, batch_size), "forget": predict(model, data.forget, runtime, batch_size)}
    if data.forget_true is not None:  # the same images as the forget set, in the same order: reuse its logits
        outputs["forget_true"] = (outputs["forget"][0], data.forget_true.labels.to(outputs["forget"][0].device))
    for split in splits:
        heldout, heldout_forget = data.heldout(split)
        outputs[split] = predict(model, heldout, runtime, batch_size)
        if heldout_forget is not None:
            outputs[f"forget_{split}"] = predict(model, heldout_forget, runtime, batch_size)
        if data.triggered(split) is not None:
            outputs[f"triggered_{split}"] = predict(model, data.triggered(split), runtime, batch_size)
    acc = {name: 100.0 * float((logits.argmax(1) == labels).float().mean()) for name, (logits, labels) in outputs.items()}
    losses = {name: sample_losses(*outputs[name]) for name in ("retain", "forget", *splits)}
    relearned = None
    if leakage is not None:  # scored on the forgotten classes' held-out samples where there are any
        targets = [data.heldout(split)[1] for split in splits]
        relearned = dict(zip(splits, relearn_accuracies(model, data.forget, runtime, leakage, batch_size, targets,
                                                        others=data.retain)))
    out = {}
    for split in splits:
        m = {
            "retain_acc": acc["retain"],
            "forget_acc": acc["forget"],
            f"{split}_acc": acc[split],
            "mia": member_rate(losses["retain"], losses[split], losses["forget"], seed),
            "mia_cv_acc": forget_test_attack(losses["forget"], losses[split], seed),
        }
        if f"forget_{split}" in acc:  # class forgetting: the forgotten classes' held-out samples
            m[f"forget_{split}_acc"] = acc[f"forget_{split}"]
        if "forget_true" in acc:
            m["forget_true_acc"] = acc["forget_true"]
        if f"triggered_{split}" in acc:  # labelled with the target: accuracy is the attack success rate
            m["asr"] = acc[f"triggered_{split}"]
        if relearned is not None:
            m["pl_forget_acc"] = relearned[split]
        out[split] = m
    return out
