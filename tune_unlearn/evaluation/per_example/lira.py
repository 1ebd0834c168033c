"""A likelihood-ratio membership attack on the forget set, U-LiRA style (Carlini et al.'s LiRA,
"Membership inference attacks from first principles", 2022, as Hayes et al. adapt it to
unlearning in "Inexact unlearning needs more careful evaluations", 2024).

Per forget example, Gaussians are fit to its logit-scaled confidence under "in" models (the
original recipe on all of D: the example is a member) and under "out" models (retrained on
D_r: it is not). A model's score on the example is the log-likelihood ratio

    s(c) = log N(c; mu_in, sd_in) - log N(c; mu_out, sd_out)

(large: looks like a member). An unlearning is good when its models' scores cannot be told
from those of retrained models that the out Gaussians never saw.

Protocol (no model is ever scored by Gaussians fit on itself): the N retrained models are
split into halves A and B of N // 2 (an odd N leaves the last one out); the out Gaussians
are fit on one half and score the other (cross-fitting), so every retrained model gives
out-of-sample scores: the negatives. The positives are the evaluated models' scores under
both fits. Pooled over (model, example) pairs, the ROC curve gives the AUC (0.5:
indistinguishable from retraining, 1: every forget example still looks like a member; well
below 0.5 is a difference too: the models look less like members than retrained ones, as
when a forgotten class is suppressed harder than in a model that never saw it) and the TPR
at 1% and 0.1% FPR (the largest TPR whose FPR is at most that; with fewer than 1,000
negative pairs, 0.1% FPR means no false positive at all).
- in Gaussians: all N original models; when the original models themselves are scored, each
  is scored by Gaussians fit on the other N - 1 (leave one out);
- the retrained row (the ideal): B's scores under A's fit are the positives and A's under
  B's fit the negatives: two halves of held-out retraining, told apart by chance only.

Each example gets its own mean. Its standard deviation is, as LiRA recommends for fewer than
64 shadow models, one per fit: the median over the forget examples of the per-example
standard deviations (unbiased, ddof 1), which a handful of models estimate far more stably
than each example's own; from POOL_BELOW models on, each example has its own. Either is
floored at STD_FLOOR, so that models that agree exactly (or a single model) cannot produce
infinite scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm
from sklearn.metrics import roc_auc_score, roc_curve

STD_FLOOR = 0.01  # logit units: the forgetting-quality threshold grid's resolution
POOL_BELOW = 64  # fits on fewer models share one standard deviation across examples
FPR_TARGETS = (0.01, 0.001)


@dataclass(frozen=True)
class Gaussians:
    """One Gaussian per forget example: mean and standard deviation, [examples] each."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, confs: np.ndarray) -> "Gaussians":
        """From [models, examples] confidences."""
        confs = np.asarray(confs, dtype=np.float64)
        std = confs.std(axis=0, ddof=1) if len(confs) > 1 else np.zeros(confs.shape[1])
        if len(confs) < POOL_BELOW:
            std = np.full_like(std, np.median(std))
        return cls(confs.mean(axis=0), np.maximum(std, STD_FLOOR))

    def logpdf(self, confs: np.ndarray) -> np.ndarray:
        return norm.logpdf(confs, self.mean, self.std)


def scores(confs: np.ndarray, inside: Gaussians, outside: Gaussians) -> np.ndarray:
    """Log-likelihood ratios of [models, examples] confidences, flattened."""
    return (inside.logpdf(confs) - outside.logpdf(confs)).ravel()


@dataclass
class Attack:
    auc: float
    tpr_at: dict  # FPR target -> TPR
    fpr: np.ndarray  # the ROC curve
    tpr: np.ndarray


def roc(positives: list[np.ndarray], negatives: list[np.ndarray]) -> Attack:
    """ROC of pooled positive and negative scores."""
    pos, neg = np.concatenate(positives), np.concatenate(negatives)
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    values = np.concatenate([pos, neg])
    if not np.isfinite(values).all():
        raise ValueError("the attack produced non-finite scores")
    fpr, tpr, _ = roc_curve(labels, values)
    tpr_at = {target: float(tpr[fpr <= target].max()) for target in FPR_TARGETS}
    return Attack(float(roc_auc_score(labels, values)), tpr_at, fpr, tpr)


class LiRA:
    """The attack's fitted Gaussians for one forget set: N original and N retrained models'
    confidences, [models, examples] each."""

    def __init__(self, original: np.ndarray, retrained: np.ndarray):
        if len(retrained) < 2:
            raise ValueError("the attack needs at least two retrained models (one per half)")
        self.original = np.asarray(original, dtype=np.float64)
        half = len(retrained) // 2
        self.halves = (np.asarray(retrained[:half]), np.asarray(retrained[half:2 * half]))
        self.inside = Gaussians.fit(self.original)
        self.outside = tuple(Gaussians.fit(h) for h in self.halves)  # fit on A, fit on B

    def negatives(self, inside: Gaussians) -> list[np.ndarray]:
        """Each half scored by the other half's out fit."""
        a, b = self.halves
        return [scores(b, inside, self.outside[0]), scores(a, inside, self.outside[1])]

    def evaluate(self, confs: np.ndarray) -> Attack:
        """Models independent of every fit (unlearned ones) as positives."""
        positives = [scores(confs, self.inside, out) for out in self.outside]
        return roc(positives, self.negatives(self.inside))

    def evaluate_original(self) -> Attack:
        """The original models as positives, each with in Gaussians fit on the others."""
        positives, negatives = [], []
        for j in range(len(self.original)):
            inside = Gaussians.fit(np.delete(self.original, j, axis=0))
            positives += [scores(self.original[j:j + 1], inside, out) for out in self.outside]
            negatives += self.negatives(inside)
        return roc(positives, negatives)

    def evaluate_retrained(self) -> Attack:
        """Half B under A's fit against half A under B's fit: what a perfect unlearning gets."""
        a, b = self.halves
        return roc([scores(b, self.inside, self.outside[0])], [scores(a, self.inside, self.outside[1])])
