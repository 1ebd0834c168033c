"""One unlearning run from the cached references to the objective: the loop every entry point
(`run`, the Tune trainable, `compare`) shares. It owns timing, evaluation and reporting;
methods only change the model.

    prepared = prepare(experiment, runtime, cache_dir)          # data + cached references
    result = run_method(prepared, "selective", hparams, weights) # unlearn, time, evaluate
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch import nn

from .data.load import ExperimentData, load_data
from .errors import UserError
from .data.experiment import Experiment
from .methods import get_method
from .methods.base import Context, Method, UnlearnData
from .evaluation.example_gap import ExampleReference, forget_confidences
from .evaluation.metrics import SPLITS, evaluate
from .evaluation.objective import Weights, score
from .progress_bar import Progress
from .files import log_stderr
from .evaluation.references import References, empty_network, network, prepare_references
from .runtime import Runtime, Stopwatch, seed_everything


@dataclass
class Prepared:
    experiment: Experiment
    data: ExperimentData
    runtime: Runtime
    refs: References
    _template: nn.Module | None = field(default=None, repr=False)
    _examples: ExampleReference | None = field(default=None, repr=False)

    def examples(self) -> ExampleReference:
        """The retrained models' confidence on each forget sample (fitted once)."""
        if self._examples is None:
            self._examples = self.refs.examples()
        return self._examples

    def model(self, state: dict | None = None) -> nn.Module:
        """A model of the experiment on the device, holding `state` (default: the original).
        Copies one template instead of constructing a network per call (every trial makes one)."""
        if self._template is None:
            self._template = empty_network(self.experiment, self.data, self.runtime)
        model = copy.deepcopy(self._template)
        model.load_state_dict(self.refs.original_state if state is None else state)
        return model


def prepare(exp: Experiment, runtime: Runtime, cache_dir: str | Path, original_checkpoint: str | None = None,
            download: bool = False, allow_training: bool = True, log: Callable[[str], None] = log_stderr,
            leakage: bool = False, threads: int | None = None) -> Prepared:
    """Data on the device and the cached references, with their leakage (`pl_forget_acc`)
    measured too when `leakage`, and costs priced for unlearning on `threads` threads (None:
    this process's)."""
    data = load_data(exp, runtime.device, download)
    refs = prepare_references(exp, data, runtime, cache_dir, original_checkpoint, allow_training, log, leakage,
                              threads)
    return Prepared(exp, data, runtime, refs)


def prepare_with(exp: Experiment, runtime: Runtime, refs: References) -> Prepared:
    """Data on the device from this machine's disk, with references made elsewhere (a search's
    trials and held-out runs get them from the driver, on any node of a cluster); a UserError
    when this machine's copy of the data set is not the one they were made on."""
    data = load_data(exp, runtime.device)
    if data.fingerprint != refs.fingerprint:
        raise UserError(f"the data set here ({data.fingerprint}) is not the one the references were made on "
                        f"({refs.fingerprint})")
    return Prepared(exp, data, runtime, refs)


@dataclass
class EpochReport:
    """A model state evaluated during a run (after each fine-tuning epoch, say)."""

    phase: str
    epoch: int  # from 1
    logs: dict
    metrics: dict
    components: dict
    objective: float


@dataclass
class RunResult:
    """One run, measured on the validation split (`metrics`, what a search optimises) and on
    the test split (`test_metrics`, final numbers), each scored against the retrained
    ensemble on the same split (`reference`, `reference_test`). `original` and
    `original_test` are the original model scored as an unlearning that does nothing."""

    method: str
    experiment: str
    hparams: dict
    metrics: dict
    reference: dict
    original: dict
    objective: float
    components: dict
    test_metrics: dict
    reference_test: dict
    original_test: dict
    test_objective: float
    test_components: dict
    stats: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    device: str = ""
    model: nn.Module | None = None

    def to_json(self) -> dict:
        return {
            "method": self.method, "experiment": self.experiment, "hparams": self.hparams,
            "metrics": self.metrics, "reference": self.reference, "original": self.original,
            "objective": self.objective, "components": self.components,
            "test_metrics": self.test_metrics, "reference_test": self.reference_test,
            "original_test": self.original_test, "test_objective": self.test_objective,
            "test_components": self.test_components,
            "stats": self.stats, "history": self.history, "device": self.device,
        }


