"""What a search does with Ray: start or join it, and build the Tuner (searcher, scheduler,
reporter, callbacks) over the trainable. The references: references.py."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from ..errors import UserError
from ..methods import get_method
from .plan import Plan

# Save Tune's experiment state (trials, searcher history) at least this often (seconds), so a
# killed driver loses little bookkeeping; finished trials are never re-run in any case. Each
# save costs the driver CPU time that trials on a small machine would otherwise use, so not
# more often (experiments/search_overhead.py reports the driver's CPU time per phase).
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's classic status table: one line per trial


def unshipped_package(method_name: str) -> str | None:
    """The folder of the top-level package that holds a method from outside tune_unlearn, where
    it is not installed (not under site-packages): a cluster's workers get it from the driver.
    A local Ray session needs nothing: its workers see the driver's working directory."""
    module = type(get_method(method_name)).__module__
    if module.startswith("tune_unlearn."):
        return None
    top = sys.modules[module.partition(".")[0]]
    if not hasattr(top, "__path__"):
        raise UserError(f"method {method_name!r}: a cluster ships methods from outside tune_unlearn as packages; "
                        f"{top.__name__!r} is a single module: put it in a package or install it")
    folder = Path(next(iter(top.__path__))).resolve()
    return None if {"site-packages", "dist-packages"} & set(folder.parts) else str(folder)


# What a gRPC client sends first (RFC 9113, 3.4): the connection preface and an empty SETTINGS
# frame (length 0, type 4, no flags, stream 0). A gRPC server, as a Ray cluster's GCS is, answers
# with a SETTINGS frame of its own.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")


def check_reachable(address: str) -> None:
    """A UserError at once where no Ray cluster's GCS answers at a HOST:PORT address: where
    nothing takes a connection, ray.init would wait about 20 s and end with a traceback; where
    something else answers (the dashboard's port given for the GCS's), it would retry for
    minutes. ("auto", addresses Ray reads elsewhere and clusters with TLS are left to ray.init.)"""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return
    where = f"Ray address {address} (--address or $RAY_ADDRESS)"
    try:
        connection = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
    except OSError as error:
        raise UserError(f"{where}: no Ray cluster answers there ({error.strerror or error}); start one "
                        "with `ray start --head`, or give the address `ray start` printed (or auto on one of its "
                        "nodes)") from None
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):  # Ray's switch: the GCS wants TLS first
        connection.close()
        return
    reply = b""
    with connection:
        try:
            connection.sendall(HTTP2_PREFACE)
            while len(reply) < 9 and (chunk := connection.recv(9 - len(reply))):
                reply += chunk
        except OSError:  # reset, or nothing said within the timeout
            pass
    if len(reply) < 9 or reply[3] != 4:
        said = reply.decode("ascii", "replace").splitlines()[0].strip() if reply.strip() else ""
        raise UserError(f"{where}: something answers there, but not a Ray cluster's GCS, which speaks gRPC"
                        f"{f' (it said {said[:40]!r})' if said else ''}; give the address `ray start --head` "
                        "printed (the GCS's port, 6379 unless --port said otherwise), not the dashboard's (8265)")


def start_ray(address: str | None, dashboard: bool, method: str) -> dict:
    """Join the cluster at `address` (cluster_address's answer), or start a local session."""
    import ray

    kwargs = {"logging_level": logging.WARNING, "log_to_driver": True, "ignore_reinit_error": True}
    if address:
        check_reachable(address)
        # Ship this package (and a method from outside it) to the cluster's workers, so every
        # node runs the driver's code. Its folder is this module's grandparent, not
        # tune_unlearn.__file__, which is None where a `tune_unlearn` folder in the working
        # directory shadows an editable install (a namespace package).
        modules = [str(Path(__file__).resolve().parents[1]), unshipped_package(method)]
        kwargs["runtime_env"] = {"py_modules": [m for m in modules if m]}
    else:  # a running cluster was started with its own dashboard settings
        kwargs["include_dashboard"] = dashboard
        if dashboard:
            kwargs["dashboard_host"] = "127.0.0.1"
    joined = ray.is_initialized()  # a session this process already has (the tests' shared one)
    try:
        context = ray.init(address=address, **kwargs)
    except ConnectionError as error:  # something answers at the address, but no Ray cluster this driver can join
        if not address:
            raise
        first = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise UserError(f"Ray address {address} (--address or $RAY_ADDRESS): could not join the cluster there: {first}") from None
    info = {"dashboard": getattr(context, "dashboard_url", None), "owned": not joined}
    if dashboard and info["dashboard"]:
        print(f"Ray dashboard: http://{info['dashboard']}  (if it asks for a token: ray get-auth-token)", flush=True)
    return info


