"""The search's Optuna study: kept in `optuna.db` (SQLite) in the run directory, so that
optuna-dashboard, `optuna.load_study` and a resumed search all see the same study; or in a
database server (--optuna-storage), which outlives the head node of a cluster.

Only the driver writes it (Ray's OptunaSearch asks and tells there; trials never touch it).

Kept out of search.py: Tune pickles the searcher into its experiment state, and classes defined
in a `python -m` entry module would not unpickle on resume.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from .results import STUDY_FILE
from .trial_files import FAILED_KEY, NODE_DATA_KEY
from ..files import sqlite_url


def storage_url(run_dir: str | Path) -> str:
    """sqlite:////abs/path/optuna.db (SQLAlchemy's form of an absolute path)."""
    return sqlite_url(Path(run_dir) / STUDY_FILE)


def open_storage(run_dir: str | Path, url: str | None = None) -> optuna.storages.RDBStorage:
    """The study's storage: the database at `url` (--optuna-storage), else the run's optuna.db."""
    if url:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})  # a server may drop idle links
    return RunStudyStorage(run_dir)


def check_study_database(url: str, study_name: str, resuming: bool) -> None:
    """Before Ray starts: the --optuna-storage database answers, and a new search does not
    continue another search's study of the same name (a shared server holds many)."""
    from ..errors import UserError

    shown = url.split("@")[-1] if "@" in url else url
    try:
        storage = open_storage("", url)
        storage.get_study_id_from_name(study_name)
    except KeyError:
        return
    except Exception as exc:  # noqa: BLE001 - drivers raise their own kinds: any failure is the same answer
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(f"--optuna-storage {shown}: cannot open it ({type(exc).__name__}: {reason})") from None
    if not resuming:
        raise UserError(f"--optuna-storage {shown} already holds a study named {study_name!r} (another search's): "
                        "choose another --name, or resume that search")


# The run folder whose trials run now (studies_in); unpickled studies open its optuna.db.
_bound_run_dir: str | None = None


@contextlib.contextmanager
def studies_in(run_dir: str | Path):
    """While in this block, every study unpickled (Tune's tuner.pkl and searcher states) opens
    the optuna.db of `run_dir`, wherever the run was when it was pickled. A block, not a
    setting: one process runs several searches (a benchmark)."""
    global _bound_run_dir
    before, _bound_run_dir = _bound_run_dir, str(Path(run_dir).resolve())
    try:
        yield
    finally:
        _bound_run_dir = before


