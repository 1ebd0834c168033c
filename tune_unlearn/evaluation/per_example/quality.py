"""Forgetting quality as the NeurIPS 2023 unlearning competition scored it (Triantafillou et
al., "Are we making progress in unlearning?", 2024; the reference implementation is
google-deepmind/unlearning_evaluation, metric.py). Written anew in vectorised numpy.

For every forget example x there are two samples of a scalar: the logit-scaled confidence of
x's true class under each of N unlearned models and under each of N retrained models. If the
unlearning were (epsilon, delta)-indistinguishable from retraining, every test telling the
two samples apart would satisfy FPR + e^eps FNR >= 1 - delta and FNR + e^eps FPR >= 1 - delta,
so each test with error rates (FPR, FNR) gives the lower bound

    eps >= max(log((1 - delta - FPR) / FNR), log((1 - delta - FNR) / FPR)),   delta = 1e-5.

Per example, eps is the largest bound over two families of tests on a fixed grid of
thresholds (100 per unit of confidence), as in metric.py:

- one threshold t: "positive" when c >= t, the positive side being the one with the larger
  median (on equal medians, the unlearned one); t runs over [min, max] of both samples;
- two thresholds l <= c <= r: "positive" inside the interval, the positive side being the
  peakier one (the smaller range; on equal ranges the larger-median side is the other one);
  r runs over [peak max - 2, peak max + 2] and l over r - width +- 2, width being the peakier
  side's range.

Edge cases, each as metric.py treats them:
- a threshold with FPR = FNR = 0 separates the samples perfectly: eps = infinity (capped at
  EPSILON_CAP);
- a threshold with only one of FPR, FNR zero says nothing the sample size can support: it is
  discarded; so is one whose two bounds are both undefined (FPR = FNR = 1);
- bounds below 0 count as 0;
- if the smaller of the two ranges is under 1% of the larger (a very peaky distribution, e.g.
  every unlearned model outputs the same value), eps = EPSILON_CAP outright: the threshold
  grid is too coarse to see it, yet it is an obvious tell;
- metric.py stops with an assertion when no threshold survives (both samples one and the
  same constant); here that example gets eps = 0: nothing tells the samples apart.

Each example scores 2^-k if eps falls in bin k = floor(eps / 0.5), for the bins that fit
below ceil(ln(N - 1)), and 0 beyond them; F is the mean score over the forget set (1 is
best). With N models per side no observed rate lies strictly between 0 and 1/N, so eps
cannot be estimated much beyond ln(N - 1): that is why the bins stop there.

Small N: the competition used N = 512 models per side (14 bins, eps up to 7). With N = 8
there are 4 bins (eps < 2) and every rate is a multiple of 1/8, so a few thresholds that
happen to split two samples of the same distribution already give eps ~ 1: F of two
retrained ensembles (the ideal) is well below 1 (two samples of one Gaussian per example,
simulated: F ~ 0.36 with 3 models per side, 0.27 with 4, 0.22 with 6, 0.2 with 8), the
estimate is coarse and noisy, and only F values measured with the same number of models per
side (and against the same retrained models) are comparable.
"""

from __future__ import annotations

import math

import numpy as np
import torch

DELTA = 1e-5
EPSILON_CAP = 50.0  # what perfect separation and very peaky distributions count as
STEPS_PER_UNIT = 100  # threshold grid density (thresholds per unit of logit-scaled confidence)
DOUBLE_REACH = 2.0  # how far the double thresholds reach either side of their anchors
BIN_WIDTH = 0.5
PEAKY_RATIO = 0.01


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log(p_y / (1 - p_y)) per sample, as logit_y - logsumexp(the other logits): finite even
    where p_y rounds to 0 or 1 (float64)."""
    z = logits.double()
    true = z.gather(1, labels.view(-1, 1)).squeeze(1)
    others = z.scatter(1, labels.view(-1, 1), float("-inf"))
    return true - torch.logsumexp(others, dim=1)


def epsilon_table(n_pos: int, n_neg: int, delta: float = DELTA) -> np.ndarray:
    """eps bound of a test that calls `tp` of n_pos positives and `fp` of n_neg negatives
    positive, as table[tp, fp]: inf for a perfect test, NaN for one that is discarded."""
    tp = np.arange(n_pos + 1)[:, None]
    fp = np.arange(n_neg + 1)[None, :]
    fnr, fpr = np.broadcast_arrays(1.0 - tp / n_pos, fp / n_neg)
    with np.errstate(divide="ignore", invalid="ignore"):
        bounds = np.stack([np.log(1 - delta - fpr) - np.log(fnr), np.log(1 - delta - fnr) - np.log(fpr)])
        both_invalid = np.isnan(bounds).all(0)
        eps = np.clip(np.nanmax(np.where(np.isnan(bounds), -np.inf, bounds), axis=0), 0.0, None)
    eps[both_invalid] = np.nan
    eps[(fpr * fnr == 0)] = np.nan
    eps[(fpr == 0) & (fnr == 0)] = np.inf
    return eps


def _grid(lo: float, hi: float) -> np.ndarray:
    return np.linspace(lo, hi, int(math.ceil((hi - lo) * STEPS_PER_UNIT)))


def _single_counts(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tp, fp) of each one-threshold test c >= t; pos and neg sorted."""
    t = _grid(min(pos[0], neg[0]), max(pos[-1], neg[-1]))
    return len(pos) - np.searchsorted(pos, t, "left"), len(neg) - np.searchsorted(neg, t, "left")