TRIAL_RETRIES = 2  # times a trial whose process or node was lost runs again


def make_trainable(plan: Plan, gpus: float, references: dict):
    """The trainable with everything its trials share (TrialJob), the tuning requests'
    `references` (label -> References for trials) among it: Tune puts it in the object store
    once, and every trial actor fetches it, on whichever node it runs."""
    from ray import tune

    from .trainable import TrialJob, unlearning_trial
    from .trial_files import finished_reports

    tuning = tuple(plan.tuning_experiments())
    job = TrialJob(plan.experiment, str(plan.run_dir), plan.method, plan.space.fixed, plan.weights, seed=0,
                   cpus=plan.cpus_per_trial, requests=tuning, references={label: references[label] for label, _ in tuning},
                   finished=finished_reports(plan.run_dir), leakage=plan.leakage,
                   report_every_epoch=plan.report_every_epoch, aggregate=plan.aggregate)
    return tune.with_resources(tune.with_parameters(unlearning_trial, job=job),
                               {"cpu": plan.cpus_per_trial, "gpu": gpus})


def make_searcher(plan: Plan):
    """The Optuna searcher of a search, as Tune gets it (and pickles it into tuner.pkl)."""
    from .study import StudySearch, make_sampler, open_storage

    metrics, modes = plan.objectives()
    single = not plan.multi_objective
    # The first trial runs the method's defaults (where the space contains them), so a search
    # never ends below the defaults on the validation split for want of trying them.
    method = get_method(plan.method)
    start = plan.space.start_point(method.resolve(plan.experiment.method_defaults.get(plan.method, {}), plan.space.fixed))
    # The study lives in optuna.db in the run directory (optuna-dashboard reads it; a resume
    # continues it: see StudySearch). The sampler carries the seed.
    return StudySearch(metric=metrics[0] if single else metrics, mode=modes[0] if single else modes,
                       points_to_evaluate=[start] if start else None, sampler=make_sampler(plan.sampler, plan.seed),
                       storage=open_storage(plan.run_dir, plan.optuna_storage), study_name=plan.study_name,
                       total=plan.num_samples)


def make_tuner(plan: Plan, trainable, max_concurrent: int, resource_timeout: float, store=None):
    """The Tuner of a new search; `store` (storage.RunStore), where the run is kept: with a URI,
    the run is uploaded after every trial that ends."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from .progress import NodeDataWatch, ResourceWatch, TrialLines, trial_dirname
    from .trial_files import TrialFiles, UploadRun

    single = not plan.multi_objective
    method = get_method(plan.method)
    searcher = make_searcher(plan)
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
        # One actor per concurrent trial for the whole search: a new trial costs a reset, not a new
        # process that imports torch and loads the data and the references again (the trainable
        # keeps them per process). Every trial asks for the same resources, which reuse needs.
        reuse_actors=True,
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
        # A trial that fails by itself (diverged, out of memory) ends with a report that says so
        # and is not retried: it would fail the same way. An exception means its process or node
        # was lost (a preempted node Tune does not even count): run it again, twice at most.
        failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES, fail_fast=False),
        # TrialFiles first: it takes the history out of the final report before the others see it
        callbacks=[TrialFiles(), NodeDataWatch(), TrialLines(plan.num_samples),
                   ResourceWatch(resource_timeout, plan.cpus_per_trial, plan.gpus_per_trial), *mlflow_callbacks(plan),
                   *([UploadRun(store, plan.run_dir.name)] if store and store.uri else [])],
        progress_reporter=reporter, verbose=1,
    )
    return tune.Tuner(trainable, param_space=plan.space.tune_space(), tune_config=tune_config, run_config=run_config)


def fit(tuner) -> None:
    """tuner.fit(), with a UserError that one of the search's callbacks raised to stop it (the
    watches in progress.py) raised as itself: Tune wraps it in a TuneError holding a traceback."""
    try:
        tuner.fit()
    except Exception as exc:
        cause, seen = exc, set()
        while cause is not None and id(cause) not in seen:
            if isinstance(cause, UserError):
                raise cause from None
            seen.add(id(cause))
            cause = cause.__cause__ or cause.__context__
        raise


def mlflow_callbacks(plan: Plan) -> list:
    if not plan.mlflow:
        return []
    from .tracking import ensure_experiment, make_callback

    ensure_experiment(plan.mlflow, plan.study_name, plan.run_dir)
    return [make_callback(plan.mlflow, plan.study_name)]
