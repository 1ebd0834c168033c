"""A search from start to end (run_search): the plan, Ray, the references, the trials, the
held-out runs, the export and the summary, each phase timed (timings.json).

It validates the space, the experiment, the requests and every fixed value before Ray starts;
trains (once, cached) every request's original and retrained references before any trial
starts (references.py), so concurrent trials never race; runs the trials (several per GPU by
default), each on every tuning request; runs the best configurations and the defaults on the
held-out requests (holdout.py); then writes results.csv and best_config.yaml (and pareto.csv
with --multi-objective) under runs/<name>/ and prints the best trials beside the retrained
reference. The Optuna study is kept in runs/<name>/optuna.db (optuna-dashboard,
optuna.load_study; a resume continues it); --mlflow logs every trial to MLflow as well.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

from ..errors import UserError
from ..files import atomic_write_text
from .options import SearchOptions, cluster_address
from .plan import Plan, existing_run, make_plan
from .results import SEARCH_FILE, TIMINGS_FILE
from .storage import RunStore
from .references import (PINNED_FILE, check_same_references, pin_references, pinned_references, prepare_references,
                         separation)
from .tuner import fit, make_trainable, make_tuner, start_ray


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


def run_search(options: SearchOptions) -> Path:
    """Run (or resume) the search `options` ask for, to the end: the references, the trials,
    the held-out runs, the export and the summary. Returns the run directory."""
    options.check()
    clock = Phases()
    address = cluster_address(options.address)
    store = RunStore.of(options.storage_path)
    run_dir = existing_run(options, store)
    resuming = run_dir is not None
    if resuming:
        first_start = json.loads((run_dir / SEARCH_FILE).read_text())
        plan = Plan.from_json(first_start, run_dir)
        if options.sampler and options.sampler != plan.sampler:
            raise UserError(f"{run_dir} was searched with --sampler {plan.sampler}; a resume continues that study "
                            "(drop --sampler, or start a new search)")
        if options.optuna_storage and options.optuna_storage != plan.optuna_storage:
            raise UserError(f"{run_dir} keeps its study in {plan.optuna_storage or 'its optuna.db'}; a resume continues "
                            "that study (drop --optuna-storage)")
        print(f"resuming {store.where(run_dir.name)}" + (f" (working copy {run_dir})" if store.uri else ""), flush=True)
    else:
        first_start = None
        plan = make_plan(options)
        if not address:  # the data must be where the experiment says, before Ray starts
            from ..data.load import load_data

            load_data(plan.experiment, "cpu", options.download)
    if plan.optuna_storage:
        from .study import check_study_database

        check_study_database(plan.optuna_storage, plan.study_name, resuming)
    clock.lap("plan")
    info = start_ray(address, options.dashboard, plan.method)
    clock.lap("ray_start")
    from .cluster import alive_nodes, concurrency

    nodes = alive_nodes()
    gpus = plan.gpus_per_trial
    if gpus is None:
        gpus = 0.25 if any(n.gpus > 0 for n in nodes) else 0.0
    if gpus > 0 and not any(n.gpus > 0 for n in nodes) and not options.autoscale:
        raise UserError(f"--gpus-per-trial {gpus:g} asked for, but the Ray cluster has no GPU"
                        + ("; on a cluster that adds GPU nodes on demand, add --autoscale" if address else ""))
    plan.gpus_per_trial = gpus
    # per node; refuses a trial too large, unless an autoscaler is there to add a node for it
    max_concurrent = concurrency(nodes, plan.cpus_per_trial, gpus, options.max_concurrent, options.autoscale)
    gpu = gpus > 0 or any(n.gpus >= 1 for n in nodes)  # the reference, reseed and held-out tasks run on a GPU
    with contextlib.ExitStack() as held:
        if options.autoscale:
            ask_autoscaler(nodes, plan, max_concurrent, gpus)
            held.callback(withdraw_autoscaler_request)  # when the search ends, however it ends
        search_on_ray(options, plan, first_start, store, clock, address, nodes, gpu, max_concurrent)
    clock.lap("summary")
    if info["owned"]:  # stopped here rather than at exit, so that it is timed too
        import ray

        ray.shutdown()
    clock.lap("ray_stop")
    atomic_write_text(plan.run_dir / TIMINGS_FILE, clock.to_json())
    store.upload(plan.run_dir.name)
    return plan.run_dir


def ask_autoscaler(nodes, plan: Plan, trials: int, gpus: float) -> None:
    """Ask the cluster's autoscaler for room for `trials` trials at once, before the
    references, so that the nodes start while they are prepared."""
    from .cluster import bundle, cluster_slots, request_nodes

    request_nodes([bundle(plan.cpus_per_trial, gpus)] * trials)
    present = cluster_slots(nodes, plan.cpus_per_trial, gpus)
    print(f"autoscaler: asked for room for {trials} trial(s) of {plan.cpus_per_trial:g} CPU + {gpus:g} GPU; the "
          f"nodes present fit {present}", flush=True)


def withdraw_autoscaler_request() -> None:
    """At the end, so that idle nodes can go. A cluster gone meanwhile took the request with
    it, and the search's own error is the one to show."""
    from .cluster import request_nodes

    with contextlib.suppress(Exception):
        request_nodes([])


