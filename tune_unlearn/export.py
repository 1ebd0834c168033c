"""Read a search's results and export them; works on finished and interrupted runs alike.

    python -m tune_unlearn.export runs/<name> [--top 5] [--format yaml|json]

Writes into the run directory:
- results.csv: one row per trial (trial_id, status, error, hyperparameters, validation metrics,
  components, objective, the test split's columns, trial wall time), then the baselines scored
  the same way: `original` (no unlearning, time and cost 0) and `retrained-<i>` (each retrained
  model against the others: what a perfect unlearning scores), status BASELINE;
- best_config.yaml: the best finished trial as a run config (method, experiment, overrides, the
  complete hyperparameters, weights, seed), with `metrics` (validation split: what was
  optimised) and `test_metrics` (test split), so that
  `python -m tune_unlearn.run --config runs/<name>/best_config.yaml` re-runs it;
- pareto.csv (multi-objective searches): the finished trials no other trial dominates;
- top<N>.yaml / top<N>.json: the N best configurations (with --top / --format).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .cli import main_guard, prog
from .config import write_yaml
from .errors import UserError
from .files import atomic_write_text
from .objective import COMPONENT_MODES, OPTIONAL_COMPONENTS

# The modules below import torch and Ray: functions import them where needed, so that the command
# line (and search.py, for SEARCH_FILE) loads this module without them.

SEARCH_FILE = "search.json"  # written by search.py: the search's settings and references
STUDY_FILE = "optuna.db"  # the search's Optuna study (SQLite; study.py)
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
    def interrupted(self) -> bool:
        done = [t for t in self.trials if t.status in ("TERMINATED", "EARLY_STOPPED", "ERROR")]
        return len(done) < self.search["num_samples"]

    def ranked(self) -> list[TrialRecord]:
        return sorted(self.finished, key=lambda t: -t.result["objective"])


def _read_history(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line cut short by a kill
            continue
    return out


def load_run(run_dir: str | Path) -> RunRecord:
    """Trials of a search from Tune's experiment state, corrected by each trial's own files
    (a trial with final_result.json finished, whatever the last saved state says)."""
    from ray.tune import ExperimentAnalysis

    from .progress import error_reason
    from .trainable import FINAL_RESULT

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
    trials = []
    for t in tune_trials:
        trial_dir = Path(t.path) if t.path else run_dir
        if not trial_dir.is_dir():  # the run directory was moved: find the trial by its id
            matches = list(run_dir.glob(f"*{t.trial_id}*"))
            trial_dir = matches[0] if matches else trial_dir
        history = [r for r in _read_history(trial_dir) if "objective" in r]
        final = trial_dir / FINAL_RESULT
        status = t.status
        if final.exists():  # Tune's copy of the final report also holds its own fields (iterations, times)
            status = "TERMINATED"
            result = history[-1] if history and history[-1].get("final") == 1 else json.loads(final.read_text())
        else:
            result = history[-1] if history else dict(t.last_result or {})
            if status == "TERMINATED":  # ended by the scheduler before its final report
                status = "EARLY_STOPPED"
        error = ""
        if status == "ERROR":
            error_file = trial_dir / "error.txt"
            error = error_reason(error_file.read_text() if error_file.exists() else None)
        config = {k: v for k, v in t.config.items() if k in search["params"]}
        trials.append(TrialRecord(t.trial_id, status, config, result, error, str(trial_dir), history))
    return RunRecord(run_dir, search, trials)


# --------------------------------------------------------------------------- files


def _row(record: RunRecord, t: TrialRecord) -> dict:
    from .metrics import METRIC_KEYS, OPTIONAL_KEYS

    row = {"trial_id": t.trial_id, "status": t.status, "error": t.error}
    row.update({k: t.config.get(k) for k in record.params})
    skip = {"phase", "final", "epoch", "phase_epoch", "done", "trial_id", "date", "hostname", "node_ip", "pid",
            "config", "timestamp", "time_this_iter_s", "time_since_restore", "iterations_since_restore",
            "checkpoint_dir_name"}
    row.update({k: t.result.get(k) for k in (*METRIC_KEYS, *COMPONENT_MODES, "objective", *TEST_COLUMNS)
                if k not in OPTIONAL_COMPONENTS})
    row.update({k: t.result[k] for k in (*OPTIONAL_KEYS, *OPTIONAL_COMPONENTS, *OPTIONAL_TEST_COLUMNS)
                if k in t.result})
    row["iterations"] = len(t.history) or t.result.get("training_iteration")
    row.update({k: v for k, v in t.result.items() if k not in row and k not in skip and not k.startswith("train_")})
    return row


def baseline_rows(record: RunRecord) -> list[dict]:
    """results.csv rows of the original model and of each retrained model, scored like trials
    (validation metrics, components, objective; the test split's columns)."""
    from .trainable import test_columns

    baselines = record.search.get("baselines")
    if not baselines:
        return []
    val, test = baselines["val"], baselines["test"]
    rows = [{"trial_id": "original", "status": "BASELINE", **val["original"]["metrics"],
             **val["original"]["components"], "objective": val["original"]["objective"],
             **test_columns(test["original"]["metrics"], test["original"]["objective"])}]
    retrained = zip(val["retrained"]["metrics"], test["retrained"]["metrics"],
                    val["retrained"]["objectives"] or [None] * len(val["retrained"]["metrics"]),
                    test["retrained"]["objectives"] or [None] * len(test["retrained"]["metrics"]))
    for i, (v, te, objective, test_objective) in enumerate(retrained):
        rows.append({"trial_id": f"retrained-{i}", "status": "BASELINE", **v, "objective": objective,
                     **test_columns(te, test_objective)})
    return rows


def test_metrics_of(result: dict) -> dict:
    """A trial's test-split numbers (test_columns of its final report) under the metric names
    of a test evaluation: test_acc, mia, ..., plus the split-free retain/forget accuracy and cost."""
    out = {k: result[k] for k in ("retain_acc", "forget_acc", "forget_true_acc", "time_s", "cost") if k in result}
    for key, value in result.items():
        if key in ("test_acc", "forget_test_acc"):
            out[key] = value
        elif key.startswith("test_") and key not in ("test_acc", "test_objective"):
            out[key.removeprefix("test_")] = value
    if "test_objective" in result:
        out["objective"] = result["test_objective"]
    return out


def write_csv(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def pareto_front(record: RunRecord) -> list[TrialRecord]:
    """Finished trials not dominated on the search's objectives (all at least as good, one better)."""
    objectives = record.search["objectives"]
    signs = {name: (1.0 if mode == "max" else -1.0) for name, mode in objectives.items()}

    def values(t):
        return [signs[n] * t.result[n] for n in objectives]

    front = []
    for t in record.finished:
        v = values(t)
        dominated = any(
            all(a >= b for a, b in zip(values(o), v)) and any(a > b for a, b in zip(values(o), v))
            for o in record.finished if o is not t
        )
        if not dominated:
            front.append(t)
    return sorted(front, key=lambda t: -t.result["objective"])


def run_config_of(record: RunRecord, t: TrialRecord) -> dict:
    """A run config (see run_config.py) that re-runs trial `t` with `python -m tune_unlearn.run`."""
    from .metrics import METRIC_KEYS, OPTIONAL_KEYS
    from .run_config import resolve_run

    s = record.search
    run = resolve_run(s["method"], s["experiment_config"]["name"], s["experiment_overrides"], s["fixed"], t.config)
    return {
        "method": s["method"],
        "experiment": s["experiment_config"]["name"],
        "experiment_overrides": s["experiment_overrides"],
        "hparams": run.hparams,
        "weights": s["weights"],
        "seed": 0,
        "metrics": {k: t.result[k] for k in (*METRIC_KEYS, *OPTIONAL_KEYS, "objective") if k in t.result},
        "test_metrics": test_metrics_of(t.result),
        "result": {
            "trial_id": t.trial_id, "run_dir": str(record.run_dir), "objective": t.result["objective"],
            "components": {k: t.result[k] for k in COMPONENT_MODES if k in t.result},
            "reference": s.get("reference"), "reference_test": s.get("reference_test"),
            "original": s.get("original_model"), "original_objective": s.get("original_objective"),
        },
    }


def export_run(run_dir: str | Path, top: int = 5, fmt: str | None = None) -> RunRecord:
    record = load_run(run_dir)
    out = record.run_dir
    write_csv(out / "results.csv", [_row(record, t) for t in record.trials] + baseline_rows(record))
    ranked = record.ranked()
    if ranked:
        write_yaml(out / "best_config.yaml", run_config_of(record, ranked[0]))
    if record.search.get("multi_objective") and ranked:
        write_csv(out / "pareto.csv", [_row(record, t) for t in pareto_front(record)])
    if fmt:
        configs = [run_config_of(record, t) for t in ranked[:top]]
        if fmt == "json":
            atomic_write_text(out / f"top{top}.json", json.dumps(configs, indent=1, default=str) + "\n")
        else:
            write_yaml(out / f"top{top}.yaml", {"configs": configs})
    return record


# --------------------------------------------------------------------------- table


# Measures of the best table: the objective on the validation split (what was optimised), then
# the test split's numbers (final numbers); forget true, forget test, ASR and PL forget only when measured.
MEASURES = (("retain_acc", "retain"), ("forget_acc", "forget"), ("forget_true_acc", "forget true"), ("test_acc", "test"),
            ("forget_test_acc", "forget test"), ("asr", "ASR"), ("pl_forget_acc", "PL forget"), ("mia", "MIA"),
            ("mia_cv_acc", "MIA cv"))


def fmt(value, digits: int = 2) -> str:
    """A measured number as tables show it ('-' when missing)."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}" if value == 0 or 1e-2 <= abs(value) < 1e5 else f"{value:.3e}"


def fmt_spread(values: list[float], digits: int = 2) -> str:
    """Mean ± standard deviation of `values` ('-' when empty, the value alone when one)."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return fmt(values[0], digits)
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def best_table(record: RunRecord, top: int) -> tuple[list[str], list[list[str]]]:
    """Header and rows: the `top` finished trials by objective, then the retrained models
    (mean ± sd; objective: each scored against the others) and the original model (scored as
    an unlearning that does nothing). Measures are the test split's; `objective` is the
    validation split's (what was optimised), `test obj.` the test split's."""
    baselines = record.search.get("baselines")
    reference = (baselines or {}).get("test", {}).get("reference") or {}
    measures = [(k, label) for k, label in MEASURES if k in reference]
    header = ["rank", "trial", "objective", "test obj.", *(label for _, label in measures), "cost %", "time s",
              *record.params]
    ref_cost = reference.get("cost") or 0
    rows = []
    for i, t in enumerate(record.ranked()[:top], 1):
        test = test_metrics_of(t.result)
        cost = 100 * t.result["cost"] / ref_cost if ref_cost and "cost" in t.result else None
        rows.append([str(i), t.trial_id, fmt(t.result["objective"], 3), fmt(t.result.get("test_objective"), 3),
                     *(fmt(test.get(k)) for k, _ in measures), fmt(cost, 1), fmt(t.result.get("time_s")),
                     *(fmt(t.config.get(p), 4) for p in record.params)])
    if baselines:
        val, test = baselines["val"], baselines["test"]
        retrained = test["retrained"]["metrics"]
        rows.append(["", f"retrained ({len(retrained)})", fmt_spread(val["retrained"]["objectives"], 3),
                     fmt_spread(test["retrained"]["objectives"], 3),
                     *(fmt_spread([m.get(k) for m in retrained]) for k, _ in measures), "100.0",
                     fmt_spread([m.get("time_s") for m in retrained]), *("" for _ in record.params)])
        original = test["original"]["metrics"]
        rows.append(["", "original", fmt(val["original"]["objective"], 3), fmt(test["original"]["objective"], 3),
                     *(fmt(original.get(k)) for k, _ in measures), "0.0", "0.00", *("" for _ in record.params)])
    return header, rows


def table(record: RunRecord, top: int = 5) -> str:
    """best_table as aligned text for the terminal."""
    head, rows = best_table(record, top)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary(record: RunRecord, run_dir: Path, top: int = 5, started: float | None = None) -> str:
    """The closing text of a search; with `started` (the time this session began), the
    throughput of the trials that finished in this session."""
    counts: dict[str, int] = {}
    for t in record.trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    lines = [f"\n{len(record.finished)} of {record.search['num_samples']} trials finished "
             f"({', '.join(f'{v} {k.lower()}' for k, v in sorted(counts.items()))})"]
    if started:
        wall_s = time.time() - started
        now = [t for t in record.finished if (t.result.get("timestamp") or 0) >= started]
        lines[0] += f"; {len(now)} of them in this session's {wall_s:.0f} s: {3600 * len(now) / wall_s:.0f} trials/hour"
    timed = [t.result for t in record.finished if "trial_time_s" in t.result]
    if timed:
        overhead = [r["trial_time_s"] - r["time_s"] for r in timed]
        trial_s = [r["trial_time_s"] for r in timed]
        lines.append(f"mean trial {sum(trial_s) / len(trial_s):.2f} s, of which outside the unlearning "
                     f"(data, evaluation, reporting) {sum(overhead) / len(overhead):.2f} s")
    for t in record.trials:
        if t.status == "ERROR":
            lines.append(f"failed trial {t.trial_id}: {t.error}")
    if record.ranked():
        lines += ["", table(record, top), "", f"best config: {run_dir / 'best_config.yaml'}",
                  f"re-run it:   python -m tune_unlearn.run --config {run_dir / 'best_config.yaml'}"]
    lines.append(f"all trials:  {run_dir / 'results.csv'}")
    if (run_dir / "pareto.csv").exists():
        lines.append(f"pareto front: {run_dir / 'pareto.csv'}")
    lines.append(f"tensorboard --logdir {run_dir}")
    if (run_dir / STUDY_FILE).exists():
        lines.append(f"optuna study: optuna-dashboard sqlite:///{run_dir.resolve() / STUDY_FILE}")
    if record.search.get("mlflow"):
        lines.append(f"mlflow runs:  mlflow ui --backend-store-uri {record.search['mlflow']}")
    if record.interrupted:
        lines.append(f"the search was interrupted; continue it with: python -m tune_unlearn.search "
                     f"--storage-path {run_dir.parent} --name {run_dir.name} --resume")
    return "\n".join(lines)


@main_guard
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog("export"), description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a search's directory, e.g. runs/default-digits-20261122-170323")
    p.add_argument("--top", type=int, default=5, help="how many of the best configurations (default: 5)")
    p.add_argument("--format", choices=["yaml", "json"], default="yaml", help="format of top<N> (default: yaml)")
    args = p.parse_args(argv)
    if args.top < 1:
        raise UserError(f"--top must be >= 1, got {args.top}")
    record = export_run(args.run_dir, args.top, args.format)
    print(summary(record, record.run_dir, args.top))
    print(f"top {args.top}: {record.run_dir / f'top{args.top}.{args.format}'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
