"""The measures every run reports, always computed the same way for the unlearned, the
retrained and the original model.

- accuracies (%) on the retain set, the forget set and the test split (with class forgetting:
  `test_acc` on the retained classes' test samples, `forget_test_acc` on the forgotten ones');
- `mia`: membership-inference member rate on the forget set (%). A logistic-regression attack
  on per-sample loss, max confidence and entropy is trained to tell retain samples (members)
  from test samples (non-members), then applied to the forget set. Compare with the retrained
  model's value, not with 0.
- `mia_cv_acc`: the NeurIPS 2023 unlearning competition starting kit's attack, a logistic
  regression on the per-sample loss telling forget samples from test samples, as
  cross-validated accuracy (%); 50 means indistinguishable.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from .data import ExperimentData
from .experiment import LeakageSpec
from .leakage import relearn_accuracy
from .runtime import Runtime
from .training import Diverged, predict

METRIC_KEYS = ("retain_acc", "forget_acc", "test_acc", "mia", "mia_cv_acc", "time_s")


def sample_features(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Per-sample [cross-entropy loss, max confidence, entropy] as an (N, 3) array."""
    if not torch.isfinite(logits).all():
        raise Diverged("the model outputs non-finite logits")
    logp = F.log_softmax(logits.float(), dim=1)
    loss = -logp.gather(1, labels.view(-1, 1)).squeeze(1)
    prob = logp.exp()
    confidence = prob.max(1).values
    entropy = -(prob * logp).sum(1)
    return torch.stack([loss, confidence, entropy], 1).cpu().numpy().astype(np.float64)


def _balanced(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return np.sort(rng.choice(n, size=min(n, k), replace=False))


def member_rate(retain: np.ndarray, test: np.ndarray, forget: np.ndarray, seed: int = 0) -> float:
    """Share (%) of forget samples an attack trained on retain (member) vs test (non-member)
    features labels 'member'. Retain is sub-sampled to the size of test (balanced classes)."""
    rng = np.random.default_rng(seed)
    members = retain[_balanced(rng, len(retain), len(test))]
    x = np.concatenate([members, test])
    y = np.concatenate([np.ones(len(members)), np.zeros(len(test))])
    attack = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    attack.fit(x, y)
    return 100.0 * float(attack.predict(forget).mean())


def forget_test_attack(forget_loss: np.ndarray, test_loss: np.ndarray, seed: int = 0, n_splits: int = 10) -> float | None:
    """The competition kit's attack: cross-validated accuracy (%) of a logistic regression on
    losses telling forget from test samples, on balanced sets. None if there are too few."""
    rng = np.random.default_rng(seed)
    n = min(len(forget_loss), len(test_loss))
    if n < 10:
        return None
    x = np.concatenate([forget_loss[_balanced(rng, len(forget_loss), n)], test_loss[_balanced(rng, len(test_loss), n)]])
    y = np.concatenate([np.ones(n), np.zeros(n)])
    cv = StratifiedShuffleSplit(n_splits=n_splits, test_size=0.2, random_state=seed)
    scores = cross_val_score(LogisticRegression(), x.reshape(-1, 1), y, cv=cv, scoring="accuracy")
    return 100.0 * float(scores.mean())


def evaluate(model: nn.Module, data: ExperimentData, runtime: Runtime, batch_size: int, seed: int = 0,
             full_retain: bool = True, leakage: LeakageSpec | None = None) -> dict:
    """Accuracies and both attacks, and with a `leakage` spec the Piggyback relearning attack
    (`pl_forget_acc`). With `full_retain=False` (per-epoch reports) the retain accuracy is
    estimated on the attack's retain sample (as many samples as the test split)."""
    retain = data.retain
    if not full_retain and len(retain) > len(data.test):
        positions = torch.from_numpy(_balanced(np.random.default_rng(seed + 1), len(retain), len(data.test)))
        retain = retain.subset(positions)
    outputs = {name: predict(model, part, runtime, batch_size) for name, part in
               (("retain", retain), ("forget", data.forget), ("test", data.test))}
    feats = {name: sample_features(*out) for name, out in outputs.items()}
    acc = {name: 100.0 * float((logits.argmax(1) == labels).float().mean()) for name, (logits, labels) in outputs.items()}
    out = {
        "retain_acc": acc["retain"],
        "forget_acc": acc["forget"],
        "test_acc": acc["test"],
        "mia": member_rate(feats["retain"], feats["test"], feats["forget"], seed),
        "mia_cv_acc": forget_test_attack(feats["forget"][:, 0], feats["test"][:, 0], seed),
    }
    if data.test_forget is not None:  # class forgetting: the forgotten classes' test samples
        logits, labels = predict(model, data.test_forget, runtime, batch_size)
        out["forget_test_acc"] = 100.0 * float((logits.argmax(1) == labels).float().mean())
    if leakage is not None:
        out["pl_forget_acc"] = relearn_accuracy(model, data.forget, runtime, leakage, batch_size)
    return out
