"""The Ray Tune trainable: one trial = one complete unlearning run from the cached references.
The only module that calls `tune.report`.

Every report holds a finite `objective` and all its components (Tune checks the metrics the
searcher and scheduler name on every report). A trial reports once, at the end, with the full
evaluation and the method's statistics; with `report_every_epoch` (ASHA, or asked for) it first
reports every evaluated epoch of the method (fine-tuning epochs for `selective`, the budget ASHA
schedules over). Each such report evaluates the validation split, which costs about as much as
an epoch on digits: nothing pays for it unless something reads it. Every report is measured on
the validation split; the final one adds the test split's numbers (`test_acc`, `test_mia`,
`test_objective`), which no searcher or scheduler reads.

The method's own per-epoch logs (losses, accuracies on the batches it trained on, for every
phase) cost nothing to keep: the final report carries them to the driver, which writes them
to history.json and, as TensorBoard curves, to an event file in the trial's directory beside
Tune's (trial_files.py). A trial writes nothing to disk: on a cluster it may run on a node
whose disk the driver never sees. It reads nothing from disk but the data set: the references
come with the job.

With several tuning requests (`requests`), a trial runs its configuration on each in turn and
reports each request's objective, test objective and components as `<label>/<name>`; the
top-level metrics are their means, the components and the objectives are aggregated (mean, or
the worst) as objective.aggregate says: the searcher only reads the aggregate. Per-epoch reports
come from the first request only, so ASHA's rungs count that request's evaluated epochs; a
trial that passes them runs the other requests, and its final report carries the aggregate.

A trial that diverges or runs out of GPU memory ends with a final report that says why
(failed_report): the searcher records a failed trial, the run's files list it as ERROR, and the
search goes on. An exception is left for what a trial cannot answer for, a lost process or node:
Tune runs such a trial again (tuner.py, FailureConfig). A node that cannot load the data set (one
an autoscaler added after the search's own check) fails its first trial with a report that
stops the search with one line naming the node (progress.NodeDataWatch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from ray import tune

from ..data.experiment import Experiment
from ..methods import get_method
from ..evaluation.objective import Weights, aggregate, aggregate_components, mean_numbers
from ..pipeline import EpochReport, Prepared, RunResult, prepare_with, run_method
from ..runtime import limit_threads, make_runtime
from ..training import Diverged
from ..errors import UserError
from .trial_files import FAILED_KEY, HISTORY_KEY, NODE_DATA_KEY



@dataclass(frozen=True)
class TrialJob:
    """What every trial of a search shares, passed once through Ray's object store: a trial
    needs nothing from the disk of the node it runs on but the data set."""

    experiment: Experiment  # overrides applied, paths absolute
    run_dir: str  # absolute: the search's directory (on the driver's node)
    method: str
    fixed: dict  # hyperparameters fixed for every trial
    weights: Weights
    seed: int
    cpus: float
    requests: tuple  # (label, experiment) of every tuning request, at least one
    references: dict  # label -> the request's References for trials (References.for_trials)
    finished: dict = field(default_factory=dict)  # trial id -> final report of the trials that have one (a resume)
    leakage: bool = False  # measure pl_forget_acc (and leak_gap) in every report
    report_every_epoch: bool = False  # evaluate and report every evaluated epoch, not only the end
    aggregate: str = "mean"  # how the requests' objectives make one (objective.aggregate)


def failed_report(reason: str, epochs: int, history: list, **extra) -> dict:
    """The final report of a trial that cannot produce metrics (diverged, out of memory): a
    result, not an exception, so that Tune retries only trials whose process was lost. The
    objective is NaN because Tune wants the metric in every report; the searcher records the
    trial as failed (study.StudySearch) and results.load_run lists it as ERROR with `reason`."""
    return {"objective": float("nan"), FAILED_KEY: reason, "phase": "final", "final": 1, "epoch": epochs,
            HISTORY_KEY: history, **extra}


def report_of(metrics: dict, components: dict, objective: float, **extra) -> dict:
    """A flat, numeric report: metrics, components, objective (None values left out)."""
    out = {k: v for k, v in metrics.items() if v is not None}
    out.update(components)
    out["objective"] = objective
    out.update(extra)
    return out


def test_columns(test_metrics: dict, test_objective: float) -> dict:
    """The test split's numbers under names that cannot be mistaken for what was optimised:
    test_acc (and forget_test_acc) as they are, the attacks as test_mia, test_mia_cv_acc (test_asr,
    test_pl_forget_acc). The forget set's accuracies are the same on both splits: not repeated."""
    out = {k: v for k, v in test_metrics.items() if k.endswith("test_acc") and v is not None}
    out.update({f"test_{k}": test_metrics[k] for k in ("mia", "mia_cv_acc", "asr", "pl_forget_acc")
                if test_metrics.get(k) is not None})
    out["test_objective"] = test_objective
    return out


