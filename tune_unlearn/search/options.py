"""What a search is asked to do, typed: `SearchOptions`. commands/search.py builds them from the
command line; Python code builds them directly and calls `driver.run_search`. Their check runs
before anything expensive and names the option as the command line spells it, since that is
where most of them come from."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Mapping

from ..errors import UserError
from ..evaluation.objective import AGGREGATES
from .cluster import DEFAULT_RESOURCE_TIMEOUT_S
from .storage import RunStore

SCHEDULERS = ("fifo", "asha")
# Optuna's samplers a search may use (study.make_sampler builds them).
SAMPLERS = ("tpe", "nsga2", "nsga3", "gp", "random")


@dataclass(frozen=True)
class SearchOptions:
    """Every choice of a search. None means "the space's, else the default" where it is allowed."""

    space: str | None = None  # a shipped space's name or a YAML path; None: 'default', or the method's own
    method: str | None = None  # search this method (its own space unless `space` is given)
    experiment: str | None = None  # None: the space's experiment
    experiment_overrides: Mapping[str, object] = field(default_factory=dict)  # dotted keys, e.g. train.epochs
    num_samples: int | None = None
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # None: 0.25 where the cluster has GPUs, else 0
    scheduler: str = "fifo"
    report_every_epoch: bool = False
    multi_objective: bool = False
    sampler: str | None = None  # None: tpe (or, on a resume, the study's own)
    seed: int = 0
    optuna_storage: str | None = None  # a database URL for the study; None: optuna.db in the run
    weights: Mapping[str, float] = field(default_factory=dict)  # objective weights over the space's
    leakage: bool = False
    storage_path: str = "runs"  # a folder, file:///absolute/path, or a URI pyarrow opens (storage.py)
    name: str | None = None  # an existing run of this name resumes
    resume: bool = False
    address: str | None = None  # a Ray cluster to join; None: $RAY_ADDRESS, else a local session
    autoscale: bool = False  # the cluster adds nodes on demand: ask its autoscaler, do not cap at the nodes present
    resource_timeout: float = DEFAULT_RESOURCE_TIMEOUT_S
    dashboard: bool = False
    mlflow: str | None = None  # None: no MLflow; "": a store in the run directory; else a tracking URI
    requests: tuple[str, ...] = ()  # KEY=VALUE[,...] per request; (): the space's, else the experiment's
    holdout: tuple[str, ...] | None = None  # None: the space's or the default; ("none",) or (): none
    aggregate: str | None = None
    holdout_top: int | None = None
    reseeds: int = 3  # the best run with this many unlearning seeds in all; the best chosen on their mean
    reseed_top: int = 3  # how many of the best
    top: int = 5
    cache_dir: str | None = None
    original: str | None = None  # a checkpoint to use as the original model
    download: bool = False

    def check(self) -> None:
        """Refuse, in one line, what no search can do; what needs the space or the experiment is
        checked by plan.make_plan."""
        positive = {"--num-samples": self.num_samples, "--max-concurrent": self.max_concurrent,
                    "--holdout-top": self.holdout_top, "--top": self.top, "--reseeds": self.reseeds,
                    "--reseed-top": self.reseed_top}
        for flag, value in positive.items():
            if value is not None and value < 1:
                raise UserError(f"{flag} must be >= 1, got {value}")
        gpus = self.gpus_per_trial
        if gpus is not None and gpus < 0:
            raise UserError(f"--gpus-per-trial must be >= 0, got {gpus:g}")
        if gpus is not None and gpus > 1 and gpus != int(gpus):
            raise UserError(f"--gpus-per-trial above 1 must be a whole number, got {gpus:g}")
        if not self.cpus_per_trial > 0:
            raise UserError(f"--cpus-per-trial must be > 0, got {self.cpus_per_trial:g}")
        if not self.resource_timeout > 0:
            raise UserError(f"--resource-timeout must be > 0 seconds, got {self.resource_timeout:g}")
        if self.aggregate is not None and self.aggregate not in AGGREGATES:
            raise UserError(f"unknown aggregate {self.aggregate!r}; allowed: {', '.join(AGGREGATES)}")
        if self.scheduler not in SCHEDULERS:
            raise UserError(f"unknown scheduler {self.scheduler!r}; allowed: {', '.join(SCHEDULERS)}")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {self.sampler!r}; allowed: {', '.join(SAMPLERS)}")
        if self.mlflow is not None and importlib.util.find_spec("mlflow") is None:
            raise UserError("--mlflow needs the mlflow extra: pip install -e '.[mlflow]'")
        if self.optuna_storage is not None:
            check_database_url(self.optuna_storage)
        RunStore.of(self.storage_path)
        check_job_storage(self.storage_path)
        address = cluster_address(self.address)
        if self.autoscale and not address:
            raise UserError("--autoscale needs a cluster (--address or $RAY_ADDRESS): a local Ray session has no autoscaler")
        if self.dashboard and (why := dashboard_missing()):
            raise UserError(f"--dashboard needs the dashboard extra ({why}): pip install -e '.[dashboard]'")


def check_database_url(url: str) -> None:
    """--optuna-storage: a database URL SQLAlchemy can read, without a password. The URL is kept
    in search.json and in Tune's state (the pickled searcher), which a cloud run uploads."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(f"--optuna-storage {url!r}: not a database URL (e.g. postgresql://user@host/optuna, "
                        "mysql+pymysql://user@host/optuna, sqlite:////absolute/path.db)") from None
    if parsed.password:
        raise UserError(f"--optuna-storage {parsed.render_as_string(hide_password=True)}: a password in the URL would be "
                        "saved in the run's files; give it through the database's own means (PGPASSWORD, ~/.pgpass, "
                        "a MySQL option file)")


def check_job_storage(storage_path: str) -> None:
    """Inside a Ray job (`ray job submit`, a KubeRay RayJob) the search runs in the job's working
    folder, which Ray unpacks in its temporary folder and deletes: a relative --storage-path
    would put the run there, and a resubmitted job would silently start a new search."""
    import os
    from pathlib import Path

    in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ  # what Ray's job supervisor sets for the entrypoint
    if in_job and "://" not in storage_path and not Path(storage_path).expanduser().is_absolute():
        raise UserError(f"--storage-path {storage_path}: inside a Ray job a relative path lands in the job's working "
                        "folder, which Ray deletes; give an absolute path on a persistent disk or a URI (s3://...)")


def cluster_address(address: str | None) -> str | None:
    """The Ray cluster the search joins: --address, else $RAY_ADDRESS (which ray.init would
    follow anyway), else None (a local Ray session). Ray Client (ray://) is refused: the run's
    files would be written on the client."""
    import os

    source = "--address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address.startswith("ray://"):
        raise UserError(f"{source} {address}: Ray Client (ray://) is not supported, the search writes its run directory "
                        "where it runs; start it on a node of the cluster with --address auto")
    return address


def dashboard_missing() -> str | None:
    """Why Ray could not start its dashboard here, or None: Ray's own check (the one ray.init
    fails on, with a bare Exception), else whether its main packages are importable."""
    import importlib.util

    try:
        from ray._private.utils import get_dashboard_dependency_error  # not public API: guarded
    except ImportError:
        missing = [m for m in ("aiohttp", "ray.dashboard") if importlib.util.find_spec(m) is None]
        return f"missing {', '.join(missing)}" if missing else None
    error = get_dashboard_dependency_error()
    return str(error) if error else None
