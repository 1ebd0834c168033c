"""The three ensembles the per-example evaluation compares, each model's outputs cached.

- original models: the experiment's recipe on all of D with training seeds train.seed + i
  (i = 0 is the run's original model, the one every method unlearns from);
- retrained models: the recipe on D_r with the same seeds, i.e. the references' retrained
  ensemble grown to N (the first `retrained_models` are the references' own);
- unlearned models: one method and configuration run with method seeds 0..N-1, all from the
  original model and on the experiment's one forget set (as in the competition, only the
  unlearning's randomness varies).

Original and retrained weights live in the reference cache (references.py: same keys, so
growing N trains only the new ones). For every model the evaluation needs only its outputs,
cached beside them as `<experiment>/outputs-<key>.pt`: the logit-scaled confidence of each
forget example's true class and the retain and test accuracy (%). The key holds what the
outputs depend on: the model (the reference entry's name and creation time; for an unlearned
model the original's, the method, its hyperparameters and seed, and the recipe its context
carries), the forget set and the data, so a rerun neither unlearns nor predicts again.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..pipeline import Prepared, unlearn
from ..files import atomic_write
from ..evaluation.references import ReferenceCache, digest, forget_key
from ..run_config import ResolvedRun
from ..training import Diverged, predict
from ..evaluation.per_example.quality import logit_confidence

OUTPUTS_FORMAT = 1


@dataclass
class Ensemble:
    """N models' outputs on one forget set."""

    name: str
    confs: list[np.ndarray] = field(default_factory=list)  # per model: [forget examples]
    retain_acc: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    new: int = 0  # models trained (or unlearned) in this call
    failed: list[str] = field(default_factory=list)  # why a model could not be made (divergence)
    seconds: float = 0.0

    def matrix(self) -> np.ndarray:
        return np.stack(self.confs)

    def add(self, outputs: dict) -> None:
        self.confs.append(outputs["conf"].numpy().astype(np.float64))
        self.retain_acc.append(float(outputs["retain_acc"]))
        self.test_acc.append(float(outputs["test_acc"]))


def model_outputs(prepared: Prepared, model: torch.nn.Module) -> dict:
    """Forget-set confidences and retain and test accuracy (%) of `model`."""
    data, runtime, batch = prepared.data, prepared.runtime, prepared.experiment.eval.batch_size
    logits, labels = predict(model, data.forget, runtime, batch)
    out = {"conf": logit_confidence(logits, labels).cpu().float()}
    for name, part in (("retain_acc", data.retain), ("test_acc", data.heldout("test")[0])):
        logits, labels = predict(model, part, runtime, batch)
        out[name] = 100.0 * float((logits.argmax(1) == labels).float().mean())
    return out


class OutputCache:
    def __init__(self, root: str | Path, prepared: Prepared, log: Callable[[str], None]):
        self.root = Path(root).expanduser().resolve()
        self.prepared = prepared
        self.log = log

    def path(self, model: dict) -> Path:
        exp, data = self.prepared.experiment, self.prepared.data
        key = digest({"format": OUTPUTS_FORMAT, "model": model, "forget": forget_key(exp.forget), "data": data.fingerprint,
                      "heldout": [exp.dataset.val_fraction, exp.dataset.val_seed]})
        return self.root / exp.name / f"outputs-{key}.pt"

    def load(self, path: Path) -> dict | None:
        if not path.exists():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            if "diverged" not in entry and len(entry["conf"]) != len(self.prepared.data.forget):
                raise ValueError("its forget set differs from the experiment's")
            return entry
        except Exception as exc:  # noqa: BLE001 - any unreadable entry is recomputed
            self.log(f"cache entry {path} is unusable ({type(exc).__name__}: {str(exc)[:120]}); recomputing it")
            return None

    def save(self, path: Path, entry: dict) -> None:
        atomic_write(path, lambda tmp: torch.save(entry, tmp))


def seeded(prepared: Prepared, i: int):
    """The experiment with training seed train.seed + i: the i-th original or retrained model."""
    exp = prepared.experiment
    return replace(exp, train=replace(exp.train, seed=exp.train.seed + i))


def reference_ensemble(prepared: Prepared, cache_dir: str | Path, role: str, n: int,
                       log: Callable[[str], None]) -> tuple[Ensemble, list[str]]:
    """N original ("original") or retrained ("retrain") models' outputs, training the missing
    ones; and each model's id."""
    started = time.perf_counter()
    models = ReferenceCache(cache_dir, log)
    outputs = OutputCache(cache_dir, prepared, log)
    ensemble, ids = Ensemble(role), []
    for i in range(n):
        state, meta, status, path = models.model(seeded(prepared, i), prepared.data, prepared.runtime, role, True)
        model_id = f"{path.name}@{meta.get('created')}"  # a rebuilt entry is a new model
        ids.append(model_id)
        where = outputs.path({"reference": model_id})
        entry = outputs.load(where)
        if entry is None:
            entry = model_outputs(prepared, prepared.model(state))
            outputs.save(where, entry)
        ensemble.new += status == "trained"
        ensemble.add(entry)
    ensemble.seconds = time.perf_counter() - started
    return ensemble, ids


def unlearned_ensemble(prepared: Prepared, cache_dir: str | Path, run: ResolvedRun, name: str, n: int,
                       original_id: str, log: Callable[[str], None]) -> Ensemble:
    """N unlearned models' outputs: `run`'s method and hyperparameters with seeds 0..N-1 from
    the original model `original_id`; a diverged seed is recorded (and cached) as a failure."""
    started = time.perf_counter()
    exp = prepared.experiment
    outputs = OutputCache(cache_dir, prepared, log)
    ensemble = Ensemble(name)
    for seed in range(n):
        where = outputs.path({"original": original_id, "method": run.method.name, "hparams": run.hparams, "seed": seed,
                              "train": asdict(exp.train), "eval": asdict(exp.eval)})
        entry = outputs.load(where)
        if entry is None:
            try:
                model = prepared.model()
                unlearn(prepared, run.method, run.hparams, seed, model)
                entry = model_outputs(prepared, model)
            except Diverged as exc:
                entry = {"diverged": str(exc)}
            outputs.save(where, entry)
            ensemble.new += 1
        if "diverged" in entry:
            ensemble.failed.append(f"seed {seed}: {entry['diverged']}")
        else:
            ensemble.add(entry)
    ensemble.seconds = time.perf_counter() - started
    return ensemble
