"""Chosen configurations run again after the trials, outside Tune: the best with other
unlearning seeds (reseed.py) and on the held-out requests (holdout.py). The searcher never sees
these runs: they start after Tune has finished.

Each run uses the references the driver holds (label -> References for trials), never a
node's cache. On a local machine without a GPU the runs happen in the search's process (a Ray
task would import torch and load the data again); on a GPU or a cluster, each in a Ray task of a
trial's size, side by side as far as the resources allow, their results written as each ends;
runs so short that side by side they would save less than starting a task costs
(cluster.TASK_START_S, judged by the trials' duration) share one task instead.
"""

from __future__ import annotations

import statistics
from typing import Callable

from ..errors import Diverged
from .plan import Plan
from .results import RunRecord

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


def run_seconds(record: RunRecord) -> float | None:
    """How long one run of one request takes: the search's finished trials' mean (None before any)."""
    timed = record.timed
    return statistics.fmean(r["trial_time_s"] / r.get("requests", 1) for r in timed) if timed else None


def run_all(plan: Plan, todo: list[Run], references: dict, experiments: dict, gpu: bool, local: bool, timeout: float,
            what: str, on_result: Callable[[str, dict], None], run_s: float | None = None) -> None:
    """Run `todo` here or as Ray tasks (see the module's note); `on_result` gets every result
    as it comes. `run_s`: how long one run takes (run_seconds), None where unknown."""
    needed = {label for _, _, label, _ in todo}
    references = {label: references[label] for label in needed}
    experiments = {label: experiments[label] for label in needed}
    if local and not gpu:
        runs_here(plan, todo, references, experiments, on_result)
        return
    import ray

    from .cluster import TASK_START_S, remote_task, run_tasks

    # One task per run, each the size of a trial, so that they share the GPUs as trials do; each
    # request's references go to the object store once, not with every task. Short runs: one
    # task for all, one after the other.
    cpus, gpus = plan.cpus_per_trial, (plan.gpus_per_trial or 0.0) if gpu else 0.0
    size = f"{cpus:g} CPU{f' + {gpus:g} GPU' if gpus else ''}"
    task = remote_task(rerun_task, num_cpus=cpus, num_gpus=gpus)
    if run_s is not None and (len(todo) - 1) * run_s <= TASK_START_S:
        calls = [(plan, todo, ray.put(references), experiments)]
        needs = f"{what} (one task of {size}: about {run_s:.0f} s each)"
    else:
        shared = {label: ray.put({label: references[label]}) for label in needed}
        calls = [(plan, [run], shared[run[2]], {run[2]: experiments[run[2]]}) for run in todo]
        needs = f"{what} ({size} each)"
    run_tasks(task, calls, needs, timeout, on_result=lambda i, done: [on_result(key, done[key]) for key in done])


def rerun_task(plan: Plan, todo: list[Run], references: dict, experiments: dict) -> dict:
    """In a Ray task: runs_here on as many threads as a trial of the search has CPUs."""
    from ..runtime import limit_threads

    limit_threads(plan.cpus_per_trial)
    return runs_here(plan, todo, references, experiments)