def _double_counts(peak: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tp, fp) of each two-threshold test l <= c <= r, the peakier sample `peak` positive;
    both sorted."""
    width = peak[-1] - peak[0]
    right = _grid(peak[0] + width - DOUBLE_REACH, peak[-1] + DOUBLE_REACH)
    offsets = np.linspace(-DOUBLE_REACH, DOUBLE_REACH, int(math.ceil(2 * DOUBLE_REACH * STEPS_PER_UNIT)))
    left = (right[:, None] - width + offsets[None, :]).ravel()
    right = np.repeat(right, len(offsets))

    def inside(v: np.ndarray) -> np.ndarray:
        return np.maximum(np.searchsorted(v, right, "right") - np.searchsorted(v, left, "left"), 0)

    return inside(peak), inside(other)


def example_epsilon(a: np.ndarray, b: np.ndarray, delta: float = DELTA, tables: dict | None = None) -> float:
    """eps of one example from its confidences under the unlearned models `a` and the
    retrained models `b` (`tables`: epsilon_table by sample sizes, shared across examples)."""
    a, b = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    range_a, range_b = a[-1] - a[0], b[-1] - b[0]
    if min(range_a, range_b) < PEAKY_RATIO * max(range_a, range_b):
        return EPSILON_CAP
    pos, neg = (b, a) if np.median(b) > np.median(a) else (a, b)
    peak, other = (pos, neg) if pos[-1] - pos[0] < neg[-1] - neg[0] else (neg, pos)
    tables = {} if tables is None else tables

    def table(n_pos: int, n_neg: int) -> np.ndarray:
        if (n_pos, n_neg) not in tables:
            tables[(n_pos, n_neg)] = epsilon_table(n_pos, n_neg, delta)
        return tables[(n_pos, n_neg)]

    found = [table(len(pos), len(neg))[_single_counts(pos, neg)],
             table(len(peak), len(other))[_double_counts(peak, other)]]
    values = np.concatenate(found)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return 0.0
    return float(min(values.max(), EPSILON_CAP))


def epsilons(unlearned: np.ndarray, retrained: np.ndarray, delta: float = DELTA) -> np.ndarray:
    """eps per example from [models, examples] confidences of the two ensembles."""
    unlearned, retrained = np.asarray(unlearned), np.asarray(retrained)
    if unlearned.ndim != 2 or retrained.ndim != 2 or unlearned.shape[1] != retrained.shape[1]:
        raise ValueError(f"need [models, examples] arrays over the same examples, got {unlearned.shape} and {retrained.shape}")
    tables: dict = {}
    return np.array([example_epsilon(unlearned[:, i], retrained[:, i], delta, tables)
                     for i in range(unlearned.shape[1])])


def bin_count(n_models: int) -> int:
    """How many 0.5-wide bins score: those ending at or below ceil(ln(N - 1))."""
    if n_models < 3:
        return 0
    return int(round(math.ceil(math.log(n_models - 1)) / BIN_WIDTH))


def example_scores(eps: np.ndarray, n_models: int) -> np.ndarray:
    """2^-k for eps in bin k, 0 beyond the last bin."""
    k = np.floor(np.asarray(eps) / BIN_WIDTH)
    return np.where(k < bin_count(n_models), 2.0 ** -np.minimum(k, 1023), 0.0)


def forget_quality(unlearned: np.ndarray, retrained: np.ndarray) -> tuple[float, np.ndarray]:
    """(F, eps per example) of N unlearned against N retrained models' confidences
    ([models, examples] each); N sets the bins."""
    if len(unlearned) != len(retrained):
        raise ValueError(f"F compares equally many models per side, got {len(unlearned)} and {len(retrained)}")
    eps = epsilons(unlearned, retrained)
    return float(example_scores(eps, len(unlearned)).mean()), eps


def competition_score(quality: float, retain_acc: float, test_acc: float, retain_ref: float, test_ref: float) -> float:
    """F x RA / RA_R x TA / TA_R: forgetting quality discounted by the utility lost against
    the retrained models (accuracy means; the competition's final score)."""
    return quality * (retain_acc / retain_ref) * (test_acc / test_ref)
