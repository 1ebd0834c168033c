"""A trial's own files in its directory of the run directory, written by the driver from the
trial's final report (a Tune callback), never by the trial on its node:

    history.json        every epoch of the run, mask learning included (the report's mask figure)
    final_result.json   the final report: a trial that has one is finished and never re-runs
    events.*.method_logs  the same epochs as TensorBoard curves `<phase>/<name>`

A trial on another node of a cluster writes to that node's disk, which the driver never sees;
its reports reach the driver through Ray wherever it ran. So the trial sends its history in the
final report and this callback takes it out again before Tune's loggers see it (Tune lets a
callback change a result in place, and runs the user's callbacks before its loggers), so
result.json, progress.csv and the experiment state stay as small as before.

Kept out of search.py for the reason progress.py gives (Tune pickles callbacks).
"""

from __future__ import annotations

import json
from pathlib import Path

from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS

from ..files import atomic_write_text
from .progress import trial_dir_name

FINAL_RESULT = "final_result.json"
HISTORY = "history.json"
HISTORY_KEY = "history"  # the final report's field that carries the history to the driver
FAILED_KEY = "failed"  # a final report's reason why the trial has no metrics (trainable.failed_report)
# Set in a failed report when the trial's node cannot load the data set: every trial there would
# fail alike, so the search stops (progress.NodeDataWatch) and the trial does not count
# against the search's total (study.StudySearch)
NODE_DATA_KEY = "node_without_data"
# Fields Tune adds to every report (its AUTO_RESULT_KEYS and a few more): not the trial's, and a
# finished trial reports its final_result.json again on a resume.
TUNE_FIELDS = frozenset((*AUTO_RESULT_KEYS, "done", "trial_id", "experiment_tag", "should_checkpoint"))


class TrialFiles(tune.Callback):
    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("final") != 1:
            return
        history = result.pop(HISTORY_KEY, None)
        trial_dir = Path(trial.path) if trial.path else None
        if trial_dir is None or history is None:  # None: a finished trial reporting its file again after a resume
            return
        trial_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(trial_dir / HISTORY, json.dumps(history))
        write_curves(trial_dir, history)
        atomic_write_text(trial_dir / FINAL_RESULT, json.dumps({k: v for k, v in result.items() if k not in TUNE_FIELDS}))


class UploadRun(tune.Callback):
    """Where the run is kept at a URI (storage.py): upload it after every trial that ends, after
    the driver wrote its files (TrialFiles runs first), so a lost head loses only running trials."""

    def __init__(self, store, name: str):
        self.store, self.name = store, name

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.store.upload(self.name)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.store.upload(self.name)


def finished_reports(run_dir: str | Path) -> dict[str, dict]:
    """trial id -> final report of every finished trial in the run directory (to report again,
    never to re-run, when a resume restarts a trial that had finished before the driver saved
    Tune's state). Not a trial stopped by a node without the data: that one runs again."""
    out = {}
    for path in Path(run_dir).glob(f"{trial_dir_name('*')}/{FINAL_RESULT}"):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):  # unreadable: the trial runs again
            continue
        if not report.get(NODE_DATA_KEY):
            out[path.parent.name.removeprefix(trial_dir_name(""))] = report
    return out


def method_logs(entry: dict) -> dict[str, float]:
    """The numbers the method logged in one epoch of a run's history (history.json): without
    the phase and epoch that name it and the clock's time and counted work the pipeline adds."""
    return {name: value for name, value in entry.items()
            if name not in ("phase", "epoch", "time_s", "cost", "macs", "calls", "steps") and isinstance(value, (int, float))
            and not isinstance(value, bool)}


def write_curves(trial_dir: Path, history: list[dict]) -> None:
    """The method's per-epoch logs as TensorBoard scalars `<phase>/<name>` (step: the phase's
    epoch), in the trial's directory, where TensorBoard shows them under the trial's run."""
    from tensorboardX import SummaryWriter  # Tune's own TensorBoard logger uses it too

    with SummaryWriter(str(trial_dir), filename_suffix=".method_logs") as writer:
        for entry in history:
            prefix = f"{entry['request']}/" if entry.get("request") else ""  # several requests: one group each
            for name, value in method_logs(entry).items():
                writer.add_scalar(f"{prefix}{entry['phase']}/{name}", value, entry["epoch"])
