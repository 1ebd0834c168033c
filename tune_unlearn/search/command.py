"""Hyperparameter search with Ray Tune and an Optuna sampler (TPE by default).

    python -m tune_unlearn.search --space default
    python -m tune_unlearn.search --space default --experiment fmnist --num-samples 32
    python -m tune_unlearn.search --method selective --multi-objective --scheduler asha
    python -m tune_unlearn.search --name my-search --resume
    python -m tune_unlearn.search --space default --sampler gp --mlflow
    python -m tune_unlearn.search --space default --requests seed=0 seed=1 seed=2 --holdout seed=3

Validates the space, the experiment, the requests and every fixed value before Ray starts;
trains (once, cached) every request's original and retrained references before any trial
starts (references.py), so concurrent trials never race; runs the trials (several per GPU by
default), each on every tuning request; runs the best configurations and the defaults on the
held-out requests (holdout.py); then writes
results.csv and best_config.yaml (and pareto.csv with --multi-objective) under runs/<name>/
and prints the best trials beside the retrained reference. The Optuna study is kept in
runs/<name>/optuna.db (optuna-dashboard, optuna.load_study; a resume continues it); --mlflow
logs every trial to MLflow as well.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..cli import add_experiment_args, main_guard, prog
from ..errors import UserError
from ..evaluation.objective import AGGREGATES
from ..files import atomic_write_text
from .plan import SAMPLERS, Plan, check_resources, cluster_address, existing_run, make_plan
from .results import SEARCH_FILE, TIMINGS_FILE
from .cluster import DEFAULT_RESOURCE_TIMEOUT_S
from .references import prepare_references, separation
from .tuner import make_trainable, make_tuner, start_ray


class Phases:
    """Wall time of each phase of a search, and the CPU time this process (the driver) spent in
    it (timings.json; experiments/search_overhead.py)."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.driver_cpu: dict[str, float] = {}
        self.ended_at: dict[str, float] = {}  # epoch seconds, to set against the trials' own files
        self._last = (time.perf_counter(), time.process_time())

    def lap(self, name: str) -> None:
        now = (time.perf_counter(), time.process_time())
        self.wall[name] = round(now[0] - self._last[0], 3)
        self.driver_cpu[name] = round(now[1] - self._last[1], 3)
        self.ended_at[name] = time.time()
        self._last = now

    def to_json(self) -> str:
        return json.dumps({"wall_s": self.wall, "driver_cpu_s": self.driver_cpu, "ended_at": self.ended_at}, indent=1)


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
    p.add_argument("--report-every-epoch", action="store_true",
                   help="evaluate the validation split after every evaluated epoch of the method and report it (curves "
                        "per epoch in TensorBoard; on by itself with --scheduler asha); default: one report per trial")
    p.add_argument("--multi-objective", action="store_true",
                   help="Optuna optimises the objective's components (a Pareto front) instead of their weighted sum")
    p.add_argument("--sampler", choices=SAMPLERS,
                   help="Optuna sampler: tpe (default), nsga2 or nsga3 (genetic, --multi-objective only), gp (Gaussian "
                        "process) or random")
    p.add_argument("--seed", type=int, default=0, help="seed of the Optuna sampler (default: 0)")
    p.add_argument("--weight", action="append", default=[], metavar="NAME=VALUE", help="override an objective weight")
    p.add_argument("--leakage", action="store_true",
                   help="measure leakage (pl_forget_acc, leak_gap) in every trial; on by itself when the leak weight > 0")
    p.add_argument("--storage-path", default="runs",
                   help="the folder runs live in, or a file:///absolute/path (default: ./runs; on a cluster, a folder on the "
                        "driver's node: the driver writes every file of the run; s3:// and other URIs are refused)")
    p.add_argument("--name", help="run name (default: <space>-<experiment>-<time>); an existing run of that name resumes")
    p.add_argument("--resume", action="store_true", help="continue the interrupted search --name (default: the latest)")
    p.add_argument("--address", help="join a running Ray cluster ('auto', or the head's host:port; default: $RAY_ADDRESS "
                                     "if set, else a local Ray session; ray:// is refused)")
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
    p.add_argument("--top", type=int, default=5, help="rows of the final table (default: 5)")
    add_experiment_args(p, default_experiment=None)
    return p


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    clock = Phases()
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
        if not cluster_address(args):  # the data must be where the experiment says, before Ray starts
            from ..data.load import load_data

            load_data(plan.experiment, "cpu", args.download)
    clock.lap("plan")
    info = start_ray(args, plan.method)
    clock.lap("ray_start")
    from .cluster import alive_nodes, check_data_on_nodes, concurrency

    nodes = alive_nodes()
    gpus = plan.gpus_per_trial
    if gpus is None:
        gpus = 0.25 if any(n.gpus > 0 for n in nodes) else 0.0
    if gpus > 0 and not any(n.gpus > 0 for n in nodes):
        raise UserError(f"--gpus-per-trial {gpus:g} asked for, but the Ray cluster has no GPU")
    plan.gpus_per_trial = gpus
    max_concurrent = concurrency(nodes, plan.cpus_per_trial, gpus, args.max_concurrent)  # per node; refuses a trial too large
    local = not cluster_address(args)
    if not local:  # the driver's own check does not speak for the other nodes
        check_data_on_nodes(plan, args.download, nodes, args.resource_timeout)
        clock.lap("data_check")
    refs, trial_refs = prepare_references(plan, nodes, args.download, local, args.resource_timeout)
    clock.lap("references")
    baselines = refs["baselines"]
    saved = {**plan.to_json(), "reference": baselines["val"]["reference"],
             "reference_test": baselines["test"]["reference"],
             "original_model": baselines["val"]["original"]["metrics"],
             "original_objective": baselines["val"]["original"]["objective"], "baselines": baselines,
             "reference_status": refs["status"], "reference_paths": refs["paths"], "prepared_on": refs["device"],
             "sizes": refs["sizes"], "max_concurrent": max_concurrent, "request_references": refs["requests"],
             "created": time.strftime("%Y-%m-%d %H:%M:%S"), "command": sys.argv}
    print(separation(refs), flush=True)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    if not resuming:
        atomic_write_text(plan.run_dir / SEARCH_FILE, json.dumps(saved, indent=1, default=str))
    tuning = [label for label, _ in plan.tuning_experiments()]
    requests = (f" over {len(tuning)} requests ({', '.join(tuning)}; {plan.aggregate})" if len(tuning) > 1 else "")
    held = f"; held out: {', '.join(r.label for r in plan.holdout)}" if plan.holdout else ""
    print(f"searching {plan.method} on {plan.experiment.name}{requests}: {plan.num_samples} trials, {max_concurrent} at "
          f"a time, {plan.cpus_per_trial:g} CPU + {gpus:g} GPU each{held}; results in {plan.run_dir}", flush=True)
    print(f"watch it: tensorboard --logdir {plan.run_dir}", flush=True)
    from ray.tune import Tuner

    trainable = make_trainable(plan, gpus, trial_refs)
    if resuming and Tuner.can_restore(str(plan.run_dir)):
        tuner = Tuner.restore(str(plan.run_dir), trainable, resume_unfinished=True, resume_errored=False,
                              restart_errored=False)
    else:
        tuner = make_tuner(plan, trainable, max_concurrent, args.resource_timeout)
    clock.lap("tuner")
    started = time.time()
    tuner.fit()
    clock.lap("trials")
    from .export import export_run
    from .summary import summary

    if plan.holdout:  # after Tune has finished: the searcher never sees a held-out number
        from .holdout import run_holdout
        from .results import load_run

        record = load_run(plan.run_dir)
        if record.ranked():
            run_holdout(plan, record, trial_refs, any(n.gpus >= 1 for n in nodes), local, args.resource_timeout)
    clock.lap("holdout")
    record = export_run(plan.run_dir, top=args.top)
    clock.lap("export")
    print(summary(record, plan.run_dir, top=args.top, started=started), flush=True)
    if plan.mlflow:
        from .tracking import log_best_config

        ranked = record.ranked()
        if ranked and log_best_config(plan.mlflow, plan.study_name, ranked[0].trial_id,
                                      plan.run_dir / "best_config.yaml"):
            print(f"mlflow: best_config.yaml attached to trial {ranked[0].trial_id}'s run; "
                  f"mlflow ui --backend-store-uri {plan.mlflow}", flush=True)
        if record.holdout:
            from .tracking import log_holdout

            log_holdout(plan.mlflow, plan.study_name, record.holdout)
    clock.lap("summary")
    if info["owned"]:  # stopped here rather than at exit, so that it is timed too
        import ray

        ray.shutdown()
    clock.lap("ray_stop")
    atomic_write_text(plan.run_dir / TIMINGS_FILE, clock.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
