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

Each model's metrics carry its training wall time (`time_s`) and cost (`cost`, MACs).

Every file is written to a temporary name and renamed into place, so a killed run never leaves
a half-written entry; checkpoints are read with `weights_only=True`. An unreadable entry is
reported and rebuilt. Trials never train: they call `prepare` with `allow_training=False`.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data.load import ExperimentData
from ..progress_bar import Progress
from ..files import atomic_write, atomic_write_text, log_stderr
from ..data.experiment import Experiment, ForgetSpec
from .metrics import SPLITS, evaluate
from .example_gap import ExampleReference, forget_confidences, leave_one_out_gaps
from .objective import (Weights, aggregate, aggregate_components, distances, ensemble, leave_one_out, mean_numbers,
                        score)
from ..models import load_state_checked, read_checkpoint
from ..cost import CostModel, calibrate, calibration_key, dumps, torch_threads
from ..runtime import Runtime, Stopwatch, seed_everything
from ..training import train_recipe

CACHE_FORMAT = 4  # 4: entries record their training's layer calls and steps beside its MACs (cost.py)
CONFIDENCE_VERSION = 1  # bump when forget_confidences changes meaning
METRICS_VERSION = 4  # bump when evaluate changes meaning (2: per split; 3: kit attack test size, probe target;
#                      4: the member-rate attack on the loss alone; the probe's one-class forget sets)


class NotCached(RuntimeError):
    """A reference model is missing from the cache where nothing may train it (a trial)."""


def network(exp: Experiment, data: ExperimentData) -> torch.nn.Module:
    """A fresh network of the experiment, for every caller that builds one (references, runs).
    torchvision is imported here, about 2 s, so that loading cached references, as the search's
    own process does, never imports it."""
    from ..resnet import build_model

    return build_model(exp.model, data.num_classes, data.in_channels)


def loaded(exp: Experiment, data: ExperimentData, runtime: Runtime, state: dict) -> torch.nn.Module:
    """A network of the experiment on the device, holding `state` (a cached model, to evaluate)."""
    model = runtime.prepare(network(exp, data))
    model.load_state_dict(state)
    return model


def digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def forget_key(forget: ForgetSpec) -> dict:
    """What identifies a forget set in cache keys: with whole classes forgotten the fraction and
    the seed choose nothing, so runs over seeds (compare --seeds) share one set of references.
    Only the backdoor's own settings join the key (random and mislabeled keys are as before)."""
    if forget.rule == "classes":
        return {"rule": forget.rule, "classes": sorted(forget.classes)}
    key = {"rule": forget.rule, "fraction": forget.fraction, "classes": forget.classes, "seed": forget.seed}
    if forget.rule == "backdoor":
        key.update(target=forget.target, identified=forget.identified, trigger=asdict(forget.trigger))
    return key


@dataclass
class References:
    original_state: dict
    retrain_states: list[dict]
    original: dict  # split -> metrics of the original model (time_s, cost: its training)
    retrained: list[dict]  # one per retrained model: split -> metrics (time_s, cost: its training)
    status: dict = field(default_factory=dict)  # role ("original", "retrain-<i>") -> "cached" | "trained" | "checkpoint"
    paths: dict = field(default_factory=dict)  # role -> absolute path of its cache file
    confidences: dict = field(default_factory=dict)  # role -> confidence on each forget sample (numpy)
    fingerprint: dict = field(default_factory=dict)  # the data the models were trained and measured on
    cost_model: dict = field(default_factory=dict)  # the device's prices (cost.CostModel) every cost here uses

    def prices(self) -> CostModel:
        return CostModel.from_json(self.cost_model)

    def for_trials(self) -> "References":
        """What a trial needs (the original's weights, every model's metrics and confidences),
        without the retrained models' weights: sent to trials wherever they run."""
        return replace(self, retrain_states=[])

    def retrained_confidences(self) -> np.ndarray:
        """The retrained models' confidences on the forget set, (K models x N samples)."""
        return np.stack([self.confidences[f"retrain-{i}"] for i in range(len(self.retrained))])

    def examples(self) -> ExampleReference:
        """The retrained models' confidence on each forget sample, and its spread."""
        return ExampleReference.fit(self.retrained_confidences())

    def reference(self, split: str) -> dict:
        """The retrained ensemble on `split`: each metric's mean, `<metric>_sd`, `n_models`."""
        return ensemble(m[split] for m in self.retrained)

    def baseline(self, split: str) -> dict:
        """The original model's metrics as an unlearning that does nothing: time and cost 0."""
        return {**self.original[split], "time_s": 0.0, "cost": 0.0, "macs": 0, "calls": 0, "steps": 0}

    def scored(self, weights: Weights) -> dict:
        """Both baselines scored like a trial, per split: the original (no unlearning) and each
        retrained model against the others (what a perfect unlearning scores)."""
        out = {}
        original_example = self.examples().gap(self.confidences["original"])
        retrained_examples = leave_one_out_gaps(self.retrained_confidences())
        for split in SPLITS:
            reference = self.reference(split)
            comps, value = score(self.baseline(split), reference, weights, original_example)
            out[split] = {
                "reference": reference,
                "original": {"metrics": self.baseline(split), "components": comps, "objective": value,
                             "distances": distances(self.original[split], reference)},
                "retrained": {"metrics": [m[split] for m in self.retrained],
                              "objectives": leave_one_out([m[split] for m in self.retrained], weights,
                                                          retrained_examples),
                              "example_gaps": retrained_examples},
            }
        return out