class RunStudyStorage(optuna.storages.RDBStorage):
    """The SQLite storage of a run's optuna.db that follows the run when it moves.

    Tune pickles the searcher, and the study's storage with it. A plain RDBStorage unpickles to
    the absolute URL it was opened with, so a run folder that was moved, copied to another
    machine or downloaded into another staging folder would resume against the old file:
    creating an empty study there, or failing when its folder is gone. This one reopens the
    bound run folder's optuna.db (studies_in) and falls back to the one it was pickled with.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = str(Path(run_dir).resolve())
        # A generous lock timeout: a dashboard reading the file may hold it for a moment.
        super().__init__(storage_url(self.run_dir), engine_kwargs={"connect_args": {"timeout": 30}})

    def __setstate__(self, state: dict) -> None:
        run_dir = _bound_run_dir or state["run_dir"]
        super().__setstate__({**state, "run_dir": run_dir, "url": storage_url(run_dir)})


SAMPLER_CLASSES = {
    "tpe": optuna.samplers.TPESampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "nsga3": optuna.samplers.NSGAIIISampler,
    "gp": optuna.samplers.GPSampler,
    "random": optuna.samplers.RandomSampler,
}


def make_sampler(name: str, seed: int) -> "NamedSampler":
    """Optuna's sampler `name`, seeded, in a wrapper that Tune can pickle (NamedSampler). Which
    ones a search may use is checked beforehand (plan.choose_sampler)."""
    return NamedSampler(name, seed)


class NamedSampler(optuna.samplers.BaseSampler):
    """One of Optuna's samplers, kept as its name and seed so that it pickles whatever the
    sampler object holds.

    Tune pickles the searcher, and with it the sampler (in the searcher itself, its study and
    every open trial), into tuner.pkl and into each saved searcher state. Whether an Optuna
    sampler object pickles is not part of Optuna's interface: 5.1's NSGA-II/III samplers hold a
    thread lock and do not. Everything a sampler needs to go on is in the study (optuna.db: the
    trials, NSGA's generations in their system attributes), so a pickled NamedSampler keeps only
    the name, the seed and how many trials it has seen, and builds the sampler again when
    unpickled. The rebuilt one is seeded from (seed, trials seen): a resumed random search does
    not repeat the draws of its first start.
    """

    def __init__(self, name: str, seed: int, trials_seen: int = 0) -> None:
        if name not in SAMPLER_CLASSES:
            raise ValueError(f"unknown sampler {name!r}; allowed: {', '.join(SAMPLER_CLASSES)}")
        self.name, self.seed, self.trials_seen = name, seed, trials_seen
        self.sampler = self._build()

    def _build(self) -> optuna.samplers.BaseSampler:
        seed = self.seed
        if self.trials_seen:  # a restored sampler: a fresh stream, the same one on every restore
            seed = int(np.random.SeedSequence([self.seed, self.trials_seen]).generate_state(1)[0])
        with warnings.catch_warnings():  # NSGAIIISampler is "experimental" (since Optuna 3.2)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return SAMPLER_CLASSES[self.name](seed=seed)

    def __getstate__(self) -> dict:
        return {"name": self.name, "seed": self.seed, "trials_seen": self.trials_seen}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["name"], state["seed"], state["trials_seen"])

    def __repr__(self) -> str:
        return f"NamedSampler({self.name!r}, seed={self.seed})"

    # The sampler interface, passed on.
    def infer_relative_search_space(self, study, trial):
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self.trials_seen += 1
        self.sampler.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()


# Marks a trial that does not count against the search's total: one that was running when the
# driver was killed and that Tune never knew, or one whose node could not load the data set. The
# name is kept in studies already written.
LOST_ATTR = "tune_unlearn:lost_in_a_kill"


class StudySearch(OptunaSearch):
    """Ray's OptunaSearch on a persistent (RDB) study, made right for resume.

    On Tuner.restore, Tune builds the searcher afresh from tuner.pkl and sets its search space
    (which opens the existing study, `load_if_exists`, and enqueues `points_to_evaluate` once
    more) before restoring its saved state. With an in-memory study that enqueued point vanished
    with the fresh study; in a database it stays, and the next trial would run the start point a
    second time. So the points are enqueued only into a study without trials. After restoring,
    trials the database holds as RUNNING but the restored searcher does not know (asked after the
    last saved state, before a hard kill) are marked FAIL: Tune will never report them.

    A hard kill can also lose a trial that Tune created and finished after it last saved its
    state: the study holds it as complete, its folder holds its files, and Tune's restored state
    does not know it. Tune would run one trial more than `total` asked; so the searcher counts
    the trials the study holds and stops suggesting at `total` (results.load_run reads the lost
    trial from its folder).
    """

    def __init__(self, *args, total: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.total = total

    def suggest(self, trial_id: str):
        total = getattr(self, "total", None)  # None in a searcher pickled before it was kept
        if total and trial_id not in self._ot_trials and self._storage is not None and self._trials_held() >= total:
            return OptunaSearch.FINISHED
        return super().suggest(trial_id)

    def _trials_held(self) -> int:
        """The study's trials that count against `total`: not the queued start point, not the
        ones a restore marked as lost (LOST_ATTR)."""
        return sum(t.state != TrialState.WAITING and not t.system_attrs.get(LOST_ATTR)
                   for t in self._ot_study.get_trials(deepcopy=False))

    def _setup_study(self, mode):
        if self._points_to_evaluate and self._storage is not None and self._study_has_trials():
            points, self._points_to_evaluate = self._points_to_evaluate, []
            try:
                super()._setup_study(mode)
            finally:
                self._points_to_evaluate = points
        else:
            super()._setup_study(mode)
        # Name the values (optuna-dashboard and load_study show "objective", "retain_gap", ...)
        metrics = self._metric if isinstance(self._metric, list) else [self._metric]
        if all(metrics) and self._ot_study.metric_names != metrics:
            with warnings.catch_warnings():  # "experimental" since Optuna 3.2
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._ot_study.set_metric_names(metrics)

    def _study_has_trials(self) -> bool:
        try:
            study_id = self._storage.get_study_id_from_name(self._study_name)
        except KeyError:
            return False
        return len(self._storage.get_all_trials(study_id, deepcopy=False)) > 0

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        lost = bool(result and result.get(NODE_DATA_KEY))
        if result and result.get(FAILED_KEY):  # a trial that ended without metrics (trainable.failed_report)
            result, error = None, True
        ot_trial = self._ot_trials.get(trial_id)
        if lost and ot_trial is not None and self._storage is not None:  # its node had no data: the trial did not run
            self._ot_study._storage.set_trial_system_attr(ot_trial._trial_id, LOST_ATTR, True)  # while it is open
        super().on_trial_complete(trial_id, result=result, error=error)

    def on_trial_result(self, trial_id: str, result: dict):
        if result.get(FAILED_KEY):
            return
        # A trial the study holds as finished while the restored searcher does not (the driver
        # was killed after the study recorded it and before Tune saved its state) reports its
        # final_result.json again on the resume: Optuna refuses a report to a finished trial.
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and self._storage is not None and \
                self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished():
            return
        super().on_trial_result(trial_id, result)

    def restore(self, checkpoint_path: str):
        super().restore(checkpoint_path)
        if self._storage is None or self._ot_study is None:
            return
        known = {t._trial_id for tid, t in self._ot_trials.items() if tid not in self._completed_trials}
        storage = self._ot_study._storage
        for t in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t._trial_id not in known:
                storage.set_trial_system_attr(t._trial_id, LOST_ATTR, True)
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
