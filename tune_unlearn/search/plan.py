"""A search's plan, validated before Ray starts: the space, the experiment, the weights, the
sampler and the resources (make_plan), or the plan of an interrupted search to resume
(existing_run, Plan.from_json). search.json holds it."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..config import from_mapping, to_plain
from ..errors import UserError
from ..data.experiment import Experiment
from ..data.requests import (Request, base_request, check_requests, default_holdout, parse_requests,
                             request_experiments)
from ..files import default_cache_dir
from ..methods import get_method
from ..evaluation.objective import COMPONENT_MODES, Weights, component_names
from ..run_config import resolve_run
from .results import MLFLOW_FILE, SEARCH_FILE
from .options import SearchOptions
from .storage import RunStore
from .space import ParamSpec, SearchSpace, load_space, method_space


@dataclass
class Plan:
    """Everything a search needs, validated. search.json holds it for resume and export."""

    space: SearchSpace
    experiment: Experiment
    weights: Weights
    num_samples: int
    seed: int
    scheduler: str
    multi_objective: bool
    cache_dir: str
    original: str | None
    cpus_per_trial: float
    gpus_per_trial: float | None  # None: decided once Ray knows whether there are GPUs
    run_dir: Path
    leakage: bool = False  # the Piggyback relearning attack in every report (on when weights.leak > 0)
    sampler: str = "tpe"  # the Optuna sampler (SAMPLERS)
    mlflow: str | None = None  # MLflow tracking URI (--mlflow), None: no MLflow
    # Evaluate and report after every evaluated epoch of the method: only where something reads
    # those reports (ASHA, or --report-every-epoch for the curves); otherwise one report per trial.
    report_every_epoch: bool = False
    # The forget requests tuned on (at least one) and held out (data/requests.py), how their
    # objectives make one, and how many of the best configurations run on the held-out ones.
    requests: list[Request] = field(default_factory=list)
    holdout: list[Request] = field(default_factory=list)
    aggregate: str = "mean"
    holdout_top: int = 3
    # The best configurations run again with unlearning seeds 1..reseeds-1 before the export,
    # and the best is chosen on the mean (reseed.py); 1: on the trials' own single runs.
    reseeds: int = 1
    reseed_top: int = 3
    optuna_storage: str | None = None  # the study's database (--optuna-storage); None: optuna.db in the run

    def tuning_experiments(self) -> list[tuple[str, Experiment]]:
        """(label, experiment) of every request the search tunes on."""
        return request_experiments(self.experiment, self.requests or [base_request(self.experiment)])

    def holdout_experiments(self) -> list[tuple[str, Experiment]]:
        return request_experiments(self.experiment, self.holdout)

    @property
    def study_name(self) -> str:
        """The Optuna study's name in optuna.db: the run's name."""
        return self.run_dir.name

    @property
    def method(self) -> str:
        return self.space.method

    def objectives(self) -> tuple[list[str], list[str]]:
        """The metric(s) Optuna optimises and their modes."""
        if not self.multi_objective:
            return ["objective"], ["max"]
        measures = [*self.experiment.forget.measures(), *(["pl_forget_acc"] if self.leakage else [])]
        names = component_names(measures)
        return names, [COMPONENT_MODES[c] for c in names]  # every component is minimised

    def to_json(self) -> dict:
        return {
            "space": self.space.name, "method": self.method, "experiment": self.experiment.name,
            "experiment_config": to_plain(self.experiment), "experiment_overrides": self.space.experiment_overrides,
            "params": {k: to_plain(v) for k, v in self.space.params.items()}, "fixed": self.space.fixed,
            "weights": asdict(self.weights), "num_samples": self.num_samples, "seed": self.seed,
            "scheduler": self.scheduler, "multi_objective": self.multi_objective,
            "objectives": dict(zip(*self.objectives())), "cache_dir": self.cache_dir, "original": self.original,
            "cpus_per_trial": self.cpus_per_trial, "gpus_per_trial": self.gpus_per_trial, "leakage": self.leakage,
            "sampler": self.sampler, "study_name": self.study_name, "mlflow": self.mlflow,
            "report_every_epoch": self.report_every_epoch,
            "requests": [{"label": r.label, "overrides": dict(r.overrides)} for r in self.requests],
            "holdout": [{"label": r.label, "overrides": dict(r.overrides)} for r in self.holdout],
            "aggregate": self.aggregate, "holdout_top": self.holdout_top, "reseeds": self.reseeds,
            "reseed_top": self.reseed_top, "optuna_storage": self.optuna_storage,
        }

    @classmethod
    def from_json(cls, saved: dict, run_dir: Path) -> "Plan":
        weights = Weights().updated(saved["weights"], f"{run_dir / SEARCH_FILE} (made by an older version: start a new search)")
        params = {k: ParamSpec(v["type"], v["low"], v["high"], tuple(v["values"])) for k, v in saved["params"].items()}
        space = SearchSpace(saved["space"], saved["method"], saved["experiment"], "", saved["experiment_overrides"],
                            saved["num_samples"], weights, params, saved["fixed"])
        exp = from_mapping(Experiment, saved["experiment_config"], f"{run_dir / SEARCH_FILE}: experiment_config")
        def requests(key: str) -> list[Request]:  # searches before requests existed: the experiment's own, none held out
            return [Request(tuple(r["overrides"].items())) for r in saved.get(key, [])]

        return cls(space, exp, weights, saved["num_samples"], saved["seed"], saved["scheduler"],
                   saved["multi_objective"], saved["cache_dir"], saved["original"], saved["cpus_per_trial"],
                   saved["gpus_per_trial"], run_dir, saved.get("leakage", False), saved.get("sampler", "tpe"),
                   saved.get("mlflow"), saved.get("report_every_epoch", True),  # older searches reported every epoch
                   requests("requests"), requests("holdout"), saved.get("aggregate", "mean"), saved.get("holdout_top", 3),
                   saved.get("reseeds", 1), saved.get("reseed_top", 3),  # older searches: chosen on one run
                   saved.get("optuna_storage"))


def choose_space(options: SearchOptions) -> SearchSpace:
    if options.method:
        get_method(options.method)  # an unknown name is the first thing to say
    if options.space:
        space = load_space(options.space)
        if options.method and options.method != space.method:
            raise UserError(f"space {space.name!r} is for method {space.method!r}, not {options.method!r}; "
                            f"drop --space to search {options.method!r} in its own space")
        return space
    return method_space(options.method) if options.method else load_space("default")


def choose_sampler(name: str | None, multi_objective: bool) -> str:
    """The sampler to use, or a UserError where it cannot do what is asked.

    Default: TPE for one objective and for several. Optuna's documentation recommends Bayesian
    optimisation (TPESampler or GPSampler) over the genetic NSGA samplers below ~1000 trials
    (NSGAIIISampler's notes), and TPESampler (much faster since Optuna 4.0) also handles the
    categorical parameters of these spaces by their own distance, which NSGA-II does not
    (NSGAIISampler's notes); a search here runs tens of trials, fewer than NSGA-II's default
    population of 50, so NSGA-II would sample at random throughout.

    NSGA-II/III are refused for one objective: Optuna allows them, but with one objective a
    genetic algorithm whose first generation (50 trials) is random sampling is at best random
    search for these budgets; `--sampler random` says so honestly. GPSampler in Optuna 5
    handles several objectives and categorical parameters, so nothing is refused for it.
    """
    name = name or "tpe"
    if name in ("nsga2", "nsga3") and not multi_objective:
        raise UserError(f"--sampler {name} is a multi-objective genetic algorithm (its first 50 trials are random); "
                        "add --multi-objective, or use --sampler tpe, gp or random for one objective")
    return name


def make_plan(options: SearchOptions) -> Plan:
    space = choose_space(options)
    overrides = {**space.experiment_overrides, **options.experiment_overrides}
    run = resolve_run(space.method, options.experiment or space.experiment, overrides, space.fixed)
    run = replace(run, experiment=absolute_root(run.experiment))
    if options.scheduler == "asha" and options.multi_objective:
        raise UserError("--scheduler asha cannot be used with --multi-objective: ASHA stops trials on one metric, and "
                        "Ray documents that ASHA-type schedulers may not work correctly with several; use --scheduler fifo")
    if options.report_every_epoch and run.method.epochs_hparam is None:
        raise UserError(f"--report-every-epoch: method {space.method!r} reports no per-epoch states")
    if options.scheduler == "asha" and run.method.epochs_hparam is None:
        raise UserError(f"method {space.method!r} reports no per-epoch states, so ASHA has nothing to stop "
                        "early; use --scheduler fifo")
    if options.scheduler == "asha" and (why := run.method.early_stopping_refusal(run.hparams, set(space.params))):
        raise UserError(f"--scheduler asha: {why}")
    tuning, holdout = choose_requests(options, space, run.experiment)
    space = SearchSpace(space.name, space.method, run.experiment.name, space.description, overrides,
                        space.num_samples, space.weights, space.params, space.fixed, space.requests, space.holdout,
                        space.aggregate, space.holdout_top)
    name = options.name or f"{space.name}-{run.experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = RunStore.of(options.storage_path).local / name
    weights = space.weights.updated(dict(options.weights), "--weight")
    return Plan(space, run.experiment, weights, options.num_samples or space.num_samples,
                options.seed, options.scheduler, options.multi_objective,
                str(Path(options.cache_dir).expanduser().resolve()) if options.cache_dir else str(default_cache_dir()),
                str(Path(options.original).resolve()) if options.original else None,
                options.cpus_per_trial, options.gpus_per_trial, run_dir, options.leakage or weights.leak > 0,
                choose_sampler(options.sampler, options.multi_objective),
                None if options.mlflow is None else options.mlflow or f"sqlite:///{run_dir / MLFLOW_FILE}",
                options.report_every_epoch or options.scheduler == "asha", tuning, holdout,
                options.aggregate or space.aggregate, options.holdout_top or space.holdout_top, options.reseeds,
                options.reseed_top, options.optuna_storage)


def absolute_root(exp: Experiment) -> Experiment:
    """The experiment with its data set's folder as an absolute path of the driver's: trials run
    in a working directory of their own, on any node."""
    if exp.dataset.root is None or Path(exp.dataset.root).is_absolute():
        return exp
    return replace(exp, dataset=replace(exp.dataset, root=str(Path(exp.dataset.root).expanduser().resolve())))


def choose_requests(options: SearchOptions, space: SearchSpace, exp: Experiment) -> tuple[list[Request], list[Request]]:
    """The requests tuned on (--requests, else the space's, else the experiment's own) and held
    out (--holdout, `none` for none; else the space's; else default_holdout), all checked. A
    space's requests count only on the space's own experiment."""
    # A space's requests are forget sets of its own experiment (forget seeds mean nothing where
    # whole classes are forgotten): with another --experiment they give way to the defaults.
    own = options.experiment is None or options.experiment == space.experiment
    if options.requests:
        tuning = parse_requests(list(options.requests), "--requests")
    else:
        tuning = (list(space.requests) if own else []) or [base_request(exp)]
    if options.holdout is not None:
        holdout = [] if tuple(options.holdout) in ((), ("none",)) else parse_requests(list(options.holdout), "--holdout")
    elif space.holdout is not None and own:
        holdout = list(space.holdout)
    else:
        holdout = default_holdout(tuning, exp)
        if options.original:  # the other original model of the default is not there to test
            holdout = [r for r in holdout if "train.seed" not in dict(r.overrides)]
    if options.original:
        other = next((r for r in tuning + holdout if "train.seed" in dict(r.overrides)), None)
        if other is not None:
            raise UserError(f"request {other.label} asks for another original model (train_seed), but --original fixes "
                            "the original model; drop train_seed from the requests")
    check_requests(tuning, holdout, exp)
    return tuning, holdout


def existing_run(options: SearchOptions, store: RunStore) -> Path | None:
    """The run directory to resume, brought from the store where the run lives elsewhere:
    --name's if it holds a search, the latest with a bare --resume; None for a new search."""
    if options.name:
        name = options.name
    elif options.resume:
        name = store.latest()
        if name is None:
            raise UserError(f"--resume: no search to resume in {store.uri or store.local}")
    else:
        return None
    if not store.download(name):
        if options.resume:
            raise UserError(f"--resume: there is no search at {store.where(name)}")
        return None
    return store.local / name
