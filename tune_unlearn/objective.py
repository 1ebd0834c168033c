"""The composite objective a search maximises, and its components.

    objective = w_test * TA / TA_rt
              - w_forget * |FA - FA_rt| / 100
              - w_mia * |MIA - MIA_rt| / 100
              - w_time * t / t_rt
              - w_leak * |PL - PL_rt| / 100          (only when the leakage metric is on)

TA, FA: test and forget accuracy (%); MIA: the member rate on the forget set (%); t: the
unlearning wall time; PL: the forget accuracy a Piggyback mask recovers (leakage); `_rt`: the
retrained reference under the same measurement. The ideal is the retrained model, not FA = 0.
Every component is reported too, so a multi-objective search can use them directly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Mapping

from .errors import UserError

# Components and the direction a multi-objective search optimises them in.
COMPONENT_MODES = {"test_ratio": "max", "forget_gap": "min", "mia_gap": "min", "time_ratio": "min", "leak_gap": "min"}


@dataclass(frozen=True)
class Weights:
    test: float = 1.0
    forget: float = 1.0
    mia: float = 0.5
    time: float = 0.05
    leak: float = 0.0

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
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserError(f"{prefix}objective weight {name} must be a number, got {value!r}")
            merged[name] = float(value)
        return Weights(**merged)


def components(metrics: dict, reference: dict) -> dict:
    """Gaps and ratios of `metrics` against the retrained `reference` (same keys)."""
    out = {
        "test_ratio": metrics["test_acc"] / max(reference["test_acc"], 1e-9),
        "forget_gap": abs(metrics["forget_acc"] - reference["forget_acc"]),
        "mia_gap": abs(metrics["mia"] - reference["mia"]),
        "time_ratio": metrics["time_s"] / max(reference["time_s"], 1e-9),
    }
    if metrics.get("pl_forget_acc") is not None and reference.get("pl_forget_acc") is not None:
        out["leak_gap"] = abs(metrics["pl_forget_acc"] - reference["pl_forget_acc"])
    return out


def objective(comps: dict, weights: Weights) -> float:
    value = (
        weights.test * comps["test_ratio"]
        - weights.forget * comps["forget_gap"] / 100.0
        - weights.mia * comps["mia_gap"] / 100.0
        - weights.time * comps["time_ratio"]
        - weights.leak * comps.get("leak_gap", 0.0) / 100.0
    )
    if not math.isfinite(value):
        raise ValueError(f"objective is not finite ({value}) for components {comps}")
    return value
