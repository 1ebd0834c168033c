"""One line per finished or failed trial while a search runs (beside Tune's status table), and
the watches that stop a search whose trials cannot start or cannot load the data.

Kept out of search.py: Tune pickles callbacks into its experiment state, and classes defined
in a `python -m` entry module would not unpickle on resume.
"""

from __future__ import annotations

import time
from pathlib import Path

from ray import tune

# What the line shows: the validation split's measures (what the objective scores) and the cost
SHOWN = ("val_acc", "forget_acc", "forget_true_acc", "asr", "retain_acc", "mia", "cost_ratio", "time_s")


def error_reason(text: str | None) -> str:
    """The last exception line of a Tune error file, without the module path of its class."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    for line in reversed(lines):
        head, sep, rest = line.partition(": ")
        if sep and (head.endswith(("Error", "Failed", "Exception", "Interrupt")) or "." in head and " " not in head):
            return f"{head.rsplit('.', 1)[-1]}: {rest}"
    return lines[-1] if lines else "unknown error"


def format_params(config: dict) -> str:
    parts = []
    for k, v in sorted(config.items()):
        parts.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


def trial_dir_name(trial_id: str) -> str:
    """Short trial directory names (TensorBoard shows them as run names)."""
    return f"trial_{trial_id}"


def trial_dirname(trial) -> str:
    """Tune's trial_dirname_creator."""
    return trial_dir_name(trial.trial_id)


def _ended(trials, trial) -> int:
    """Trials ended so far, this one included (counted from Tune's list, so right after a resume)."""
    return 1 + sum(t.status in ("TERMINATED", "ERROR") for t in trials if t is not trial)


def duration(seconds: float) -> str:
    """A wait as people read it: 45 s, 3 min 05 s, 1 h 02 min."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class TrialLines(tune.Callback):
    """A line per ended trial, with the time left at this session's pace: its trials ended so
    far over the time since its first trial started, so concurrency is counted in."""

    def __init__(self, total: int, clock=time.monotonic):
        self.total, self.clock = total, clock
        self.since: float | None = None
        self.ended_here = 0

    def __setstate__(self, state):  # a resumed search: a new session, a new pace
        self.__dict__.update(state, since=None, ended_here=0)

    def on_trial_start(self, iteration, trials, trial, **info):
        if self.since is None:
            self.since = self.clock()

    def eta(self, ended: int) -> str:
        self.ended_here += 1
        if self.since is None or ended >= self.total:
            return ""
        pace = (self.clock() - self.since) / self.ended_here
        return f" | about {duration(pace * (self.total - ended))} left"

    def on_trial_complete(self, iteration, trials, trial, **info):
        from .trial_files import FAILED_KEY  # here: trial_files imports this module

        r = trial.last_result or {}
        if r.get(FAILED_KEY):  # ended without metrics (trainable.failed_report)
            ended = _ended(trials, trial)
            print(f"[{ended}/{self.total}] {trial.trial_id} failed: {r[FAILED_KEY]}{self.eta(ended)}", flush=True)
            return
        if "objective" not in r:
            return
        shown = " ".join(f"{k} {r[k]:.2f}" for k in SHOWN if k in r)
        stopped = "" if r.get("final") == 1 else " (stopped early)"
        ended = _ended(trials, trial)
        print(f"[{ended}/{self.total}] {trial.trial_id}{stopped}: objective {r['objective']:.4f} | "
              f"{shown} | {format_params(trial.config)}{self.eta(ended)}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        path = Path(trial.error_file) if trial.error_file else None  # the driver's copy, written before this call
        text = path.read_text() if path and path.exists() else None
        ended = _ended(trials, trial)
        print(f"[{ended}/{self.total}] {trial.trial_id} failed: {error_reason(text)}{self.eta(ended)}", flush=True)


class ResourceWatch(tune.Callback):
    """Stops the search when trials wait to start and none runs for `timeout` seconds: Tune
    would wait for ever for resources that other work holds or a node that never comes (it
    only warns). The clock starts again whenever a trial runs or none waits."""

    def __init__(self, timeout: float, cpus: float, gpus: float, clock=time.monotonic):
        self.timeout, self.cpus, self.gpus, self.clock = timeout, cpus, gpus, clock
        self.since: float | None = None

    def __setstate__(self, state):  # a resumed search (Tune pickles callbacks): a new process, a new clock
        self.__dict__.update(state, since=None)

    def on_step_end(self, iteration, trials, **info):
        now = self.clock()
        waiting = any(t.status == "PENDING" for t in trials)
        if self.since is None or not waiting or any(t.status == "RUNNING" for t in trials):
            self.since = now
        elif now - self.since > self.timeout:
            from .cluster import waited_too_long

            raise waited_too_long("no trial started: they", f"{self.cpus:g} CPU + {self.gpus:g} GPU each", self.timeout)


class NodeDataWatch(tune.Callback):
    """Stops the search, in one line naming the node, when a trial could not load the data set
    on its node (trainable: a failed report marked NODE_DATA_KEY). The search checks the nodes
    present when it starts (cluster.check_data_on_nodes); a node an autoscaler adds later is
    checked by its first trial, and every trial placed there would fail the same way."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from .trial_files import FAILED_KEY, NODE_DATA_KEY

        if result.get(NODE_DATA_KEY):
            from ..errors import UserError

            raise UserError(f"{result[FAILED_KEY]} (every node that runs trials needs the data set at the same path, "
                            "or --download); the search stopped: run it again once the node has it, it resumes")
