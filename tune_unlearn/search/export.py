"""A search's files: results.csv (every trial, then the original and the retrained models
scored the same way), best_config.yaml (the best trial as a run config for `run --config`),
pareto.csv (multi-objective searches) and top<N>.yaml|json (export_run; see commands/export.py
for the command).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..config import write_yaml
from ..files import atomic_write_text
from ..evaluation.objective import COMPONENT_MODES, OPTIONAL_COMPONENTS
from .results import OPTIONAL_TEST_COLUMNS, TEST_COLUMNS, RunRecord, TrialRecord, load_run


def _row(record: RunRecord, t: TrialRecord) -> dict:
    from ..evaluation.metrics import METRIC_KEYS, OPTIONAL_KEYS

    row = {"trial_id": t.trial_id, "status": t.status, "error": t.error}
    row.update({k: t.config.get(k) for k in record.params})
    skip = {"phase", "final", "epoch", "phase_epoch", "done", "trial_id", "date", "hostname", "node_ip", "pid",
            "config", "timestamp", "time_this_iter_s", "time_since_restore", "iterations_since_restore",
            "checkpoint_dir_name"}
    row.update({k: t.result.get(k) for k in (*METRIC_KEYS, *COMPONENT_MODES, "objective", *TEST_COLUMNS)
                if k not in OPTIONAL_COMPONENTS})
    row.update({k: t.result[k] for k in (*OPTIONAL_KEYS, *OPTIONAL_COMPONENTS, *OPTIONAL_TEST_COLUMNS)
                if k in t.result})
    over = record.over_seeds(t.trial_id) or {}
    row["objective_seeds_mean"], row["objective_seeds_sd"] = over.get("mean"), over.get("sd")
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
    n = len(val["retrained"]["metrics"])
    retrained = zip(val["retrained"]["metrics"], test["retrained"]["metrics"],
                    val["retrained"]["objectives"] or [None] * n, test["retrained"]["objectives"] or [None] * n,
                    val["retrained"].get("example_gaps") or [None] * n)
    for i, (v, te, objective, test_objective, example) in enumerate(retrained):
        rows.append({"trial_id": f"retrained-{i}", "status": "BASELINE", **v, "example_gap": example,
                     "objective": objective, **test_columns(te, test_objective)})
    return rows


def test_metrics_of(result: dict) -> dict:
    """A trial's test-split numbers (test_columns of its final report) under the metric names
    of a test evaluation: test_acc, mia, ..., plus the split-free retain/forget accuracy and cost."""
    out = {k: result[k] for k in ("retain_acc", "forget_acc", "forget_true_acc", "time_s", "cost", "macs", "steps")
           if k in result}
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
    """A run config (see run_config.py) that re-runs trial `t` with `python -m tune_unlearn run`."""
    from ..evaluation.metrics import METRIC_KEYS, OPTIONAL_KEYS
    from ..run_config import resolve_run

    s = record.search
    # The run replays the first tuning request: the search's overrides and that request's own
    first = (s.get("requests") or [{"label": None, "overrides": {}}])[0]
    overrides = {**s["experiment_overrides"], **first["overrides"]}
    run = resolve_run(s["method"], s["experiment_config"]["name"], overrides, s["fixed"], t.config)
    return {
        "method": s["method"],
        "experiment": s["experiment_config"]["name"],
        "experiment_overrides": overrides,
        "hparams": run.hparams,
        "weights": s["weights"],
        "seed": 0,
        "replay": replay_block(record, t, first["label"]),
        "metrics": {k: t.result[k] for k in (*METRIC_KEYS, *OPTIONAL_KEYS, "objective") if k in t.result},
        "test_metrics": test_metrics_of(t.result),
        "result": {
            "trial_id": t.trial_id, "run_dir": str(record.run_dir), "objective": t.result["objective"],
            # the objective with other unlearning seeds (seed 0 first: this run's), where run
            "over_seeds": record.over_seeds(t.trial_id),
            "components": {k: t.result[k] for k in COMPONENT_MODES if k in t.result},
            "reference": s.get("reference"), "reference_test": s.get("reference_test"),
            "original": s.get("original_model"), "original_objective": s.get("original_objective"),
        },
        "requests": requests_block(record, t),
        "holdout": holdout_block(record, t),
    }


def replay_block(record: RunRecord, t: TrialRecord, label: str | None) -> dict:
    """What `run --config` needs to give the trial's number again, and that number: the
    trial's intra-op threads (the arithmetic's order, hence its last digits, depends on them)
    and device, and its objectives on the request the run replays."""
    several = len(record.search.get("requests") or []) > 1
    key = f"{label}/" if several else ""
    return {"request": label, "threads": t.result.get("threads"), "device": t.result.get("device"),
            "objective": t.result.get(f"{key}objective"), "test_objective": t.result.get(f"{key}test_objective")}


def requests_block(record: RunRecord, t: TrialRecord) -> dict:
    """The requests the trial was tuned on, and its objectives on each (several requests)."""
    labels = [r["label"] for r in record.search.get("requests", [])]
    out = {"tuned_on": labels, "aggregate": record.search.get("aggregate", "mean")}
    if len(labels) > 1:
        out["objectives"] = {label: {"objective": t.result.get(f"{label}/objective"),
                                     "test_objective": t.result.get(f"{label}/test_objective")} for label in labels}
    return out


def holdout_block(record: RunRecord, t: TrialRecord) -> dict:
    """The trial's results on the held-out requests (test split), beside the defaults' and the
    baselines' there; empty when it was not among the configurations run on them."""
    holdout = record.holdout
    row = record.holdout_of(t.trial_id)
    if not holdout or row is None:
        return {}
    defaults = next((r for r in holdout["configs"] if r["name"] == "defaults"), None)
    return {
        "split": holdout["split"], "aggregate": holdout["aggregate"], "objective": row["holdout_objective"],
        "requests": {label: {k: v for k, v in (result or {}).items() if k in ("test_objective", "objective",
                                                                               "test_components", "error")}
                     for label, result in row["requests"].items()},
        "defaults_objective": defaults["holdout_objective"] if defaults else None,
        "baselines": holdout["baselines"],
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
