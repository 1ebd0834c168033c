"""The benchmark's leaderboard: every method's tuned best, judged on the requests its search held
out, beside the original (no unlearning) and the retrained models scored against each other.
Built from the searches' run folders (search.json, holdout.json, results) and the per-example
rows (per_example.csv of commands/per_example.py); written as leaderboard.csv, leaderboard.md and
leaderboard.html (the report's page style).

A method's row is its rank-1 configuration by the tuning objective (the held-out numbers never
choose it). Its held-out objective is the mean over the held-out requests, with their standard
deviation; the measures are means over the same requests, on the test split. Verdicts:
- "ties retraining": the held-out objective is at least the retrained models' mean minus their
  standard deviation (the project's tie: within the retrained models' spread, or above it);
- "beats original": above the original's objective on every held-out request.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

from ..files import atomic_write, atomic_write_text
from ..search.results import RunRecord
from ..search.summary import fmt
from .report import Section, render_html, render_markdown

ORIGINAL, RETRAINED = "(original)", "(retrained)"
# The measures that define the task, those the experiment's references have (the corrective
# rules' forget_true_acc / asr, a class's forget_test_acc), then the general ones
TASK_MEASURES = (("retain_acc", "retain"), ("forget_acc", "forget"), ("forget_true_acc", "forget true"),
                 ("forget_test_acc", "forget test"), ("asr", "ASR"))
GENERAL_MEASURES = (("test_acc", "test"), ("mia", "MIA"))
# measured key -> its column, a share of retraining's, and the column's heading
COST_KEYS = (("cost", "cost_pct", "cost %"), ("macs", "macs_pct", "MACs %"), ("time_s", "time_pct", "time %"))
COLUMNS = ["method", "config", "trials", "holdout_objective", "holdout_objective_sd", "holdout_requests",
           "defaults_holdout_objective", "tuning_objective", "tuning_objective_seeds_mean", "tuning_objective_seeds_sd",
           "verdict", *(k for k, _ in TASK_MEASURES),
           *(k for k, _ in GENERAL_MEASURES), "example_gap", "forget_quality", "lira_auc",
           *(column for _, column, _ in COST_KEYS), "time_s"]


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _sd(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.stdev(values) if len(values) > 1 else None


def _references(record: RunRecord, labels: list[str]) -> dict[str, dict]:
    """label -> the held-out request's test-split baselines (reference means, the original, the
    retrained models' metrics, objectives and per-example gaps)."""
    refs = record.search["request_references"]
    return {label: refs[label]["baselines"]["test"] for label in labels}


def method_row(record: RunRecord, per_example: dict[str, dict]) -> dict:
    """The leaderboard row of one search: its rank-1 configuration on the held-out requests."""
    holdout = record.holdout or {}
    labels = holdout.get("requests", [])
    configs = holdout.get("configs", [])
    best = record.holdout_best()
    defaults = next((c for c in configs if c["name"] == "defaults"), {})
    method = record.search["method"]
    row = {"method": method, "trials": f"{len(record.finished)}/{record.search['num_samples']}"}
    if best is None:
        return {**row, "config": "no finished trial", "verdict": "-"}
    results = [best["requests"].get(label) or {} for label in labels]
    objectives = [r.get("test_objective") for r in results]
    refs = _references(record, labels)
    row.update(config=f"rank 1 ({best['trial_id']})", holdout_objective=best.get("holdout_objective"),
               holdout_objective_sd=_sd(objectives), holdout_requests=" ".join(labels),
               defaults_holdout_objective=defaults.get("holdout_objective"),
               tuning_objective=(best.get("tuning") or {}).get("objective"))
    over = record.over_seeds(best["trial_id"]) or {}  # what chose it, where the search re-ran its best
    row.update(tuning_objective_seeds_mean=over.get("mean"), tuning_objective_seeds_sd=over.get("sd"),
               tuning_seeds=len(over.get("objectives", [])) or 1)
    for key, _ in (*TASK_MEASURES, *GENERAL_MEASURES):
        row[key] = _mean(r.get("test_metrics", {}).get(key) for r in results)
    row["example_gap"] = _mean(r.get("test_components", {}).get("example_gap") for r in results)
    for key, column, _ in COST_KEYS:
        shares = [100 * r["test_metrics"][key] / refs[label]["reference"][key]
                  for r, label in zip(results, labels)
                  if r.get("test_metrics", {}).get(key) is not None and refs[label]["reference"].get(key)]
        row[column] = _mean(shares)
    row["time_s"] = _mean(r.get("test_metrics", {}).get("time_s") for r in results)
    row["verdict"] = verdict(objectives, refs, labels)
    row.update(_per_example(per_example.get(method)))
    return row


def verdict(objectives: list, refs: dict, labels: list[str]) -> str:
    if any(o is None for o in objectives) or not objectives:
        return "failed on a held-out request"
    retrained = [o for label in labels for o in refs[label]["retrained"]["objectives"]]
    words = []
    if retrained:
        floor = statistics.fmean(retrained) - (statistics.stdev(retrained) if len(retrained) > 1 else 0.0)
        words.append("ties retraining" if statistics.fmean(objectives) >= floor else "below retraining")
    beats = all(o > refs[label]["original"]["objective"] for o, label in zip(objectives, labels))
    words.append("beats original" if beats else "does not beat original")
    return ", ".join(words)


