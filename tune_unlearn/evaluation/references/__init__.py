"""The original model (trained on all of D) and the retrained models (same recipe on D_r, K
training seeds: `retrained_models`), each trained once and cached, with their evaluations.

Cache layout, under the cache directory (`--cache-dir`, $TUNE_UNLEARN_CACHE, or
~/.cache/tune_unlearn):

    <experiment>/original-<key>.pt   state dict + meta; key: data fingerprint, model, recipe (and
                                     the forget set when the original is made by transfer or
                                     trains on D as a corrective rule changed it)
    <experiment>/retrain-<key>.pt    state dict + meta + the forget set's indices; key adds the
                                     forget rule (so the original is shared across forget seeds)
                                     and the training seed (train.seed + i for the i-th model, so
                                     growing K trains only the new ones)
    <experiment>/eval-<key>.json     metrics of a model on the validation and the test split,
                                     under the current attacks (the leakage attack's
                                     pl_forget_acc when asked for)
    <experiment>/conf-<key>.json     a model's logit-scaled confidence on each forget sample
                                     (the per-example gap's reference: example_gap.py)

Each model's metrics carry its training's wall time (`time_s`), counted work (`macs`, `calls`,
`steps`) and cost (`cost`, priced by the device's cost model: cost.py); the prices are cached
too, under calibration/.

The package: cache.py (keys, entries, evaluations, prices), training.py (training a reference
model), scoring.py (References, the baselines scored like trials); prepare_references here.

Every file is written to a temporary name and renamed into place, so a killed run never leaves
a half-written entry; checkpoints are read with `weights_only=True`. An unreadable entry is
reported and rebuilt. Trials never train: they call `prepare` with `allow_training=False`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from ...data.experiment import Experiment
from ...data.load import ExperimentData
from ...files import log_stderr
from ...runtime import Runtime
from .cache import NotCached, ReferenceCache, digest, file_digest, forget_key, retrain_seeds
from .scoring import References, combine_scored
from .training import Forecast, empty_network, loaded, network, training_counts, work_per_image_and_step

__all__ = ["NotCached", "ReferenceCache", "References", "combine_scored", "digest", "empty_network", "file_digest",
           "forget_key", "loaded", "network", "prepare_references", "retrain_seeds", "untrained_seconds"]


def reference_jobs(exp: Experiment) -> list[tuple[str, str, Experiment]]:
    """(name, role, experiment) of every reference model: the original, then the retrained ones."""
    return [("original", "original", exp)] + [(f"retrain-{i}", "retrain", replace(exp, train=replace(exp.train, seed=seed)))
                                              for i, seed in enumerate(retrain_seeds(exp))]


def untrained(cache: ReferenceCache, jobs: list, data: ExperimentData,
              original_checkpoint: str | None) -> list[tuple[str, Experiment]]:
    """(role, experiment) of the models of `jobs` that the cache lacks (a given original is none)."""
    return [(role, model_exp) for _, role, model_exp in jobs
            if not (role == "original" and original_checkpoint) and not cache.path_of(model_exp, data, role).exists()]


def untrained_seconds(exp: Experiment, data: ExperimentData, runtime: Runtime, cache_dir: str | Path,
                      original_checkpoint: str | None = None, threads: int | None = None,
                      counted: set[Path] | None = None) -> float:
    """A forecast of the time that training the references of `exp` missing from the cache
    takes here on `threads` threads: their counted work (training_counts) at the device's prices
    (calibrated first where the cache has none, as prepare_references would); 0 when all are cached.
    `counted`: the cache files of models already forecast (another request's that will train
    them first), left out, and where this one's are added."""
    cache = ReferenceCache(cache_dir, lambda message: None)
    missing = untrained(cache, reference_jobs(exp), data, original_checkpoint)
    if counted is not None:
        paths = [cache.path_of(model_exp, data, role) for role, model_exp in missing]
        missing = [job for job, path in zip(missing, paths) if path not in counted]
        counted.update(paths)
    if not missing:
        return 0.0
    prices = cache.cost_model(exp, data, runtime, threads)
    work = work_per_image_and_step(exp, data, runtime)  # the same network for every reference model
    counts = [training_counts(model_exp, data, role, work) for role, model_exp in missing]
    return sum(prices.seconds(c["macs"], c["calls"]) for c in counts)


def prepare_references(exp: Experiment, data: ExperimentData, runtime: Runtime, cache_dir: str | Path,
                       original_checkpoint: str | None = None, allow_training: bool = True,
                       log: Callable[[str], None] = log_stderr, leakage: bool = False,
                       threads: int | None = None) -> References:
    """The original and the retrained models of `exp`, with their metrics on both splits, their
    training's counted work and cost (priced by the device's cost model, calibrated for
    `threads`, the threads an unlearning runs on: None, this process's), and their confidences."""
    cache = ReferenceCache(cache_dir, log)
    refs = References({}, [], {}, [], fingerprint=data.fingerprint)
    jobs = reference_jobs(exp)
    missing = [role for role, _ in untrained(cache, jobs, data, original_checkpoint)]
    if missing and allow_training:  # said when the first one starts (a bad --original is refused first)
        cache.forecast = Forecast(len(missing), f"{len(missing)} of {len(jobs)} models to train for {exp.name} "
                                  f"({exp.forget.describe()}, train seed {exp.train.seed}); the rest come from the cache")
    metas = []
    for name, role, model_exp in jobs:
        state, meta, status, path = cache.model(model_exp, data, runtime, role, allow_training, original_checkpoint)
        # A rebuilt entry keeps its name but is a new model: its creation time is part of the id.
        model_id = file_digest(path) if status == "checkpoint" else f"{path.name}@{meta.get('created')}"
        metrics = cache.metrics(model_exp, data, runtime, state, model_id, leakage)
        metas.append((metrics, meta))
        refs.confidences[name] = cache.confidences(model_exp, data, runtime, state, model_id)
        refs.status[name], refs.paths[name] = status, str(path)
        if role == "original":
            refs.original_state, refs.original = state, metrics
        else:
            refs.retrain_states.append(state)
            refs.retrained.append(metrics)
    # Priced once every model is there (a bad --original is refused before anything is measured)
    prices = cache.cost_model(exp, data, runtime, threads)
    refs.cost_model = prices.to_json()
    for metrics, meta in metas:
        training = prices.priced({"macs": meta.get("train_macs"), "calls": meta.get("train_calls"),
                                  "steps": meta.get("train_steps")})
        for split_metrics in metrics.values():
            split_metrics.update(time_s=meta.get("train_time_s"), **training)
    return refs
