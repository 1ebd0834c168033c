"""Hyperparameter search with Ray Tune and an Optuna sampler (TPE by default).

    python -m tune_unlearn.search --space default
    python -m tune_unlearn.search --space default --experiment fmnist --num-samples 32
    python -m tune_unlearn.search --method selective --multi-objective --scheduler asha
    python -m tune_unlearn.search --name my-search --resume
    python -m tune_unlearn.search --space default --sampler gp --mlflow
    python -m tune_unlearn.search --space default --requests seed=0 seed=1 seed=2 --holdout seed=3

The command line of search/driver.py's run_search: it parses the options into SearchOptions and
leaves the rest to the search. What the search does and writes: docs/search.md.
"""

from __future__ import annotations

import argparse
import sys

from ..evaluation.objective import AGGREGATES
from ..search.cluster import DEFAULT_RESOURCE_TIMEOUT_S
from ..search.options import SAMPLERS, SCHEDULERS, SearchOptions
from .arguments import add_experiment_args, experiment_overrides, main_guard, parse_assignments, prog


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
    p.add_argument("--scheduler", choices=SCHEDULERS, default="fifo",
                   help="fifo runs every trial to the end; asha stops weak trials early over evaluated epochs")
    p.add_argument("--report-every-epoch", action="store_true",
                   help="evaluate the validation split after every evaluated epoch of the method and report it (curves "
                        "per epoch in TensorBoard; on by itself with --scheduler asha); default: one report per trial")
    p.add_argument("--multi-objective", action="store_true",
                   help="Optuna optimises the objective's components (a Pareto front) instead of their weighted sum")
    p.add_argument("--sampler", choices=SAMPLERS,
                   help="Optuna sampler: tpe (default), nsga2 or nsga3 (genetic, --multi-objective only), gp (Gaussian "
                        "process) or random")
    p.add_argument("--seed", type=int, default=0, help="seed of the Optuna sampler (default: 0)")
    p.add_argument("--optuna-storage", metavar="DATABASE_URL",
                   help="keep the Optuna study in this database (SQLAlchemy URL, e.g. postgresql://user@db-host/optuna; "
                        "the password from the environment or ~/.pgpass, never in the URL) instead of optuna.db in "
                        "the run: a database server outlives the head node")
    p.add_argument("--weight", action="append", default=[], metavar="NAME=VALUE", help="override an objective weight")
    p.add_argument("--leakage", action="store_true",
                   help="measure leakage (pl_forget_acc, leak_gap) in every trial; on by itself when the leak weight > 0")
    p.add_argument("--storage-path", default="runs",
                   help="where runs live: a folder on the driver's node (default: ./runs), or a URI pyarrow opens, e.g. "
                        "s3://bucket/runs or gs://bucket/runs (S3-compatible stores: add ?endpoint_override=host:port); "
                        "with a URI the driver works on a local copy and uploads it after each phase and trial")
    p.add_argument("--name", help="run name (default: <space>-<experiment>-<time>); an existing run of that name resumes")
    p.add_argument("--resume", action="store_true", help="continue the interrupted search --name (default: the latest)")
    p.add_argument("--address", help="join a running Ray cluster ('auto', or the head's host:port; default: $RAY_ADDRESS "
                                     "if set, else a local Ray session; ray:// is refused)")
    p.add_argument("--autoscale", action="store_true",
                   help="the cluster adds nodes on demand (Ray's autoscaler, KubeRay): --max-concurrent and "
                        "--gpus-per-trial may exceed the nodes present, and the search asks the autoscaler for them")
    p.add_argument("--resource-timeout", type=float, default=DEFAULT_RESOURCE_TIMEOUT_S, metavar="SECONDS",
                   help="stop the search when a task or a trial has waited this long for CPUs or GPUs and nothing of "
                        f"the search runs (default: {DEFAULT_RESOURCE_TIMEOUT_S:g})")
    p.add_argument("--dashboard", action="store_true", help="start the Ray dashboard (needs the 'dashboard' extra)")
    p.add_argument("--mlflow", nargs="?", const="", metavar="TRACKING_URI",
                   help="log every trial to MLflow (needs the 'mlflow' extra); without a URI, a store in the run "
                        "directory (sqlite:///<run_dir>/mlflow.db)")
    p.add_argument("--requests", nargs="+", metavar="KEY=VALUE[,...]",
                   help="forget requests to tune on, e.g. seed=0 seed=1 or classes=3 classes=5 (keys: seed, classes, "
                        "fraction, train_seed); each trial runs on all of them (default: the space's, else the "
                        "experiment's own)")
    p.add_argument("--holdout", nargs="+", metavar="KEY=VALUE[,...]",
                   help="forget requests never tuned on, on which the best configurations and the defaults are run "
                        "after the search (test split), or 'none' (default: the space's, else the next two forget "
                        "seeds or classes and another original model)")
    p.add_argument("--aggregate", choices=AGGREGATES,
                   help="how the requests' objectives make one: mean (default) or worst")
    p.add_argument("--holdout-top", type=int, metavar="K",
                   help="how many of the best configurations run on the held-out requests (default: the space's, 3)")
    p.add_argument("--reseeds", type=int, default=3, metavar="S",
                   help="after the trials, run the best configurations again so that each has S unlearning seeds in "
                        "all (seed 0 is the trial's own run), and choose the best on their mean; 1: on the trials' "
                        "single runs (default: 3)")
    p.add_argument("--reseed-top", type=int, default=3, metavar="K",
                   help="how many of the best trials --reseeds runs again (default: 3)")
    p.add_argument("--top", type=int, default=5, help="rows of the final table (default: 5)")
    add_experiment_args(p, default_experiment=None)
    return p


def parse_options(argv: list[str] | None = None) -> SearchOptions:
    """The command line as SearchOptions (argparse's refusals exit with status 2)."""
    args = build_parser().parse_args(argv)
    return SearchOptions(
        space=args.space, method=args.method, experiment=args.experiment, experiment_overrides=experiment_overrides(args),
        num_samples=args.num_samples, max_concurrent=args.max_concurrent, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, scheduler=args.scheduler, report_every_epoch=args.report_every_epoch,
        multi_objective=args.multi_objective, sampler=args.sampler, seed=args.seed,
        optuna_storage=args.optuna_storage,
        weights=parse_assignments(args.weight, "--weight"), leakage=args.leakage, storage_path=args.storage_path,
        name=args.name, resume=args.resume, address=args.address, autoscale=args.autoscale, resource_timeout=args.resource_timeout,
        dashboard=args.dashboard, mlflow=args.mlflow, requests=tuple(args.requests or ()),
        holdout=None if args.holdout is None else tuple(args.holdout), aggregate=args.aggregate,
        holdout_top=args.holdout_top, reseeds=args.reseeds, reseed_top=args.reseed_top, top=args.top,
        cache_dir=args.cache_dir, original=args.original,
        download=args.download)


@main_guard
def main(argv: list[str] | None = None) -> int:
    from ..search.driver import run_search

    run_search(parse_options(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
