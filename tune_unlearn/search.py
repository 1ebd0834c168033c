"""Hyperparameter search with Ray Tune and an Optuna sampler (TPE by default).

    python -m tune_unlearn.search --space default
    python -m tune_unlearn.search --space default --experiment fmnist --num-samples 32
    python -m tune_unlearn.search --method selective --multi-objective --scheduler asha
    python -m tune_unlearn.search --name my-search --resume
    python -m tune_unlearn.search --space default --sampler gp --mlflow

Validates the space, the experiment and every fixed value before Ray starts; trains (once,
cached) the original and retrained references in a Ray task before any trial starts, so
concurrent trials never race; runs the trials (several per GPU by default); then writes
results.csv and best_config.yaml (and pareto.csv with --multi-objective) under runs/<name>/
and prints the best trials beside the retrained reference. The Optuna study is kept in
runs/<name>/optuna.db (optuna-dashboard, optuna.load_study; a resume continues it); --mlflow
logs every trial to MLflow as well.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .cli import add_experiment_args, experiment_overrides, main_guard, parse_weights, prog
from .config import from_mapping, to_plain
from .errors import UserError
from .experiment import Experiment
from .export import MLFLOW_FILE, SEARCH_FILE
from .methods import get_method
from .objective import COMPONENT_MODES, Weights, component_names
from .files import atomic_write_text, default_cache_dir
from .run_config import resolve_run
from .search_space import ParamSpec, SearchSpace, load_space, method_space

# Save Tune's experiment state (trials, searcher history) at least this often (seconds), so a
# killed driver loses little bookkeeping; finished trials are never re-run in any case.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's classic status table: one line per trial


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
        }

    @classmethod
    def from_json(cls, saved: dict, run_dir: Path) -> "Plan":
        weights = Weights().updated(saved["weights"], f"{run_dir / SEARCH_FILE} (made by an older version: start a new search)")
        params = {k: ParamSpec(v["type"], v["low"], v["high"], tuple(v["values"])) for k, v in saved["params"].items()}
        space = SearchSpace(saved["space"], saved["method"], saved["experiment"], "", saved["experiment_overrides"],
                            saved["num_samples"], weights, params, saved["fixed"])
        exp = from_mapping(Experiment, saved["experiment_config"], f"{run_dir / SEARCH_FILE}: experiment_config")
        return cls(space, exp, weights, saved["num_samples"], saved["seed"], saved["scheduler"],
                   saved["multi_objective"], saved["cache_dir"], saved["original"], saved["cpus_per_trial"],
                   saved["gpus_per_trial"], run_dir, saved.get("leakage", False), saved.get("sampler", "tpe"),
                   saved.get("mlflow"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog("search"), description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", help="search space: a name in search_spaces/ or a YAML path "
                                   "(default: 'default', or the --method's own space)")
    p.add_argument("--method", help="search this registered method (its own space unless --space is given)")
    p.add_argument("--num-samples", type=int, help="number of trials (default: the space's num_samples)")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: as many as the resources allow)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (default: 1)")
    p.add_argument("--gpus-per-trial", type=float,
                   help="GPU share per trial, e.g. 0.25 = four trials per GPU (default: 0.25 with GPUs, else 0)")
    p.add_argument("--scheduler", choices=["fifo", "asha"], default="fifo",
                   help="fifo runs every trial to the end; asha stops weak trials early over evaluated epochs")
    p.add_argument("--multi-objective", action="store_true",
                   help="Optuna optimises the objective's components (a Pareto front) instead of their weighted sum")
    p.add_argument("--sampler", choices=SAMPLERS,
                   help="Optuna sampler: tpe (default), nsga2 or nsga3 (genetic, --multi-objective only), gp (Gaussian "
                        "process) or random")
    p.add_argument("--seed", type=int, default=0, help="seed of the Optuna sampler (default: 0)")
    p.add_argument("--weight", action="append", default=[], metavar="NAME=VALUE", help="override an objective weight")
    p.add_argument("--leakage", action="store_true",
                   help="measure leakage (pl_forget_acc, leak_gap) in every trial; on by itself when the leak weight > 0")
    p.add_argument("--storage-path", default="runs", help="where runs live (default: ./runs; shared storage on a cluster)")
    p.add_argument("--name", help="run name (default: <space>-<experiment>-<time>); an existing run of that name resumes")
    p.add_argument("--resume", action="store_true", help="continue the interrupted search --name (default: the latest)")
    p.add_argument("--address", help="join a running Ray cluster ('auto', or the head's host:port)")
    p.add_argument("--dashboard", action="store_true", help="start the Ray dashboard (needs the 'dashboard' extra)")
    p.add_argument("--mlflow", nargs="?", const="", metavar="TRACKING_URI",
                   help="log every trial to MLflow (needs the 'mlflow' extra); without a URI, a store in the run "
                        "directory (sqlite:///<run_dir>/mlflow.db)")
    p.add_argument("--top", type=int, default=5, help="rows of the final table (default: 5)")
    add_experiment_args(p, default_experiment=None)
    return p


def choose_space(args: argparse.Namespace) -> SearchSpace:
    if args.method:
        get_method(args.method)  # an unknown name is the first thing to say
    if args.space:
        space = load_space(args.space)
        if args.method and args.method != space.method:
            raise UserError(f"space {space.name!r} is for method {space.method!r}, not {args.method!r}; "
                            f"drop --space to search {args.method!r} in its own space")
        return space
    return method_space(args.method) if args.method else load_space("default")


# Optuna's samplers a search may use (study.make_sampler builds them).
SAMPLERS = ("tpe", "nsga2", "nsga3", "gp", "random")


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


def check_resources(args: argparse.Namespace) -> None:
    if args.num_samples is not None and args.num_samples < 1:
        raise UserError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.gpus_per_trial is not None and args.gpus_per_trial < 0:
        raise UserError(f"--gpus-per-trial must be >= 0, got {args.gpus_per_trial}")
    if args.gpus_per_trial is not None and args.gpus_per_trial > 1 and args.gpus_per_trial != int(args.gpus_per_trial):
        raise UserError(f"--gpus-per-trial above 1 must be a whole number, got {args.gpus_per_trial}")
    if args.cpus_per_trial <= 0:
        raise UserError(f"--cpus-per-trial must be > 0, got {args.cpus_per_trial}")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise UserError(f"--max-concurrent must be >= 1, got {args.max_concurrent}")
    if args.top < 1:
        raise UserError(f"--top must be >= 1, got {args.top}")
    if args.mlflow is not None:
        import importlib.util

        if importlib.util.find_spec("mlflow") is None:
            raise UserError("--mlflow needs the mlflow extra: pip install -e '.[mlflow]'")


def make_plan(args: argparse.Namespace) -> Plan:
    space = choose_space(args)
    overrides = {**space.experiment_overrides, **experiment_overrides(args)}
    run = resolve_run(space.method, args.experiment or space.experiment, overrides, space.fixed)
    if args.scheduler == "asha" and args.multi_objective:
        raise UserError("--scheduler asha cannot be used with --multi-objective: ASHA stops trials on one metric, and "
                        "Ray documents that ASHA-type schedulers may not work correctly with several; use --scheduler fifo")
    if args.scheduler == "asha" and run.method.epochs_hparam is None:
        raise UserError(f"method {space.method!r} reports no per-epoch states, so ASHA has nothing to stop "
                        "early; use --scheduler fifo")
    space = SearchSpace(space.name, space.method, run.experiment.name, space.description, overrides,
                        space.num_samples, space.weights, space.params, space.fixed)
    name = args.name or f"{space.name}-{run.experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(args.storage_path).expanduser().resolve() / name
    weights = parse_weights(args.weight, space.weights)
    return Plan(space, run.experiment, weights, args.num_samples or space.num_samples,
                args.seed, args.scheduler, args.multi_objective,
                str(Path(args.cache_dir).expanduser().resolve()) if args.cache_dir else str(default_cache_dir()),
                str(Path(args.original).resolve()) if args.original else None,
                args.cpus_per_trial, args.gpus_per_trial, run_dir, args.leakage or weights.leak > 0,
                choose_sampler(args.sampler, args.multi_objective),
                None if args.mlflow is None else args.mlflow or f"sqlite:///{run_dir / MLFLOW_FILE}")


def existing_run(args: argparse.Namespace) -> Path | None:
    """The run directory to resume: --name's if it holds a search, the latest with a bare
    --resume; None for a new search."""
    storage = Path(args.storage_path).expanduser().resolve()
    if args.name:
        run_dir = storage / args.name
    elif args.resume:
        candidates = sorted(storage.glob(f"*/{SEARCH_FILE}"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise UserError(f"--resume: no search to resume in {storage}")
        run_dir = candidates[-1].parent
    else:
        return None
    if not (run_dir / SEARCH_FILE).is_file():
        if args.resume:
            raise UserError(f"--resume: there is no search at {run_dir}")
        return None
    return run_dir


def start_ray(args: argparse.Namespace) -> dict:
    import ray

    if args.dashboard:
        import importlib.util

        if importlib.util.find_spec("aiohttp") is None or importlib.util.find_spec("ray.dashboard") is None:
            raise UserError("--dashboard needs the dashboard extra: pip install -e '.[dashboard]'")
    kwargs = {"logging_level": logging.WARNING, "log_to_driver": True, "ignore_reinit_error": True}
    if args.address:
        # Ship this package to the cluster's workers, so every node runs the driver's code.
        import tune_unlearn

        kwargs["runtime_env"] = {"py_modules": [str(Path(tune_unlearn.__file__).parent)]}
    else:  # a running cluster was started with its own dashboard settings
        kwargs["include_dashboard"] = args.dashboard
        if args.dashboard:
            kwargs["dashboard_host"] = "127.0.0.1"
    context = ray.init(address=args.address, **kwargs)
    info = {"resources": ray.cluster_resources(), "dashboard": getattr(context, "dashboard_url", None)}
    if args.dashboard and info["dashboard"]:
        print(f"Ray dashboard: http://{info['dashboard']}  (if it asks for a token: ray get-auth-token)", flush=True)
    return info


def prepare_references(plan: Plan, resources: dict, download: bool) -> dict:
    """Train or load the references in a Ray task (on a GPU when the cluster has one) that exits
    afterwards, so its memory is free before the trials start. Returns them scored like trials
    (References.scored) with where they came from."""
    import ray

    from .pipeline import prepare
    from .runtime import limit_threads, make_runtime

    gpus = 1 if resources.get("GPU", 0) >= 1 else 0
    cpus = max(1, min(int(resources.get("CPU", 1)), 8))

    @ray.remote(num_cpus=cpus, num_gpus=gpus, max_calls=1)
    def prepare_task(exp, cache_dir, original, download, leakage, weights):
        limit_threads(cpus)
        runtime = make_runtime("auto")
        prepared = prepare(exp, runtime, cache_dir, original, download, leakage=leakage)
        refs, data = prepared.refs, prepared.data
        return {"baselines": refs.scored(weights), "status": refs.status, "paths": refs.paths,
                "device": runtime.describe(),
                "sizes": {"train": len(data.train), "retain": len(data.retain), "forget": len(data.forget),
                          "val": len(data.val), "test": len(data.test)}}

    try:
        return ray.get(prepare_task.remote(plan.experiment, plan.cache_dir, plan.original, download, plan.leakage,
                                           plan.weights))
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, UserError):
            raise exc.cause from None
        raise


def separation(baselines: dict) -> str:
    """How far the original model is from the retrained ones on the validation split, in units
    of their spread, with a warning when no measure reaches 2 (nothing visible to unlearn)."""
    val = baselines["val"]
    distances = val["original"]["distances"]
    n = val["reference"]["n_models"]
    parts = ", ".join(f"{name.removesuffix('_gap')} {d:.1f}" for name, d in distances.items())
    text = f"original vs the {n} retrained models (|difference| / their spread, validation split): {parts}"
    if max(distances.values()) < 2:
        text += ("\nwarning: the original model is within 2 spreads of the retrained models on every measure: this "
                 "benchmark sees nothing to unlearn, and the search will mostly tune noise")
    if n < 2:
        text += "\nwarning: one retrained model has no spread; gaps are measured in units of the 1-point floor"
    return text


def make_trainable(plan: Plan, gpus: float):
    from ray import tune

    from .trainable import TrialJob, unlearning_trial

    job = TrialJob(plan.experiment, plan.method, plan.space.fixed, plan.weights, plan.cache_dir, plan.original,
                   seed=0, cpus=plan.cpus_per_trial, leakage=plan.leakage)
    return tune.with_resources(tune.with_parameters(unlearning_trial, job=job),
                               {"cpu": plan.cpus_per_trial, "gpu": gpus})


def make_tuner(plan: Plan, trainable, max_concurrent: int):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from .progress import TrialLines, trial_dirname
    from .study import StudySearch, make_sampler, open_storage

    metrics, modes = plan.objectives()
    single = not plan.multi_objective
    # The first trial runs the method's defaults (where the space contains them), so a search
    # never ends below the defaults on the validation split for want of trying them.
    method = get_method(plan.method)
    start = plan.space.start_point(method.resolve(plan.experiment.method_defaults.get(plan.method, {}), plan.space.fixed))
    # The study lives in optuna.db in the run directory (optuna-dashboard reads it; a resume
    # continues it: see StudySearch). The sampler carries the seed.
    searcher = StudySearch(metric=metrics[0] if single else metrics, mode=modes[0] if single else modes,
                           points_to_evaluate=[start] if start else None, sampler=make_sampler(plan.sampler, plan.seed),
                           storage=open_storage(plan.run_dir), study_name=plan.study_name)
    if plan.scheduler == "asha":
        epochs = plan.space.max_value(method.epochs_hparam, method)
        # Rungs count evaluated epochs (`epoch` in every report; a trial's final report carries the
        # count of its last evaluated epoch), so a trial is compared with others in the same state.
        # Metric and mode come from TuneConfig (Tune refuses them twice).
        scheduler = ASHAScheduler(time_attr="epoch", max_t=max(1, int(epochs)), grace_period=1, reduction_factor=2)
    else:
        scheduler = FIFOScheduler()
    tune_config = tune.TuneConfig(
        search_alg=searcher, scheduler=scheduler, num_samples=plan.num_samples,
        max_concurrent_trials=max_concurrent,
        metric="objective" if single else None, mode="max" if single else None,
        trial_dirname_creator=trial_dirname,
    )
    reporter = tune.CLIReporter(
        metric_columns={"objective": "objective", "val_acc": "val", "forget_acc": "forget",
                        **{k: label for k, label in (("forget_true_acc", "forget true"), ("asr", "ASR"))
                           if k in plan.experiment.forget.measures()},
                        "mia": "MIA", "cost_ratio": "cost", "time_s": "time s", "training_iteration": "reports"},
        parameter_columns=list(plan.space.params), max_report_frequency=30, max_progress_rows=12,
        sort_by_metric=True,
        # single-objective searches pass metric/mode through TuneConfig; the reporter must not repeat them
        **({} if single else {"metric": "objective", "mode": "max"}),
    )
    run_config = tune.RunConfig(
        name=plan.run_dir.name, storage_path=str(plan.run_dir.parent),
        # A failed trial (diverged, out of memory) is not retried: it would fail the same way.
        failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        callbacks=[TrialLines(plan.num_samples), *mlflow_callbacks(plan)], progress_reporter=reporter, verbose=1,
    )
    return tune.Tuner(trainable, param_space=plan.space.tune_space(), tune_config=tune_config, run_config=run_config)


def mlflow_callbacks(plan: Plan) -> list:
    if not plan.mlflow:
        return []
    from .tracking import ensure_experiment, make_callback

    ensure_experiment(plan.mlflow, plan.study_name, plan.run_dir)
    return [make_callback(plan.mlflow, plan.study_name)]


def concurrency(resources: dict, cpus: float, gpus: float, requested: int | None) -> int:
    limit = math.floor(resources.get("CPU", 1) / cpus)
    if gpus > 0:
        limit = min(limit, math.floor(resources.get("GPU", 0) / gpus + 1e-9))
    if limit < 1:
        raise UserError(f"one trial needs {cpus:g} CPUs and {gpus:g} GPUs; the cluster has "
                        f"{resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} GPUs")
    return min(requested, limit) if requested else limit


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_resources(args)
    run_dir = existing_run(args)
    resuming = run_dir is not None
    if resuming:
        plan = Plan.from_json(json.loads((run_dir / SEARCH_FILE).read_text()), run_dir)
        if args.sampler and args.sampler != plan.sampler:
            raise UserError(f"{run_dir} was searched with --sampler {plan.sampler}; a resume continues that study "
                            "(drop --sampler, or start a new search)")
        print(f"resuming {run_dir}", flush=True)
    else:
        plan = make_plan(args)
        if not args.address:  # the data must be where the experiment says, before Ray starts
            from .data import load_data

            load_data(plan.experiment, "cpu", args.download)
    info = start_ray(args)
    resources = info["resources"]
    gpus = plan.gpus_per_trial
    if gpus is None:
        gpus = 0.25 if resources.get("GPU", 0) > 0 else 0.0
    if gpus > 0 and resources.get("GPU", 0) == 0:
        raise UserError(f"--gpus-per-trial {gpus:g} asked for, but the Ray cluster has no GPU")
    plan.gpus_per_trial = gpus
    max_concurrent = concurrency(resources, plan.cpus_per_trial, gpus, args.max_concurrent)
    refs = prepare_references(plan, resources, args.download)
    baselines = refs["baselines"]
    saved = {**plan.to_json(), "reference": baselines["val"]["reference"],
             "reference_test": baselines["test"]["reference"],
             "original_model": baselines["val"]["original"]["metrics"],
             "original_objective": baselines["val"]["original"]["objective"], "baselines": baselines,
             "reference_status": refs["status"], "reference_paths": refs["paths"], "prepared_on": refs["device"],
             "sizes": refs["sizes"], "max_concurrent": max_concurrent,
             "created": time.strftime("%Y-%m-%d %H:%M:%S"), "command": sys.argv}
    print(separation(baselines), flush=True)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    if not resuming:
        atomic_write_text(plan.run_dir / SEARCH_FILE, json.dumps(saved, indent=1, default=str))
    print(f"searching {plan.method} on {plan.experiment.name}: {plan.num_samples} trials, {max_concurrent} at a time, "
          f"{plan.cpus_per_trial:g} CPU + {gpus:g} GPU each; results in {plan.run_dir}", flush=True)
    print(f"watch it: tensorboard --logdir {plan.run_dir}", flush=True)
    from ray.tune import Tuner

    trainable = make_trainable(plan, gpus)
    if resuming and Tuner.can_restore(str(plan.run_dir)):
        tuner = Tuner.restore(str(plan.run_dir), trainable, resume_unfinished=True, resume_errored=False,
                              restart_errored=False)
    else:
        tuner = make_tuner(plan, trainable, max_concurrent)
    started = time.time()
    tuner.fit()
    from .export import export_run, summary

    record = export_run(plan.run_dir, top=args.top)
    print(summary(record, plan.run_dir, top=args.top, started=started), flush=True)
    if plan.mlflow:
        from .tracking import log_best_config

        ranked = record.ranked()
        if ranked and log_best_config(plan.mlflow, plan.study_name, ranked[0].trial_id,
                                      plan.run_dir / "best_config.yaml"):
            print(f"mlflow: best_config.yaml attached to trial {ranked[0].trial_id}'s run; "
                  f"mlflow ui --backend-store-uri {plan.mlflow}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
