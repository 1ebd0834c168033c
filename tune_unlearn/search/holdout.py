"""After the trials: the best configurations and the method's defaults on the held-out
requests, forget requests the search never tuned on (holdout.json).

A user tunes on requests for which they paid for retrained models and applies the answer to new
ones: what a configuration scores on requests it was not chosen on is the number that says
whether tuning paid. The best configuration is chosen on the tuning requests alone; the
held-out scores are reported beside the tuning ones and never used to choose (that would be
tuning on them), and they never reach the searcher: they are computed after Tune has finished.

Each of the `holdout_top` best finished trials (by the tuning objective, its mean over seeds
where reseed.py ran it again) and the defaults run
once per held-out request, seed 0 as in the trials, from that request's cached references, and
are scored on its test split (the validation split's objective is kept too). A configuration's
held-out objective aggregates its test objectives over the held-out requests like the tuning
objective aggregates the tuning requests'. Results are written after every run, keyed by the
hyperparameters and the request, so an interrupted or repeated search never runs one twice; the
defaults share the runs of a trial with the same hyperparameters.
Where the runs happen: reruns.py.
"""

from __future__ import annotations

import json
import statistics

from ..evaluation.objective import aggregate
from ..evaluation.references import digest
from ..files import atomic_write_text
from .plan import Plan
from .reruns import hparams_of, run_all, run_seconds
from .results import HOLDOUT_FILE, RunRecord


def candidates(plan: Plan, record: RunRecord) -> list[dict]:
    """The `holdout_top` best finished trials and the defaults: name, trial id, hyperparameters
    and the tuning objectives (the defaults': those of a finished trial that ran them, as the
    search's first trial does when the space holds them; else None)."""
    def tuning_of(t) -> dict:
        return {"objective": t.result["objective"], "test_objective": t.result.get("test_objective")}

    out = [{"name": f"rank {rank}", "trial_id": t.trial_id, "rank": rank, "hparams": hparams_of(plan, t.config),
            "tuning": tuning_of(t)} for rank, t in enumerate(record.ranked()[:plan.holdout_top], 1)]
    hparams = hparams_of(plan, {})
    same = next((c for c in out if c["hparams"] == hparams), None)
    ran = same["tuning"] if same else next((tuning_of(t) for t in record.finished if hparams_of(plan, t.config) == hparams),
                                           None)
    out.append({"name": "defaults", "trial_id": None, "rank": None, "hparams": hparams,
                "same_as": same["trial_id"] if same else None, "tuning": ran})
    return out


def run_key(hparams: dict, label: str) -> str:
    return f"{digest(hparams)}/{label}"


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
                todo.append((key, c["hparams"], label, 0))

    def write() -> dict:
        content = holdout_content(plan, record, configs, labels, results)
        atomic_write_text(path, json.dumps(content, indent=1, default=str))
        return content

    if todo:
        print(f"held-out requests {', '.join(labels)}: running the {len(configs) - 1} best configurations and the "
              f"defaults ({len(todo)} runs; test split)", flush=True)
        run_all(plan, todo, references, dict(plan.holdout_experiments()), gpu, local, timeout, "the held-out runs",
                on_result=lambda key, result: (results.__setitem__(key, result), write()), run_s=run_seconds(record))
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