def combine_scored(scored: list[dict], how: str = "mean") -> dict:
    """Several requests' References.scored as one, in the same shape: the original's metrics,
    distances and components averaged (components by objective.aggregate_components) and its
    objective aggregated like a trial's; the retrained models of every request pooled (each
    scored against the others of its own request); the reference pooled over them, for tables."""
    if len(scored) == 1:
        return scored[0]
    out = {}
    for split in SPLITS:
        parts = [s[split] for s in scored]
        originals = [p["original"] for p in parts]
        retrained = [m for p in parts for m in p["retrained"]["metrics"]]
        out[split] = {
            "reference": ensemble(retrained),
            "original": {"metrics": mean_numbers([o["metrics"] for o in originals]),
                         "components": aggregate_components([o["components"] for o in originals], how),
                         "objective": aggregate([o["objective"] for o in originals], how),
                         "distances": mean_numbers([o["distances"] for o in originals])},
            "retrained": {"metrics": retrained,
                          "objectives": [v for p in parts for v in p["retrained"]["objectives"]],
                          "example_gaps": [v for p in parts for v in p["retrained"].get("example_gaps", [])]},
        }
    return out


class ReferenceCache:
    def __init__(self, root: str | Path, log: Callable[[str], None] = log_stderr):
        self.root = Path(root).expanduser().resolve()
        self.log = log
        self.untrained = 0  # models a preparation will train, until its first epoch forecasts their time
        self.announce = ""  # what the preparation will train, said as the first model starts

    def _model_key(self, exp: Experiment, data: ExperimentData, role: str, checkpoint: str | None) -> str:
        # exp.train.seed is the model's own training seed (the i-th retrained model's: seed + i)
        payload = {"format": CACHE_FORMAT, "role": role, "data": data.fingerprint, "model": asdict(exp.model),
                   "train": asdict(exp.train)}
        # A transferred original pretrains on D_f; under a corrective rule D itself is the rule's
        if role == "retrain" or exp.train.original == "transfer" or exp.forget.corrective:
            payload["forget"] = forget_key(exp.forget)
        if role == "original":
            payload["checkpoint"] = checkpoint
        return digest(payload)

    def _load_entry(self, path: Path, expected_forget: torch.Tensor | None) -> dict | None:
        if not path.exists():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(entry, dict) or not isinstance(entry.get("state_dict"), dict) or "meta" not in entry:
                raise ValueError("not a tune_unlearn cache entry")
            if expected_forget is not None and not torch.equal(entry["forget"], expected_forget):
                raise ValueError("its forget set differs from the experiment's")
            return entry
        except Exception as exc:  # noqa: BLE001 - any unreadable entry is rebuilt
            self.log(f"cache entry {path} is unusable ({type(exc).__name__}: {str(exc)[:120]}); rebuilding it")
            return None

    def _train(self, exp: Experiment, data: ExperimentData, runtime: Runtime, role: str) -> tuple[dict, dict]:
        """The original (joint: the recipe on D; transfer: the recipe on D_f, then a shorter
        recipe on D_r) or the retrained reference (the recipe on D_r)."""
        recipe = exp.train
        if role == "retrain":
            stages = [("", data.retain, recipe)]
        elif recipe.original == "transfer":
            stages = [(" (source task: forget classes)", data.forget, recipe),
                      (" (transfer to the target task)", data.retain,
                       replace(recipe, epochs=recipe.transfer_epochs, lr=recipe.transfer_lr))]
        else:
            stages = [("", data.train, recipe)]
        if self.announce:
            self.log(self.announce)
            self.announce = ""
        seed_everything(recipe.seed)
        model = runtime.prepare(network(exp, data))
        clock = Stopwatch(runtime).start()
        images = 0
        for what, part, stage in stages:
            self.log(f"training the {role} model (seed {recipe.seed}){what}: {stage.epochs} epochs on {len(part)} samples ({runtime.describe()})")
            # A bar on a terminal, else a line every fifth of the epochs (through self.log)
            with Progress(f"{role} (seed {recipe.seed})", stage.epochs, "epoch",
                          log=None if self.log is log_stderr else self.log) as bar:
                def on_epoch(epoch: int, logs: dict) -> None:
                    bar.update(text=f"loss {logs['loss']:.4f}")
                    if epoch == 0 and self.untrained:  # the first epoch of this preparation: a forecast
                        per_model = clock.elapsed * sum(s.epochs for _, _, s in stages)
                        self.log(f"first epoch in {clock.elapsed:.2f} s: about {per_model:.0f} s per model, "
                                 f"{per_model * self.untrained:.0f} s for the {self.untrained} model(s) to train here")
                        self.untrained = 0

                train_recipe(model, part, stage, runtime, on_epoch=on_epoch)
            images += stage.epochs * len(part)
        seconds = clock.stop()
        counts = clock.counts()
        meta = {"role": role, "experiment": exp.name, "train_time_s": seconds, "train_macs": counts["macs"],
                "train_calls": counts["calls"], "train_steps": counts["steps"],
                "seed": recipe.seed, "device": runtime.describe(),
                "host": socket.gethostname(), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                "train_images_per_s": images / seconds}
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return state, meta

    def path_of(self, exp: Experiment, data: ExperimentData, role: str) -> Path:
        """Where the cache keeps the original or a retrained model of `exp`."""
        return self.root / exp.name / f"{role}-{self._model_key(exp, data, role, None)}.pt"

    def model(self, exp: Experiment, data: ExperimentData, runtime: Runtime, role: str,
              allow_training: bool, checkpoint: str | None = None) -> tuple[dict, dict, str, Path]:
        """(state dict, meta, status, path) of the original or the retrained model."""
        if role == "original" and checkpoint is not None:
            path = Path(checkpoint).resolve()
            state = read_checkpoint(path)
            load_state_checked(network(exp, data), state, f"checkpoint {path}")
            return state, {"role": role, "train_time_s": None, "train_macs": None, "checkpoint": str(path)}, "checkpoint", path
        path = self.path_of(exp, data, role)
        forget = data.split.forget if role == "retrain" else None
        entry = self._load_entry(path, forget)
        if entry is not None:
            self.log(f"cache hit: {role} model (seed {exp.train.seed}) from {path}")
            return entry["state_dict"], entry["meta"], "cached", path
        if not allow_training:
            raise NotCached(f"the {role} model is not in the cache ({path}); the driver prepares it before trials start")
        state, meta = self._train(exp, data, runtime, role)
        payload = {"state_dict": state, "meta": meta}
        if forget is not None:
            payload["forget"] = forget.clone()
        atomic_write(path, lambda tmp: torch.save(payload, tmp))
        self.log(f"cached the {role} model in {path} ({meta['train_time_s']:.1f} s to train)")
        return state, meta, "trained", path

    def metrics(self, exp: Experiment, data: ExperimentData, runtime: Runtime, state: dict, model_id: str,
                leakage: bool = False) -> dict:
        """Evaluation of a cached model on both held-out splits (split -> metrics; cached too,
        keyed by model and split), with the leakage attack's `pl_forget_acc` when `leakage`."""
        key = digest({"model": model_id, "forget": forget_key(exp.forget), "eval": asdict(exp.eval),
                      "metrics": METRICS_VERSION, "data": data.fingerprint,
                      "heldout": [exp.dataset.val_fraction, exp.dataset.val_seed],
                      "leakage": asdict(exp.leakage) if leakage else None})
        path = self.root / exp.name / f"eval-{key}.json"
        if path.exists():
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):
                self.log(f"cache entry {path} is unreadable; re-evaluating")
        result = evaluate(loaded(exp, data, runtime, state), data, runtime, exp.eval.batch_size, exp.eval.mia_seed,
                          leakage=exp.leakage if leakage else None)
        atomic_write_text(path, json.dumps(result, indent=1))
        return result

    def confidences(self, exp: Experiment, data: ExperimentData, runtime: Runtime, state: dict,
                    model_id: str) -> np.ndarray:
        """A model's logit-scaled confidence on each forget sample (cached, keyed like metrics)."""
        key = digest({"model": model_id, "forget": forget_key(exp.forget), "data": data.fingerprint,
                      "confidence": CONFIDENCE_VERSION})
        path = self.root / exp.name / f"conf-{key}.json"
        if path.exists():
            try:
                values = np.asarray(json.loads(path.read_text()), dtype=np.float64)
                if len(values) == len(data.forget):
                    return values
            except (OSError, ValueError):
                pass
            self.log(f"cache entry {path} is unusable; recomputing it")
        model = loaded(exp, data, runtime, state)
        values = [round(float(v), 6) for v in forget_confidences(model, data.forget, runtime, exp.eval.batch_size)]
        atomic_write_text(path, json.dumps(values))
        return np.asarray(values, dtype=np.float64)  # as rounded as a cached entry: the same scores either way

    def cost_model(self, exp: Experiment, data: ExperimentData, runtime: Runtime, threads: int | None) -> CostModel:
        """The device's prices for this network (cost.calibrate, on `threads` threads), measured
        once per device, threads, processor, torch and network, and cached."""
        with torch_threads(threads):
            describe = runtime.describe()
            shape = tuple(next(iter(data.train.batches(1)))[0].shape[1:])
            key = calibration_key(describe, asdict(exp.model), shape, data.num_classes)
            path = self.root / "calibration" / f"cost-{digest(key)}.json"
            if path.exists():
                try:
                    return CostModel.from_json(json.loads(path.read_text())["prices"])
                except (OSError, ValueError, KeyError):
                    self.log(f"cache entry {path} is unreadable; calibrating again")
            self.log(f"calibrating the cost model on {describe} (training steps at three batch sizes)")
            prices = calibrate(lambda: runtime.prepare(network(exp, data)), shape, data.num_classes, runtime.device,
                               runtime.sync, describe)
        atomic_write_text(path, dumps(prices, key))
        return prices


