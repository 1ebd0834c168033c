"""The references as trials see them: every model's metrics, confidences and the device's
prices, the retrained ensemble, and both baselines scored like a trial."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ...cost import CostModel
from ..example_gap import ExampleReference, leave_one_out_gaps
from ..metrics import SPLITS
from ..objective import (Weights, aggregate, aggregate_components, distances, ensemble, leave_one_out, mean_numbers,
                         score)


@dataclass
class References:
    original_state: dict
    retrain_states: list[dict]
    original: dict  # split -> metrics of the original model (time_s, cost: its training)
    retrained: list[dict]  # one per retrained model: split -> metrics (time_s, cost: its training)
    status: dict = field(default_factory=dict)  # role ("original", "retrain-<i>") -> "cached" | "trained" | "checkpoint"
    paths: dict = field(default_factory=dict)  # role -> absolute path of its cache file
    confidences: dict = field(default_factory=dict)  # role -> confidence on each forget sample (numpy)
    fingerprint: dict = field(default_factory=dict)  # the data the models were trained and measured on
    cost_model: dict = field(default_factory=dict)  # the device's prices (cost.CostModel) every cost here uses

    def prices(self) -> CostModel:
        return CostModel.from_json(self.cost_model)

    def for_trials(self) -> "References":
        """What a trial needs (the original's weights, every model's metrics and confidences),
        without the retrained models' weights: sent to trials wherever they run."""
        return replace(self, retrain_states=[])

    def retrained_confidences(self) -> np.ndarray:
        """The retrained models' confidences on the forget set, (K models x N samples)."""
        return np.stack([self.confidences[f"retrain-{i}"] for i in range(len(self.retrained))])

    def examples(self) -> ExampleReference:
        """The retrained models' confidence on each forget sample, and its spread."""
        return ExampleReference.fit(self.retrained_confidences())

    def reference(self, split: str) -> dict:
        """The retrained ensemble on `split`: each metric's mean, `<metric>_sd`, `n_models`."""
        return ensemble(m[split] for m in self.retrained)

    def baseline(self, split: str) -> dict:
        """The original model's metrics as an unlearning that does nothing: time and cost 0."""
        return {**self.original[split], "time_s": 0.0, "cost": 0.0, "macs": 0, "calls": 0, "steps": 0}

    def scored(self, weights: Weights) -> dict:
        """Both baselines scored like a trial, per split: the original (no unlearning) and each
        retrained model against the others (what a perfect unlearning scores)."""
        out = {}
        original_example = self.examples().gap(self.confidences["original"])
        retrained_examples = leave_one_out_gaps(self.retrained_confidences())
        for split in SPLITS:
            reference = self.reference(split)
            comps, value = score(self.baseline(split), reference, weights, original_example)
            out[split] = {
                "reference": reference,
                "original": {"metrics": self.baseline(split), "components": comps, "objective": value,
                             "distances": distances(self.original[split], reference)},
                "retrained": {"metrics": [m[split] for m in self.retrained],
                              "objectives": leave_one_out([m[split] for m in self.retrained], weights,
                                                          retrained_examples),
                              "example_gaps": retrained_examples},
            }
        return out


def combine_scored(scored: list[dict], how: str = "mean") -> dict:
    """Several requests' References.scored as one, in the same shape: the original's metrics,
    distances and components averaged (components by objective.aggregate_components) and its
    objective aggregated like a trial's; the retrained models of every request pooled (each
    scored against the others of its own request); the reference pooled over them, for tables."""
    if len(scored) == 1:
        return scored[0]
    out = {}
    for split in SPLITS:
        parts = [s[split] for s in scored]
        originals = [p["original"] for p in parts]
        retrained = [m for p in parts for m in p["retrained"]["metrics"]]
        out[split] = {
            "reference": ensemble(retrained),
            "original": {"metrics": mean_numbers([o["metrics"] for o in originals]),
                         "components": aggregate_components([o["components"] for o in originals], how),
                         "objective": aggregate([o["objective"] for o in originals], how),
                         "distances": mean_numbers([o["distances"] for o in originals])},
            "retrained": {"metrics": retrained,
                          "objectives": [v for p in parts for v in p["retrained"]["objectives"]],
                          "example_gaps": [v for p in parts for v in p["retrained"].get("example_gaps", [])]},
        }
    return out