def run_method(prepared: Prepared, method: str | Method, hparams: dict, weights: Weights | None = None,
               seed: int = 0, on_report: Callable[[EpochReport], None] | None = None,
               leakage: bool = False) -> RunResult:
    """Unlearn from the original model with `method` (hyperparameters already resolved), time
    and count its cost, evaluate it on the validation and the test split, and score each
    against the retrained ensemble.

    `on_report`, if given, receives every state the method marks as worth evaluating, measured
    on the validation split only (the unlearning clock and cost meter are paused meanwhile, so
    evaluation never counts as unlearning). `leakage` adds the Piggyback relearning attack
    (`pl_forget_acc`) to every evaluation; the references must have been prepared with it."""
    method = get_method(method) if isinstance(method, str) else method
    weights = weights or Weights()
    exp, data, runtime, refs = prepared.experiment, prepared.data, prepared.runtime, prepared.refs
    model = prepared.model()
    clock = Stopwatch(runtime)
    prices = refs.prices()
    history: list[dict] = []
    reference = {split: refs.reference(split) for split in SPLITS}

    if leakage and "pl_forget_acc" not in reference["val"]:
        raise ValueError("leakage asked for, but the references were prepared without it")

    def measure(full_retain: bool, splits: tuple[str, ...]) -> tuple[dict, float]:
        """split -> metrics, and the per-example gap (the forget set is the same on every split)."""
        out = evaluate(model, data, runtime, exp.eval.batch_size, exp.eval.mia_seed, full_retain=full_retain,
                       leakage=exp.leakage if leakage else None, splits=splits)
        for metrics in out.values():
            metrics.update(time_s=clock.elapsed, **prices.priced(clock.counts()))
        example = prepared.examples().gap(forget_confidences(model, data.forget, runtime, exp.eval.batch_size))
        return out, example

    def epoch_end(phase: str, epoch: int, logs: dict, worth_evaluating: bool) -> None:
        history.append({"phase": phase, "epoch": epoch + 1, "time_s": clock.elapsed, **prices.priced(clock.counts()),
                        **logs})
        loss = logs.get("loss")
        bar.update(text=f"{phase} {epoch + 1}" + (f", loss {loss:.4f}" if isinstance(loss, float) else ""))
        if not (worth_evaluating and on_report):
            return
        with clock.paused():
            was_training = model.training
            measured, example = measure(full_retain=False, splits=("val",))
            metrics = measured["val"]
            comps, value = score(metrics, reference["val"], weights, example)
            on_report(EpochReport(phase, epoch + 1, logs, metrics, comps, value))
            model.train(was_training)

    # The method's epochs (a bar on a terminal; in Ray workers and logs a line at most every 30 s)
    bar = Progress(f"{method.name} (seed {seed})", None, "epoch", leave=False)
    clock.start()
    try:
        stats = unlearn(prepared, method, hparams, seed, model, epoch_end)
    finally:
        clock.stop()
        bar.close()
    final, example = measure(full_retain=True, splits=SPLITS)
    comps, value = score(final["val"], reference["val"], weights, example)
    test_comps, test_value = score(final["test"], reference["test"], weights, example)
    return RunResult(method.name, exp.name, dict(hparams), final["val"], reference["val"], refs.baseline("val"),
                     value, comps, final["test"], reference["test"], refs.baseline("test"), test_value, test_comps,
                     stats, history, runtime.describe(), model)


def unlearn(prepared: Prepared, method: str | Method, hparams: dict, seed: int, model: nn.Module,
            epoch_end: Callable[[str, int, dict, bool], None] | None = None) -> dict:
    """`method` unlearns `model` (a copy of the original, prepared.model()) in place with the
    resolved `hparams`, seeded with `seed`; returns the method's stats. The unlearning alone:
    run_method times, counts and evaluates it, and a per-example ensemble, which needs only the
    model's outputs, skips that evaluation of every split."""
    method = get_method(method) if isinstance(method, str) else method
    exp, data, runtime = prepared.experiment, prepared.data, prepared.runtime

    def new_model() -> nn.Module:
        return runtime.prepare(network(exp, data))

    ctx = Context(runtime, exp.train.batch_size, exp.eval.batch_size, exp.train, new_model,
                  epoch_end or (lambda *args: None))
    view = UnlearnData(data.retain, data.forget, data.train, data.num_classes)
    seed_everything(seed)
    return method.unlearn(model, view, dict(hparams), ctx) or {}
