"""The per-example component of the objective, `example_gap`: how far an unlearned model's
confidence on each forget sample lies from the retrained models' confidence on that sample.

The aggregate gaps (objective.py) compare accuracies over the whole forget set, and a model can
match them while every sample still tells: on a forgotten class, a retrained model's
logit-scaled confidence sits near -15 and a decayed, fine-tuned one near -5, both at 0%
accuracy. This component sees that, at the cost of one forward pass over D_f.

The statistic is the NeurIPS 2023 unlearning competition's: c = log(p_y / (1 - p_y)) of the
sample's training label y (the label the original learned: the wrong one for a mislabeled
sample, the target for a triggered one). For each forget sample i, with the K retrained models'
confidences c_1..c_K,

    d_i = |c_i(unlearned) - mean_i| / s_i,    s_i = max(sqrt((v_i + v_pool) / 2), FLOOR)

where v_i is the sample's variance over the K models and v_pool the mean of v_i over D_f. The
component is the mean over D_f of max(0, d_i - 1): a sample within one spread of the retrained
models costs nothing, like every other gap.

Why this spread. A sample's own variance from K = 3 models has 2 degrees of freedom: about one
sample in ten gets a standard deviation under a third of the true one (chi-squared with 2
degrees of freedom below 2/9), and a model that is fine there would be scored three times too
far. A variance pooled over D_f is stable but says every sample is equally contested, which is
false (some samples every retrained model gets right with certainty, others they disagree on).
Half of each is the moderated variance of empirical-Bayes gene-expression statistics (limma)
with a prior weight equal to the sample's own degrees of freedom. FLOOR (one unit of log-odds,
a factor e in the odds) stands in for the spread where the retrained models agree almost
exactly, as on a forgotten class, so that a difference nobody could call a tell costs nothing.
With one retrained model there is no variance: the floor alone.

The likelihood-ratio attack (per_example/lira.py) fits per-sample Gaussians too, but for an
attacker with few models it follows LiRA's own rule (one spread for every sample, the median)
and a floor at the threshold grid's resolution: it asks how well one can tell, this asks how far
a model is, so each keeps its own estimator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOOR = 1.0  # log-odds units: the smallest spread a per-example distance is measured in


@dataclass(frozen=True)
class ExampleReference:
    """Per forget sample: the retrained models' mean confidence and the spread around it."""

    mean: np.ndarray
    spread: np.ndarray

    @classmethod
    def fit(cls, confidences: np.ndarray) -> "ExampleReference":
        """From a (K models x N samples) array of logit-scaled confidences."""
        confs = np.asarray(confidences, dtype=np.float64)
        if confs.ndim != 2 or confs.shape[0] < 1 or confs.shape[1] < 1:
            raise ValueError(f"expected K models x N samples of confidences, got shape {confs.shape}")
        if confs.shape[0] < 2:
            return cls(confs[0].copy(), np.full(confs.shape[1], FLOOR))
        own = confs.var(axis=0, ddof=1)
        spread = np.sqrt((own + own.mean()) / 2.0)
        return cls(confs.mean(axis=0), np.maximum(spread, FLOOR))

    def distances(self, confidences: np.ndarray) -> np.ndarray:
        """|c_i - mean_i| / s_i per sample."""
        return np.abs(np.asarray(confidences, dtype=np.float64) - self.mean) / self.spread

    def gap(self, confidences: np.ndarray) -> float:
        """Mean over the samples of max(0, d_i - 1)."""
        return float(np.maximum(self.distances(confidences) - 1.0, 0.0).mean())


def forget_confidences(model, forget, runtime, batch_size: int) -> np.ndarray:
    """The logit-scaled confidence of `model` on each forget sample's training label: one
    forward pass over D_f (`forget`, a data Part)."""
    from ..training import predict
    from .per_example.quality import logit_confidence

    logits, labels = predict(model, forget, runtime, batch_size)
    return logit_confidence(logits, labels.to(logits.device)).cpu().numpy()


def leave_one_out_gaps(confidences: np.ndarray) -> list[float]:
    """Each retrained model's gap against the others: what a perfect unlearning scores."""
    confs = np.asarray(confidences, dtype=np.float64)
    if len(confs) < 2:
        return []
    return [ExampleReference.fit(np.delete(confs, i, axis=0)).gap(confs[i]) for i in range(len(confs))]