def _per_example(row: dict | None) -> dict:
    if not row:
        return {}
    return {"forget_quality": _number(row.get("forget_quality")), "lira_auc": _number(row.get("lira_auc"))}


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def baseline_rows(record: RunRecord, per_example: dict[str, dict]) -> list[dict]:
    """The original's row (no unlearning) and the retrained models' (each scored against the
    others of its request) on the same held-out requests, as `record`'s search scored them (the
    searches share the cached references; their prices may differ in the last digits)."""
    holdout = record.holdout or {}
    labels = holdout.get("requests", [])
    refs = _references(record, labels)
    original = {"method": ORIGINAL, "config": "no unlearning", "holdout_requests": " ".join(labels)}
    originals = [refs[label]["original"]["objective"] for label in labels]
    original.update(holdout_objective=_mean(originals), holdout_objective_sd=_sd(originals))
    retrained = {"method": RETRAINED, "config": "each against the others", "holdout_requests": " ".join(labels)}
    objectives = [o for label in labels for o in refs[label]["retrained"]["objectives"]]
    retrained.update(holdout_objective=_mean(objectives), holdout_objective_sd=_sd(objectives))
    for key, _ in (*TASK_MEASURES, *GENERAL_MEASURES):
        original[key] = _mean(refs[label]["original"]["metrics"].get(key) for label in labels)
        retrained[key] = _mean(refs[label]["reference"].get(key) for label in labels)
    original["example_gap"] = _mean(refs[label]["original"]["components"].get("example_gap") for label in labels)
    retrained["example_gap"] = _mean(g for label in labels for g in refs[label]["retrained"].get("example_gaps") or [])
    original.update(cost_pct=0.0, macs_pct=0.0, time_pct=0.0, time_s=0.0)
    retrained.update(cost_pct=100.0, macs_pct=100.0, time_pct=100.0,
                     time_s=_mean(refs[label]["reference"].get("time_s") for label in labels))
    original.update(_per_example(per_example.get("original")))
    retrained.update(_per_example(per_example.get("retrain")))
    return [original, retrained]


def leaderboard(records: list[RunRecord], per_example_rows: list[dict]) -> list[dict]:
    """Every method's row, best held-out objective first, then the original and the retrained models."""
    per_example = {r["method"]: r for r in per_example_rows}
    rows = [method_row(record, per_example) for record in records]
    rows.sort(key=lambda r: -r["holdout_objective"] if r.get("holdout_objective") is not None else float("inf"))
    return rows + (baseline_rows(records[0], per_example) if records else [])


def _present(rows: list[dict], measures) -> list[tuple[str, str]]:
    return [(k, label) for k, label in measures if any(r.get(k) is not None for r in rows)]


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and cells as the Markdown and HTML pages show them."""
    measures = _present(rows, (*TASK_MEASURES, *GENERAL_MEASURES))
    header = ["method", "configuration", "trials", "tuning obj. (seeds)", "held-out obj.", "defaults' held-out obj.",
              "verdict",
              *(label for _, label in measures), "example gap", "F", "LiRA AUC", *(label for _, _, label in COST_KEYS)]
    cells = []
    for r in rows:
        objective = fmt(r.get("holdout_objective"), 3)
        if r.get("holdout_objective_sd") is not None:
            objective += f" ± {r['holdout_objective_sd']:.3f}"
        tuning = fmt(r.get("tuning_objective_seeds_mean", r.get("tuning_objective")), 3)
        if r.get("tuning_objective_seeds_sd") is not None:
            tuning += f" ± {r['tuning_objective_seeds_sd']:.3f} ({r['tuning_seeds']})"
        cells.append([r["method"], r.get("config", ""), r.get("trials", ""), tuning, objective,
                      fmt(r.get("defaults_holdout_objective"), 3), r.get("verdict", ""),
                      *(fmt(r.get(k)) for k, _ in measures), fmt(r.get("example_gap"), 3),
                      fmt(r.get("forget_quality"), 3), fmt(r.get("lira_auc"), 3),
                      *(fmt(r.get(column), 1) for _, column, _ in COST_KEYS)])
    return header, cells


NOTE = ("tuning obj. (seeds): the objective on the tuning requests' validation split that chose the configuration, "
        "mean ± sd over the unlearning seeds the search ran it with (in brackets). held-out obj.: the objective on the test split of requests no search tuned on, mean ± sd over them (0 is "
        "ideal; gaps to the retrained models in units of their spread beyond the first, the per-example gap, the cost "
        "ratio); each method's row is its rank-1 configuration by the tuning objective. defaults' held-out obj.: the "
        "method at its defaults on the same requests. Measures: means over the held-out requests (accuracies and MIA "
        "in %). F and LiRA AUC: per example, on the first held-out request (1 and 0.5 are ideal). cost %: the priced "
        "cost (a time estimate), MACs % and time % (wall time): shares of retraining. (retrained): the retrained "
        "models, each scored against the others of its request (what a perfect unlearning scores); (original): no "
        "unlearning.")


def write(out: Path, rows: list[dict], title: str, facts: list[str]) -> dict[str, Path]:
    """leaderboard.csv, leaderboard.md and leaderboard.html in `out`."""
    paths = {kind: out / f"leaderboard.{kind}" for kind in ("csv", "md", "html")}

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for r in rows:
                writer.writerow({k: "" if r.get(k) is None else r[k] for k in COLUMNS})

    atomic_write(paths["csv"], write_csv)
    section = Section("Leaderboard").table(*table(rows)).text(NOTE)
    for fact in facts:
        section.text(fact)
    atomic_write_text(paths["md"], render_markdown(title, [section]))
    atomic_write_text(paths["html"], render_html(title, [section]))
    return paths
