"""A search's results as its run directory holds them, for finished and interrupted searches
alike: Tune's experiment state corrected by each trial's own files (load_run -> RunRecord)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..errors import UserError

# Tune's ExperimentAnalysis and the trainable import Ray and torch: load_run imports them where
# needed, so that the command line (and the search command, for SEARCH_FILE) loads this module
# without them.

SEARCH_FILE = "search.json"  # written by search.py: the search's settings and references
STUDY_FILE = "optuna.db"  # the search's Optuna study (SQLite; study.py)
TIMINGS_FILE = "timings.json"  # wall time of each phase of the search's last session (driver.Phases)
HOLDOUT_FILE = "holdout.json"  # the best configurations on the held-out requests (holdout.py)
RESEED_FILE = "reseeds.json"  # the best configurations with other unlearning seeds (reseed.py)
MLFLOW_FILE = "mlflow.db"  # the search's own MLflow store, with --mlflow and no URI (tracking.py)
# A trial's test-split columns (trainable.test_columns), beside the validation metrics
TEST_COLUMNS = ("test_acc", "forget_test_acc", "test_mia", "test_mia_cv_acc", "test_objective")
# Columns only some searches have (the corrective rules' measures, leakage), after the others
OPTIONAL_TEST_COLUMNS = ("test_asr", "test_pl_forget_acc")


@dataclass
class TrialRecord:
    trial_id: str
    status: str  # TERMINATED (finished), EARLY_STOPPED (by ASHA), ERROR, RUNNING, PENDING
    config: dict
    result: dict  # the final report (or the last one, for trials that did not finish)
    error: str = ""
    path: str = ""
    history: list = field(default_factory=list)  # every report, in order

    @property
    def finished(self) -> bool:
        return self.status == "TERMINATED"


@dataclass
class RunRecord:
    run_dir: Path
    search: dict
    trials: list[TrialRecord]

    @property
    def params(self) -> list[str]:
        return list(self.search["params"])

    @property
    def finished(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.finished]

    @property
    def timed(self) -> list[dict]:
        """The results of the finished trials that recorded their duration (`trial_time_s`)."""
        return [t.result for t in self.finished if "trial_time_s" in t.result]

    @property
    def interrupted(self) -> bool:
        done = [t for t in self.trials if t.status in ("TERMINATED", "EARLY_STOPPED", "ERROR")]
        return len(done) < self.search["num_samples"]

    def ranked(self) -> list[TrialRecord]:
        """Finished trials, best first: those run with several seeds by their mean objective,
        then those run once by their objective, then those that diverged on another seed."""
        seeded = (self.reseeds or {}).get("trials", {})

        def order(t: TrialRecord) -> tuple:
            r = seeded.get(t.trial_id) or {}
            if r.get("failed"):
                return (2, -t.result["objective"])
            return (0, -r["mean"]) if r.get("mean") is not None else (1, -t.result["objective"])

        return sorted(self.finished, key=order)

    @cached_property
    def reseeds(self) -> dict | None:
        """reseeds.json (reseed.py), or None where the best were not run with other seeds."""
        path = self.run_dir / RESEED_FILE
        return json.loads(path.read_text()) if path.exists() else None

    def over_seeds(self, trial_id: str) -> dict | None:
        """A trial's objectives over unlearning seeds (objectives, mean, sd, failed), when it was
        run again with other seeds."""
        return (self.reseeds or {}).get("trials", {}).get(trial_id)

    @cached_property
    def holdout(self) -> dict | None:
        """holdout.json (holdout.py), or None before the held-out runs or without held-out requests."""
        path = self.run_dir / HOLDOUT_FILE
        return json.loads(path.read_text()) if path.exists() else None

    def holdout_best(self) -> dict | None:
        """holdout.json's row of the configuration the search chose (rank 1), if it ran there."""
        rows = (self.holdout or {}).get("configs", [])
        return next((r for r in rows if r.get("rank") == 1), None)

    def holdout_of(self, trial_id: str) -> dict | None:
        """A trial's row of holdout.json, when it was among the configurations run there."""
        rows = (self.holdout or {}).get("configs", [])
        return next((r for r in rows if r.get("trial_id") == trial_id), None)


def _read_history(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            report = json.loads(line)
        except ValueError:  # a line cut short by a kill
            continue
        # A trial whose final report Tune logged but whose end it had not saved when the driver
        # was interrupted reports its final_result.json again on the resume: the same report twice.
        if report.get("final") == 1 and any(r.get("final") == 1 for r in out):
            continue
        out.append(report)
    return out


def load_run(run_dir: str | Path) -> RunRecord:
    """Trials of a search from Tune's experiment state, corrected by each trial's own files
    (a trial with final_result.json finished, whatever the last saved state says)."""
    from ray.tune import ExperimentAnalysis

    from .progress import error_reason, trial_dir_name
    from .trial_files import FAILED_KEY, FINAL_RESULT

    run_dir = Path(run_dir).expanduser().resolve()
    if not (run_dir / SEARCH_FILE).is_file():
        raise UserError(f"{run_dir} is not a tune_unlearn search (no {SEARCH_FILE})")
    search = json.loads((run_dir / SEARCH_FILE).read_text())
    # Trials that never reported (pending at an interruption) are expected here, not warnings.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    try:
        analysis = ExperimentAnalysis(str(run_dir))
        tune_trials = analysis.trials
    except (ValueError, FileNotFoundError):  # stopped before Tune saved any state
        tune_trials = []
    # (id, status, config, folder, last result) of every trial: Tune's, then any trial that
    # finished after Tune last saved its state, before a hard kill of the driver (Tune's state
    # lacks it; its folder and the study hold it: study.StudySearch).
    sources = []
    for t in tune_trials:
        trial_dir = Path(t.path) if t.path else run_dir
        if not trial_dir.is_dir():  # the run directory was moved: find the trial by its id
            matches = list(run_dir.glob(f"*{t.trial_id}*"))
            trial_dir = matches[0] if matches else trial_dir
        sources.append((t.trial_id, t.status, t.config, trial_dir, t.last_result))
    known = {trial_id for trial_id, *_ in sources}
    for final in sorted(run_dir.glob(f"{trial_dir_name('*')}/{FINAL_RESULT}")):
        trial_id = final.parent.name.removeprefix(trial_dir_name(""))
        if trial_id not in known and (final.parent / "params.json").is_file():
            params = json.loads((final.parent / "params.json").read_text())
            sources.append((trial_id, "TERMINATED", params, final.parent, None))
    trials = []
    for trial_id, status, params, trial_dir, last_result in sources:
        history = [r for r in _read_history(trial_dir) if "objective" in r]
        final = trial_dir / FINAL_RESULT
        if final.exists():  # Tune's copy of the final report also holds its own fields (iterations, times)
            status = "TERMINATED"
            result = history[-1] if history and history[-1].get("final") == 1 else json.loads(final.read_text())
        else:
            result = history[-1] if history else dict(last_result or {})
            if status == "TERMINATED":  # ended by the scheduler before its final report
                status = "EARLY_STOPPED"
        error = ""
        if result.get(FAILED_KEY):  # ended without metrics (diverged, out of memory): its report says why
            status, error = "ERROR", result[FAILED_KEY]
        elif status == "ERROR":  # an exception Tune gave up on
            error_file = trial_dir / "error.txt"
            error = error_reason(error_file.read_text() if error_file.exists() else None)
        config = {k: v for k, v in params.items() if k in search["params"]}
        trials.append(TrialRecord(trial_id, status, config, result, error, str(trial_dir), history))
    return RunRecord(run_dir, search, trials)
