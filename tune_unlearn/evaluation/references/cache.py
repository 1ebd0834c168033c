"""The reference cache: keys, entries written atomically and read back checked, the models'
evaluations and confidences, and the device's cost prices (layout: references/__init__.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ...cost import CostModel, calibrate, calibration_key, dumps, torch_threads
from ...data.experiment import Experiment, ForgetSpec
from ...data.load import ExperimentData
from ...files import atomic_write, atomic_write_text, log_stderr
from ...network.stages import load_state_checked, read_checkpoint
from ...runtime import Runtime
from ..example_gap import forget_confidences
from ..metrics import evaluate
from .training import Forecast, loaded, network, train_reference

CACHE_FORMAT = 4  # 4: entries record their training's layer calls and steps beside its MACs (cost.py)
CONFIDENCE_VERSION = 1  # bump when forget_confidences changes meaning
METRICS_VERSION = 4  # bump when evaluate changes meaning (2: per split; 3: kit attack test size, probe target;
#                      4: the member-rate attack on the loss alone; the probe's one-class forget sets)


class NotCached(RuntimeError):
    """A reference model is missing from the cache where nothing may train it (a trial)."""


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


class ReferenceCache:
    def __init__(self, root: str | Path, log: Callable[[str], None] = log_stderr):
        self.root = Path(root).expanduser().resolve()
        self.log = log
        self.forecast = Forecast()  # what the current preparation will train

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
        state, meta = train_reference(exp, data, runtime, role, self.log, self.forecast)
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
