"""The configuration of one run: method, experiment (+ overrides), hyperparameters, objective
weights, seed. `run --config FILE` reads it; `search` and `export` write it (best_config.yaml),
so the best trial of a search re-runs with `python -m tune_unlearn run --config best_config.yaml`.

File format (every key optional; unknown keys are an error):

    method: selective
    experiment: digits
    experiment_overrides: {forget.fraction: 0.02}
    hparams: {lam: 1.0e-6, decay: 0.1}
    weights: {cost: 0.5}
    seed: 0
    replay: {threads: 1, device: cpu (1 threads), request: seed0, objective: -1.2, test_objective: -1.3}
                         # how the search's trial ran, and what it scored on that request: run
                         # uses the threads and says whether it gives the same objective
    metrics: {...}       # what the search measured on the validation split; informational,
    test_metrics: {...}  # ... and on the test split; both ignored by run
    result: {...}        # the trial's id, objective, components, references; ignored by run
    requests: {...}      # the forget requests it was tuned on, each one's objective; ignored by run
    holdout: {...}       # its results on the requests the search held out; ignored by run

A file holding none of these keys is read as a flat mapping of hyperparameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from .config import from_mapping, read_yaml
from .errors import UserError
from .data.experiment import Experiment, load_experiment
from .methods import get_method, method_names
from .methods.base import Method
from .evaluation.objective import Weights


@dataclass(frozen=True)
class RunConfig:
    method: str | None = None
    experiment: str | None = None
    experiment_overrides: dict = field(default_factory=dict)
    hparams: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    seed: int | None = None
    replay: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    test_metrics: dict = field(default_factory=dict)
    result: dict = field(default_factory=dict)
    requests: dict = field(default_factory=dict)
    holdout: dict = field(default_factory=dict)


def load_run_config(path: str | Path) -> RunConfig:
    data = read_yaml(path)
    keys = {f.name for f in fields(RunConfig)}
    if data and not keys & set(data):
        data = {"hparams": data}
    return from_mapping(RunConfig, data, Path(path).name)


@dataclass
class ResolvedRun:
    experiment: Experiment
    method: Method
    hparams: dict
    weights: Weights
    seed: int


def resolve_run(method: str, experiment: str, experiment_overrides: dict, *hparam_layers: dict,
                weights: Weights | None = None, seed: int = 0) -> ResolvedRun:
    """Load and validate everything a run needs, raising UserError before any work starts.
    Hyperparameters: method defaults < experiment's method_defaults < each layer in order."""
    method_obj = get_method(method)
    exp = load_experiment(experiment, experiment_overrides)
    for name in exp.method_defaults:
        try:
            get_method(name)
        except UserError:
            raise UserError(f"experiment {exp.name!r}: method_defaults names unknown method {name!r}; "
                            f"allowed: {', '.join(method_names())}") from None
    hparams = method_obj.resolve(exp.method_defaults.get(method, {}), *hparam_layers)
    return ResolvedRun(exp, method_obj, hparams, weights or Weights(), seed)
