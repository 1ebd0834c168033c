"""After the trials: the best configurations and the method's defaults on the held-out
requests, forget requests the search never tuned on (holdout.json).

A user tunes on requests for which they paid for retrained models and applies the answer to new
ones: what a configuration scores on requests it was not chosen on is the number that says
whether tuning paid. The best configuration is chosen on the tuning requests alone; the
held-out scores are reported beside the tuning ones and never used to choose (that would be
tuning on them), and they never reach the searcher: they are computed after Tune has finished.

Each of the `holdout_top` best finished trials (by the tuning objective) and the defaults run
once per held-out request, seed 0 as in the trials, from that request's cached references, and
are scored on its test split (the validation split's objective is kept too). A configuration's
held-out objective aggregates its test objectives over the held-out requests like the tuning
objective aggregates the tuning requests'. Results are written after every run, keyed by the
hyperparameters and the request, so an interrupted or repeated search never runs one twice; the
defaults share the runs of a trial with the same hyperparameters.

On a local machine without a GPU the runs happen in the search's process (a Ray task would
import torch and load the data again); on a GPU or a cluster, in one Ray task. Either way the
references come from the driver, not from a cache on the node.
"""

from __future__ import annotations

import json
import statistics

from ..errors import Diverged
from ..evaluation.objective import aggregate
from ..evaluation.references import digest
from ..files import atomic_write_text
from ..methods import get_method
from .plan import Plan
from .results import HOLDOUT_FILE, RunRecord

# A held-out run's test-split numbers kept beside its objectives
KEPT_METRICS = ("retain_acc", "forget_acc", "forget_true_acc", "test_acc", "forget_test_acc", "asr", "mia", "cost", "macs",
                "steps", "time_s")


def candidates(plan: Plan, record: RunRecord) -> list[dict]:
    """The `holdout_top` best finished trials and the defaults: name, trial id, hyperparameters
    and the tuning objectives (the defaults': those of a finished trial that ran them, as the
    search's first trial does when the space holds them; else None)."""
    method = get_method(plan.method)
    defaults = plan.experiment.method_defaults.get(plan.method, {})

    def hparams_of(t) -> dict:
        return method.resolve(defaults, plan.space.fixed, t.config)

    def tuning_of(t) -> dict:
        return {"objective": t.result["objective"], "test_objective": t.result.get("test_objective")}

    out = [{"name": f"rank {rank}", "trial_id": t.trial_id, "rank": rank, "hparams": hparams_of(t), "tuning": tuning_of(t)}
           for rank, t in enumerate(record.ranked()[:plan.holdout_top], 1)]
    hparams = method.resolve(defaults, plan.space.fixed, {})
    same = next((c for c in out if c["hparams"] == hparams), None)
    ran = same["tuning"] if same else next((tuning_of(t) for t in record.finished if hparams_of(t) == hparams), None)
    out.append({"name": "defaults", "trial_id": None, "rank": None, "hparams": hparams,
                "same_as": same["trial_id"] if same else None, "tuning": ran})
    return out


def run_key(hparams: dict, label: str) -> str:
    return f"{digest(hparams)}/{label}"


def summarize(result) -> dict:
    """What holdout.json keeps of one run (a pipeline.RunResult)."""
    return {"objective": result.objective, "test_objective": result.test_objective,
            "test_components": result.test_components,
            "test_metrics": {k: result.test_metrics[k] for k in KEPT_METRICS if result.test_metrics.get(k) is not None}}


def holdout_runs(plan: Plan, todo: list[tuple[str, dict, str]], references: dict, on_result=None) -> dict:
    """Run each (key, hyperparameters, request label) in `todo` in this process, from the
    requests' `references` (label -> References for trials) and the data on this node: key ->
    result (or {"error": ...} for a run that diverged). `on_result(key, result)` after each."""
    from ..pipeline import prepare_with, run_method
    from ..runtime import make_runtime

    runtime = make_runtime("auto")
    experiments = dict(plan.holdout_experiments())
    prepared, out = {}, {}
    for key, hparams, label in todo:
        if label not in prepared:  # one request's data at a time
            prepared = {label: prepare_with(experiments[label], runtime, references[label])}
        try:
            result = summarize(run_method(prepared[label], plan.method, hparams, plan.weights, 0, leakage=plan.leakage))
        except Diverged as exc:
            result = {"error": f"diverged: {exc}"}
        out[key] = result
        if on_result:
            on_result(key, result)
    return out


def run_holdout(plan: Plan, record: RunRecord, references: dict, gpu: bool, local: bool, timeout: float) -> dict:
    """Run what holdout.json lacks and write it; returns its content. `references`: label ->
    References for trials of every held-out request."""
    path = plan.run_dir / HOLDOUT_FILE
    saved = json.loads(path.read_text()) if path.exists() else {}
    results: dict = saved.get("results", {})
    configs = candidates(plan, record)
    labels = [label for label, _ in plan.holdout_experiments()]
    todo, planned = [], set(results)
    for c in configs:
        for label in labels:
            key = run_key(c["hparams"], label)
            if key not in planned:
                planned.add(key)
                todo.append((key, c["hparams"], label))

    def write() -> dict:
        content = holdout_content(plan, record, configs, labels, results)
        atomic_write_text(path, json.dumps(content, indent=1, default=str))
        return content

    if todo:
        print(f"held-out requests {', '.join(labels)}: running the {len(configs) - 1} best configurations and the "
              f"defaults ({len(todo)} runs; test split)", flush=True)
        held = {label: references[label] for label in labels}
        if local and not gpu:
            holdout_runs(plan, todo, held, on_result=lambda key, result: (results.__setitem__(key, result), write()))
        else:
            from .cluster import remote_task, run_tasks

            task = remote_task(holdout_runs, num_cpus=1, num_gpus=1 if gpu else 0, max_calls=1)
            [done] = run_tasks(task, [(plan, todo, held)], f"the held-out runs (1 CPU{' + 1 GPU' if gpu else ''})", timeout)
            results.update(done)
    return write()


def holdout_content(plan: Plan, record: RunRecord, configs: list[dict], labels: list[str], results: dict) -> dict:
    """holdout.json: per configuration its tuning objectives, each held-out request's result and
    the held-out objective; per request the original and the retrained models scored the same way."""
    rows = []
    for c in configs:
        per_request = {label: results.get(run_key(c["hparams"], label)) for label in labels}
        objectives = [r["test_objective"] for r in per_request.values() if r and "test_objective" in r]
        rows.append({**c, "requests": per_request,
                     "holdout_objective": aggregate(objectives, plan.aggregate) if len(objectives) == len(labels) else None})
    refs = record.search.get("request_references", {})
    baselines = {}
    for label in labels:
        test = refs.get(label, {}).get("baselines", {}).get("test")
        if test:
            retrained = test["retrained"]["objectives"]
            baselines[label] = {"original": test["original"]["objective"], "retrained": retrained,
                                "retrained_mean": statistics.fmean(retrained) if retrained else None}
    return {"requests": labels, "aggregate": plan.aggregate, "split": "test", "configs": rows, "baselines": baselines,
            "results": results}
