"""After the trials, before the held-out runs: the best configurations again with other
unlearning seeds (reseeds.json), so that the best is chosen on a mean over seeds, not on one draw.

A trial runs its configuration once, with unlearning seed 0, and its objective carries the noise
of that one run (the order of the batches, a mask's first draw, which samples a method picks).
Trials a tenth of a unit apart are then ordered by that noise (experiments/noise_floor.py
measures it). So the `reseed_top` best trials by their own objective run again with seeds 1 ..
`reseeds` - 1 on every tuning request, scored like the trials (validation split, aggregated over
the requests the same way); RunRecord.ranked orders them by their mean, ahead of the trials run
once, and the summary, the export and best_config.yaml show the mean with its standard
deviation. A configuration that diverges on another seed is ranked after every other finished
trial. Results are written after every run, keyed by the hyperparameters, the request and the
seed, so an interrupted or repeated search never runs one twice. Where the runs happen:
reruns.py.
"""

from __future__ import annotations

import json
import statistics

from ..evaluation.objective import aggregate
from ..evaluation.references import digest
from ..files import atomic_write_text
from .plan import Plan
from .reruns import hparams_of, run_all, run_seconds
from .results import RESEED_FILE, RunRecord


def reseed_key(hparams: dict, label: str, seed: int) -> str:
    return f"{digest(hparams)}/{label}/seed{seed}"


def run_reseeds(plan: Plan, record: RunRecord, references: dict, gpu: bool, local: bool, timeout: float) -> dict:
    """Run what reseeds.json lacks and write it; returns its content. `references`: label ->
    References for trials of every tuning request."""
    path = plan.run_dir / RESEED_FILE
    results: dict = json.loads(path.read_text())["results"] if path.exists() else {}
    top = sorted(record.finished, key=lambda t: -t.result["objective"])[:plan.reseed_top]  # by their own run
    labels = [label for label, _ in plan.tuning_experiments()]
    todo = []
    for t in top:
        hparams = hparams_of(plan, t.config)
        todo += [(key, hparams, label, seed) for seed in range(1, plan.reseeds) for label in labels
                 if (key := reseed_key(hparams, label, seed)) not in results]

    def write() -> dict:
        content = reseed_content(plan, top, labels, results)
        atomic_write_text(path, json.dumps(content, indent=1, default=str))
        return content

    if todo:
        print(f"the {len(top)} best configurations again with unlearning seeds 1..{plan.reseeds - 1} ({len(todo)} runs; "
              "the best is chosen on the mean over seeds)", flush=True)
        run_all(plan, todo, references, dict(plan.tuning_experiments()), gpu, local, timeout, "the re-seeded runs",
                on_result=lambda key, result: (results.__setitem__(key, result), write()), run_s=run_seconds(record))
    return write()


def reseed_content(plan: Plan, top: list, labels: list[str], results: dict) -> dict:
    """reseeds.json: per trial its objective for every seed (seed 0: the trial's own), their mean
    and standard deviation (None until every seed ran; `failed` when one diverged)."""
    trials = {}
    for t in top:
        hparams = hparams_of(plan, t.config)
        objectives, failed = [t.result["objective"]], None
        for seed in range(1, plan.reseeds):
            runs = [results.get(reseed_key(hparams, label, seed)) for label in labels]
            failed = failed or next((f"seed {seed}: {r['error']}" for r in runs if r and "error" in r), None)
            if all(r and "objective" in r for r in runs):
                objectives.append(aggregate([r["objective"] for r in runs], plan.aggregate))
        complete = len(objectives) == plan.reseeds and not failed
        trials[t.trial_id] = {"objectives": objectives, "failed": failed,
                              "mean": statistics.fmean(objectives) if complete else None,
                              "sd": statistics.stdev(objectives) if complete else None}
    return {"seeds": list(range(plan.reseeds)), "split": "validation", "aggregate": plan.aggregate,
            "trials": trials, "results": results}