def retrain_seeds(exp: Experiment) -> list[int]:
    """Training seeds of the retrained models: train.seed, train.seed + 1, ..."""
    return [exp.train.seed + i for i in range(exp.retrained_models)]


def prepare_references(exp: Experiment, data: ExperimentData, runtime: Runtime, cache_dir: str | Path,
                       original_checkpoint: str | None = None, allow_training: bool = True,
                       log: Callable[[str], None] = log_stderr, leakage: bool = False,
                       threads: int | None = None) -> References:
    """The original and the retrained models of `exp`, with their metrics on both splits, their
    training's counted work and cost (priced by the device's cost model, calibrated for
    `threads`, the threads an unlearning runs on: None, this process's), and their confidences."""
    cache = ReferenceCache(cache_dir, log)
    refs = References({}, [], {}, [], fingerprint=data.fingerprint)
    jobs = [("original", "original", exp)]
    jobs += [(f"retrain-{i}", "retrain", replace(exp, train=replace(exp.train, seed=seed)))
             for i, seed in enumerate(retrain_seeds(exp))]
    missing = [role for _, role, model_exp in jobs
               if not (role == "original" and original_checkpoint) and not cache.path_of(model_exp, data, role).exists()]
    if missing and allow_training:  # said when the first one starts (a bad --original is refused first)
        cache.untrained = len(missing)
        cache.announce = (f"{len(missing)} of {len(jobs)} models to train for {exp.name} ({exp.forget.describe()}, "
                          f"train seed {exp.train.seed}); the rest come from the cache")
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