def search_on_ray(options: SearchOptions, plan: Plan, first_start: dict | None, store: RunStore, clock: Phases,
                  address: str | None, nodes, gpu: bool, max_concurrent: int) -> None:
    """The search's phases once Ray runs: the data check, the references, the trials, the
    reseeds, the held-out runs and the export. `first_start`: the run's search.json on a resume."""
    from .cluster import check_data_on_nodes

    resuming = first_start is not None
    gpus = plan.gpus_per_trial
    local = not address
    if not local:  # the driver's own check does not speak for the other nodes
        check_data_on_nodes(plan, options.download, nodes, options.resource_timeout)
        clock.lap("data_check")
    pinned = pinned_references(plan.run_dir) if resuming else None
    if pinned:
        refs, trial_refs = pinned
        print(f"references: the ones this search started with ({PINNED_FILE}), whatever the cache holds now", flush=True)
    else:
        refs, trial_refs = prepare_references(plan, nodes, gpu, options.download, local, options.resource_timeout)
        if resuming:
            check_same_references(first_start, refs, plan.run_dir)
        pin_references(plan.run_dir, refs, trial_refs)
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
    store.upload(plan.run_dir.name)  # the references pinned, before any trial
    tuning = [label for label, _ in plan.tuning_experiments()]
    requests = (f" over {len(tuning)} requests ({', '.join(tuning)}; {plan.aggregate})" if len(tuning) > 1 else "")
    held = f"; held out: {', '.join(r.label for r in plan.holdout)}" if plan.holdout else ""
    print(f"searching {plan.method} on {plan.experiment.name}{requests}: {plan.num_samples} trials, {max_concurrent} at "
          f"a time, {plan.cpus_per_trial:g} CPU + {gpus:g} GPU each{held}; results in {plan.run_dir}", flush=True)
    print(f"watch it: tensorboard --logdir {plan.run_dir}", flush=True)
    from ray.tune import Tuner

    from .study import studies_in

    trainable = make_trainable(plan, gpus, trial_refs)
    with studies_in(plan.run_dir):  # a study Tune unpickles opens this folder's optuna.db, wherever it was first run
        if resuming and Tuner.can_restore(str(plan.run_dir)):
            tuner = Tuner.restore(str(plan.run_dir), trainable, resume_unfinished=True, resume_errored=False,
                                  restart_errored=False)
        else:
            tuner = make_tuner(plan, trainable, max_concurrent, options.resource_timeout, store)
        clock.lap("tuner")
        started = time.time()
        fit(tuner)
    clock.lap("trials")
    from .export import export_run
    from .summary import summary

    # Exported after the trials, so that results.csv and best_config.yaml exist whatever happens
    # to the phases after them; then again with each phase's results. The searcher never sees a
    # number of these phases: Tune has finished.
    record = export_run(plan.run_dir, top=options.top)
    store.upload(plan.run_dir.name)
    clock.lap("export")
    if plan.reseeds > 1 and record.ranked():
        from .reseed import run_reseeds

        run_reseeds(plan, record, trial_refs, gpu, local, options.resource_timeout)
        record = export_run(plan.run_dir, top=options.top)
        store.upload(plan.run_dir.name)
    clock.lap("reseed")
    if plan.holdout and record.ranked():
        from .holdout import run_holdout

        run_holdout(plan, record, trial_refs, gpu, local, options.resource_timeout)
        record = export_run(plan.run_dir, top=options.top)
        store.upload(plan.run_dir.name)
    clock.lap("holdout")
    print(summary(record, plan.run_dir, top=options.top, started=started), flush=True)
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