def epoch_report(r: EpochReport, count: int) -> dict:
    """`epoch` counts the evaluated epochs so far (the method's own epoch number is
    `phase_epoch`): ASHA compares trials at equal values of it."""
    return report_of(r.metrics, r.components, r.objective, phase=r.phase, phase_epoch=r.epoch, epoch=count, final=0,
                     **{f"train_{k}": v for k, v in r.logs.items() if isinstance(v, (int, float))})


def final_report(result: RunResult, epochs: int) -> dict:
    """The full evaluation after the run; `epoch` is the number of evaluated epochs before it,
    so that ASHA never judges this report against another trial's early one."""
    stats = {k: v for k, v in result.stats.items() if isinstance(v, (int, float))}
    return report_of(result.metrics, result.components, result.objective, phase="final", final=1, epoch=epochs,
                     **test_columns(result.test_metrics, result.test_objective), **stats)


def combined_report(results: list[tuple[str, RunResult]], epochs: int, how: str) -> dict:
    """One final report from several requests' runs: each request's objective, test objective
    and components under `<label>/`; metrics, test columns and statistics averaged; components
    and both objectives aggregated (`how`)."""
    if len(results) == 1:
        return final_report(results[0][1], epochs)
    out = mean_numbers([final_report(result, epochs) for _, result in results])
    out.update(aggregate_components([r.components for _, r in results], how))
    out["objective"] = aggregate([r.objective for _, r in results], how)
    out["test_objective"] = aggregate([r.test_objective for _, r in results], how)
    out.update(phase="final", final=1, epoch=epochs, requests=len(results))
    for label, result in results:
        out[f"{label}/objective"] = result.objective
        out[f"{label}/test_objective"] = result.test_objective
        out.update({f"{label}/{c}": v for c, v in result.components.items()})
    return out


# Per-process memo: the search reuses trial actors, so data and references stay on the device.
_PREPARED: dict[tuple, list[tuple[str, Prepared]]] = {}


def _prepared(job: TrialJob) -> list[tuple[str, Prepared]]:
    """(label, data and references) of every tuning request of the job, loaded once per process:
    the data from this node's disk, the references from the job (pipeline.prepare_with)."""
    key = (job.run_dir, repr(job.requests), job.leakage)
    if key not in _PREPARED:
        _PREPARED.clear()
        runtime = make_runtime("auto")
        _PREPARED[key] = [(label, prepare_with(exp, runtime, job.references[label])) for label, exp in job.requests]
    return _PREPARED[key]


def unlearning_trial(config: dict, job: TrialJob) -> None:
    started = time.perf_counter()
    done = job.finished.get(tune.get_context().get_trial_id())
    if done is not None:  # finished before the search was interrupted: report it again, do not re-run
        tune.report(done)
        return
    limit_threads(job.cpus)
    try:
        requests = _prepared(job)
    except UserError as exc:  # no data set on this node, or another copy: any trial here fails alike
        import ray

        tune.report(failed_report(f"node {ray.util.get_node_ip_address()}: {exc}", 0, [], **{NODE_DATA_KEY: True}))
        return
    method = get_method(job.method)
    hparams = method.resolve(job.experiment.method_defaults.get(job.method, {}), job.fixed, config)
    reported = 0  # evaluated epochs so far: the rung clock ASHA compares trials on

    def report(r: EpochReport) -> None:
        nonlocal reported
        reported += 1
        tune.report(epoch_report(r, reported))

    results, history = [], []
    several = len(requests) > 1  # one request reports as a search always did: no labels
    for i, (label, prepared) in enumerate(requests):
        where = f" on request {label}" if several else ""
        try:
            result = run_method(prepared, method, hparams, job.weights, job.seed,
                                on_report=report if job.report_every_epoch and i == 0 else None, leakage=job.leakage)
        except Diverged as exc:
            reason = f"diverged{where}: {exc}"
        except torch.cuda.OutOfMemoryError as exc:
            _PREPARED.clear()
            torch.cuda.empty_cache()
            reason = f"out of GPU memory{where}: {str(exc).splitlines()[0]}"
        else:
            results.append((label, result))
            history += [{**entry, "request": label} if several else entry for entry in result.history]
            continue
        tune.report(failed_report(reason, reported, history))
        return
    final = combined_report(results, reported, job.aggregate)
    final["trial_time_s"] = time.perf_counter() - started  # the whole trial: data, unlearning, evaluation
    final["node_id"] = ray_node_id()  # where it ran (a cluster's node; Tune adds its address as node_ip)
    # What a replay needs to give the same arithmetic (best_config.yaml's replay block)
    final["threads"], final["device"] = torch.get_num_threads(), results[0][1].device
    # The driver writes history.json and final_result.json from this report (trial_files.py):
    # this process may run on a node whose disk the driver never sees.
    final[HISTORY_KEY] = history
    tune.report(final)


def ray_node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()
