"""Hyperparameter importance with Optuna's evaluators, on the finished trials of a search."""

from __future__ import annotations

import warnings

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.importance import (
    FanovaImportanceEvaluator,
    MeanDecreaseImpurityImportanceEvaluator,
    PedAnovaImportanceEvaluator,
    get_param_importances,
)

EVALUATORS = {
    "PED-ANOVA": lambda: PedAnovaImportanceEvaluator(),
    "fANOVA": lambda: FanovaImportanceEvaluator(seed=0),
    "mean decrease impurity": lambda: MeanDecreaseImpurityImportanceEvaluator(seed=0),
}


def distribution(spec: dict):
    """An Optuna distribution from a search.json parameter spec."""
    if spec["type"] == "choice":
        return CategoricalDistribution(list(spec["values"]))
    if spec["type"] in ("int", "logint"):
        return IntDistribution(int(spec["low"]), int(spec["high"]), log=spec["type"] == "logint")
    return FloatDistribution(float(spec["low"]), float(spec["high"]), log=spec["type"] == "loguniform")


def study_of(params: dict[str, dict], trials: list[tuple[dict, float]]) -> optuna.Study:
    """A single-objective study (maximise) holding (config, objective) pairs."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {name: distribution(spec) for name, spec in params.items()}
    study = optuna.create_study(direction="maximize")
    for config, value in trials:
        study.add_trial(optuna.trial.create_trial(params={k: config[k] for k in distributions}, distributions=distributions,
                                                  value=value))
    return study


def importances(params: dict[str, dict], trials: list[tuple[dict, float]]) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """({evaluator: {param: importance}}, {evaluator: why it gave none})."""
    varied = {k: v for k, v in params.items() if len({repr(c[k]) for c, _ in trials}) > 1}
    if len(trials) < 3 or not varied:
        return {}, {name: "fewer than three finished trials, or no hyperparameter varied" for name in EVALUATORS}
    study = study_of(varied, trials)
    table, failed = {}, {}
    for name, make in EVALUATORS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                table[name] = dict(get_param_importances(study, evaluator=make()))
        except Exception as exc:  # noqa: BLE001 - an evaluator that cannot run on these trials is reported, not fatal
            failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:150]}"
    return table, failed
