"""The score a search maximises: how far a model is from the retrained models, in units of
their own spread, plus what the unlearning cost.

The target is an ensemble of K retrained models (same D_r and recipe, different training
seeds). For each measure m (retain, forget and held-out accuracy, the MIA member rate; with a
corrective forget rule the forget set's accuracy on its true labels, and with a backdoor the
attack success rate; with the leakage attack the relearned forget accuracy) the gap is

    gap_m = max(0, |x_m - mean_m| / max(sd_m, FLOOR) - 1)

so a value within one standard deviation of the retrained models is a tie (gap 0), and every
spread beyond it costs one unit, whichever side it lies on: a test accuracy above theirs is as
much a difference as one below. FLOOR (1 point) stands in for the spread where the ensemble
agrees exactly, as on a forgotten class (0% for every retrained model). The objective is

    objective = - sum_m w_m * gap_m  -  w_example * example_gap  -  w_cost * cost_ratio

`example_gap` (example_gap.py) is the per-sample counterpart: each forget sample's confidence
beside the retrained models' on that sample, in units of a spread, beyond the first.

`cost_ratio` is the unlearning's cost over the retrained models' training cost, both priced by
the same cost model (cost.py: counted multiply-accumulates and layer calls, each at the price
measured on the device the trials run on). It estimates the wall-time ratio on that device
without its noise: it does not change with the number of trials sharing a machine, and a
replayed configuration gets the same number. Measured wall time is reported beside it
(`time_s`), and so are the counts (`macs`, `steps`).

0 is the best possible (indistinguishable from retraining at no cost); a retrained model
scored against the others gets about -w_cost; the untouched original gets 0 cost but its full
forget gap. Every component is reported, so a multi-objective search minimises them directly.

Why not the alternatives: DeepUnlearn's objectives are raw gaps |dRA|, |dFA|, |dTA| and MIA
indiscernibility, and RUM's tug-of-war product is (1-|dFA|)(1-|dRA|)(1-|dTA|). Both treat one
retrained model as the truth, so on small data they optimise its noise; the spread units here
say how much of a gap is noise, and the dead zone stops the search from chasing it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, fields
from typing import Iterable, Mapping

from ..errors import UserError

FLOOR = 1.0  # points: the smallest spread a gap is measured in
HELDOUT_KEYS = ("val_acc", "test_acc")  # the held-out accuracy of a validation / test evaluation
# Components and the weight each is multiplied by; a multi-objective search minimises them all.
GAP_WEIGHTS = {"retain_gap": "retain", "forget_gap": "forget", "heldout_gap": "heldout", "mia_gap": "mia",
               "forget_true_gap": "forget_true", "asr_gap": "asr", "leak_gap": "leak", "example_gap": "example"}
COMPONENT_MODES = {**{name: "min" for name in GAP_WEIGHTS}, "cost_ratio": "min"}
# The components only some evaluations have, and the metric each measures (metrics.OPTIONAL_KEYS)
OPTIONAL_COMPONENTS = {"forget_true_gap": "forget_true_acc", "asr_gap": "asr", "leak_gap": "pl_forget_acc"}


@dataclass(frozen=True)
class Weights:
    retain: float = 1.0
    forget: float = 1.0
    heldout: float = 1.0
    mia: float = 1.0
    cost: float = 1.0
    forget_true: float = 1.0  # corrective rules only: the forget set's accuracy on its true labels
    asr: float = 1.0  # backdoor only: the attack success rate of the trigger
    leak: float = 0.0
    example: float = 1.0  # the per-example gap (example_gap.py)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def updated(self, values: Mapping, where: str = "") -> "Weights":
        """These weights with some replaced by `values`, each name and number checked (a
        UserError prefixed by `where`, the file or flag the values came from)."""
        merged = asdict(self)
        prefix = f"{where}: " if where else ""
        for name, value in values.items():
            if name not in merged:
                raise UserError(f"{prefix}unknown objective weight {name!r}; allowed: {', '.join(merged)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise UserError(f"{prefix}objective weight {name} must be a number >= 0, got {value!r}")
            merged[name] = float(value)
        return Weights(**merged)


def heldout_key(metrics: Mapping) -> str:
    for key in HELDOUT_KEYS:
        if key in metrics:
            return key
    raise KeyError(f"metrics hold no held-out accuracy ({' or '.join(HELDOUT_KEYS)})")


def measured(metrics: Mapping) -> dict[str, str]:
    """component -> metric key, for the measures both a model and the references have."""
    out = {"retain_gap": "retain_acc", "forget_gap": "forget_acc", "heldout_gap": heldout_key(metrics),
           "mia_gap": "mia"}
    out.update({comp: key for comp, key in OPTIONAL_COMPONENTS.items() if metrics.get(key) is not None})
    return out


def component_names(measures: Iterable[str]) -> list[str]:
    """The components of an evaluation that has the optional metrics `measures` (e.g.
    ForgetSpec.measures() and pl_forget_acc with leakage), in COMPONENT_MODES order."""
    measures = set(measures)
    return [c for c in COMPONENT_MODES if c not in OPTIONAL_COMPONENTS or OPTIONAL_COMPONENTS[c] in measures]


def ensemble(models: Iterable[Mapping]) -> dict:
    """Mean of each numeric metric over the retrained models, its standard deviation as
    `<metric>_sd` (0 for a single model) and `n_models`."""
    models = list(models)
    if not models:
        raise ValueError("an ensemble needs at least one model")
    out: dict = {"n_models": len(models)}
    for key in models[0]:
        values = [m.get(key) for m in models]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            continue
        out[key] = statistics.fmean(values)
        out[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def distances(metrics: Mapping, reference: Mapping) -> dict:
    """|x - mean| / max(sd, FLOOR) per measure (component name -> spread units), no dead zone."""
    out = {}
    for comp, key in measured(metrics).items():
        if reference.get(key) is None:
            continue
        spread = max(reference.get(f"{key}_sd", 0.0), FLOOR)
        out[comp] = abs(metrics[key] - reference[key]) / spread
    return out


def components(metrics: Mapping, reference: Mapping, example: float | None = None) -> dict:
    """Gaps (spread units beyond the first) to the retrained ensemble, the per-example gap where
    measured (`example`, example_gap.py), and the cost ratio."""
    out = {comp: max(0.0, d - 1.0) for comp, d in distances(metrics, reference).items()}
    if example is not None:
        out["example_gap"] = example
    out["cost_ratio"] = metrics.get("cost", 0.0) / max(reference.get("cost") or 0.0, 1.0)
    return out


def objective(comps: Mapping, weights: Weights) -> float:
    value = 0.0 - sum(getattr(weights, GAP_WEIGHTS[c]) * comps[c] for c in GAP_WEIGHTS if c in comps)  # 0.0 -: no "-0.000"
    value -= weights.cost * comps["cost_ratio"]
    if not math.isfinite(value):
        raise ValueError(f"objective is not finite ({value}) for components {dict(comps)}")
    return value


def score(metrics: Mapping, reference: Mapping, weights: Weights, example: float | None = None) -> tuple[dict, float]:
    comps = components(metrics, reference, example)
    return comps, objective(comps, weights)


def leave_one_out(models: list[Mapping], weights: Weights, examples: list[float] | None = None) -> list[float]:
    """Each retrained model scored against the others: what a perfect unlearning scores (its
    cost is its own training, ratio ~1); `examples`: each one's per-example gap against the
    others. Empty with fewer than two models."""
    if len(models) < 2:
        return []
    examples = examples or [None] * len(models)
    return [score(m, ensemble(models[:i] + models[i + 1:]), weights, examples[i])[1] for i, m in enumerate(models)]


AGGREGATES = ("mean", "worst")


def aggregate(values: Iterable[float], how: str = "mean") -> float:
    """One number from several requests' objectives (higher is better): their mean, or the
    worst (lowest)."""
    values = list(values)
    if not values:
        raise ValueError("nothing to aggregate")
    if how == "mean":
        return statistics.fmean(values)
    if how == "worst":
        return min(values)
    raise ValueError(f"unknown aggregate {how!r}; allowed: {', '.join(AGGREGATES)}")


def mean_numbers(dicts: list[Mapping]) -> dict:
    """Key-wise mean of the numbers (not booleans) every mapping has, in the first one's order."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    keys = [k for k, v in dicts[0].items() if number(v) and all(number(d.get(k)) for d in dicts)]
    return {k: statistics.fmean(d[k] for d in dicts) for k in keys}


def aggregate_components(per_request: list[Mapping], how: str = "mean") -> dict:
    """The components of several requests as one set: each one's mean, or with `worst` its
    largest (every component is minimised). Only components every request has."""
    names = [c for c in per_request[0] if all(c in comps for comps in per_request)]
    pick = statistics.fmean if how == "mean" else max
    return {c: pick(comps[c] for comps in per_request) for c in names}
