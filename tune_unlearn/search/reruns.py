"""Chosen configurations run again after the trials, outside Tune: the best with other
unlearning seeds (reseed.py) and on the held-out requests (holdout.py). The searcher never sees
these runs: they start after Tune has finished.

Each run uses the references the driver holds (label -> References for trials), never a
node's cache. On a local machine without a GPU the runs happen in the search's process (a Ray
task would import torch and load the data again); on a GPU or a cluster, in one Ray task.
"""

from __future__ import annotations

from typing import Callable

from ..errors import Diverged
from .plan import Plan

# A run's test-split numbers kept beside its objectives
KEPT_METRICS = ("retain_acc", "forget_acc", "forget_true_acc", "test_acc", "forget_test_acc", "asr", "mia", "cost", "macs",
                "steps", "time_s")
# One run to make: (key, hyperparameters, request label, unlearning seed)
Run = tuple[str, dict, str, int]


def hparams_of(plan: Plan, config: dict) -> dict:
    """The full hyperparameters a trial with searched values `config` ran with ({}: the defaults)."""
    from ..methods import get_method

    return get_method(plan.method).resolve(plan.experiment.method_defaults.get(plan.method, {}), plan.space.fixed, config)


def summarize(result) -> dict:
    """What reseeds.json and holdout.json keep of one run (a pipeline.RunResult)."""
    return {"objective": result.objective, "test_objective": result.test_objective,
            "test_components": result.test_components,
            "test_metrics": {k: result.test_metrics[k] for k in KEPT_METRICS if result.test_metrics.get(k) is not None}}


def runs_here(plan: Plan, todo: list[Run], references: dict, experiments: dict,
              on_result: Callable[[str, dict], None] | None = None) -> dict:
    """Run each of `todo` in this process from `references` and `experiments` (label ->
    Experiment) and the data on this node: key -> result (or {"error": ...} for a run that
    diverged). `on_result(key, result)` after each."""
    from ..pipeline import prepare_with, run_method
    from ..runtime import make_runtime

    runtime = make_runtime("auto")
    prepared, out = {}, {}
    for key, hparams, label, seed in todo:
        if label not in prepared:  # one request's data at a time
            prepared = {label: prepare_with(experiments[label], runtime, references[label])}
        try:
            result = summarize(run_method(prepared[label], plan.method, hparams, plan.weights, seed, leakage=plan.leakage))
        except Diverged as exc:
            result = {"error": f"diverged: {exc}"}
        out[key] = result
        if on_result:
            on_result(key, result)
    return out


def run_all(plan: Plan, todo: list[Run], references: dict, experiments: dict, gpu: bool, local: bool, timeout: float,
            what: str, on_result: Callable[[str, dict], None]) -> None:
    """Run `todo` here or in one Ray task (see the module's note); `on_result` gets every result."""
    needed = {label for _, _, label, _ in todo}
    references = {label: references[label] for label in needed}
    experiments = {label: experiments[label] for label in needed}
    if local and not gpu:
        runs_here(plan, todo, references, experiments, on_result)
        return
    from .cluster import remote_task, run_tasks

    task = remote_task(runs_here, num_cpus=1, num_gpus=1 if gpu else 0, max_calls=1)
    [done] = run_tasks(task, [(plan, todo, references, experiments)], f"{what} (1 CPU{' + 1 GPU' if gpu else ''})", timeout)
    for key, result in done.items():
        on_result(key, result)
