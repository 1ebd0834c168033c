"""The closing text of a search: the best trials beside the retrained and the original model,
and where everything is (table, summary)."""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

from ..evaluation.objective import aggregate
from .export import test_metrics_of
from .results import STUDY_FILE, RunRecord


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
    holdout = record.holdout is not None
    seeds = len((record.reseeds or {}).get("seeds", []))
    header = ["rank", "trial", "objective", *([f"obj. over {seeds} seeds"] if seeds else []), "test obj.",
              *(["held-out obj."] if holdout else []),
              *(label for _, label in measures), "cost %", "MACs %", "steps", "time s", *record.params]
    rows = []

    def percent(result: dict, key: str) -> float | None:
        """A trial's `key` (the estimated cost, MACs) in % of the retrained models' training."""
        return 100 * result[key] / reference[key] if reference.get(key) and key in result else None

    for i, t in enumerate(record.ranked()[:top], 1):
        test = test_metrics_of(t.result)
        held = [fmt((record.holdout_of(t.trial_id) or {}).get("holdout_objective"), 3)] if holdout else []
        over = [over_seeds_cell(record, t.trial_id)] if seeds else []
        rows.append([str(i), t.trial_id, fmt(t.result["objective"], 3), *over, fmt(t.result.get("test_objective"), 3), *held,
                     *(fmt(test.get(k)) for k, _ in measures), fmt(percent(t.result, "cost"), 1),
                     fmt(percent(t.result, "macs"), 1), fmt(t.result.get("steps"), 0), fmt(t.result.get("time_s")),
                     *(fmt(t.config.get(p), 4) for p in record.params)])
    if baselines:
        val, test = baselines["val"], baselines["test"]
        retrained = test["retrained"]["metrics"]
        held = holdout_baselines(record.holdout) if holdout else None
        rows.append(["", f"retrained ({len(retrained)})", fmt_spread(val["retrained"]["objectives"], 3), *([""] if seeds else []),
                     fmt_spread(test["retrained"]["objectives"], 3), *([fmt_spread(held[1], 3)] if held else []),
                     *(fmt_spread([m.get(k) for m in retrained]) for k, _ in measures), "100.0", "100.0",
                     fmt(reference.get("steps"), 0), fmt_spread([m.get("time_s") for m in retrained]), *("" for _ in record.params)])
        original = test["original"]["metrics"]
        rows.append(["", "original", fmt(val["original"]["objective"], 3), *([""] if seeds else []),
                     fmt(test["original"]["objective"], 3),
                     *([fmt(held[0], 3)] if held else []),
                     *(fmt(original.get(k)) for k, _ in measures), "0.0", "0.0", "0", "0.00", *("" for _ in record.params)])
    return header, rows


def over_seeds_cell(record: RunRecord, trial_id: str) -> str:
    """A trial's objective over unlearning seeds as the tables show it: mean ± sd, 'failed', or
    '-' for a trial run once."""
    over = record.over_seeds(trial_id)
    if not over:
        return "-"
    if over.get("failed"):
        return "failed"
    return fmt_spread(over["objectives"], 3)


def holdout_baselines(holdout: dict) -> tuple[float | None, list[float]]:
    """The original's held-out objective (aggregated over the held-out requests) and the
    retrained models' (each against the others of its request), on the test split."""
    baselines = holdout.get("baselines", {})
    originals = [b["original"] for b in baselines.values()]
    aggregated = aggregate(originals, holdout["aggregate"]) if originals and len(originals) == len(holdout["requests"]) else None
    return aggregated, [v for b in baselines.values() for v in b["retrained"]]


def holdout_table(record: RunRecord) -> tuple[list[str], list[list[str]]]:
    """Header and rows: each configuration run on the held-out requests (the best trials, the
    defaults) with its tuning objectives beside its test objective on each held-out request and
    their aggregate; then the retrained models and the original on the same requests."""
    holdout = record.holdout or {}
    labels = holdout.get("requests", [])
    header = ["configuration", "tuning obj.", "tuning test obj.", *labels, "held-out obj."]
    rows = []
    for row in holdout.get("configs", []):
        name = row["name"] + (f" ({row['trial_id']})" if row.get("trial_id") else "")
        if row.get("same_as"):
            name += f" = {row['same_as']}"
        tuning = row.get("tuning") or {}
        cells = []
        for label in labels:
            result = row["requests"].get(label) or {}
            cells.append("failed" if "error" in result else fmt(result.get("test_objective"), 3))
        rows.append([name, fmt(tuning.get("objective"), 3), fmt(tuning.get("test_objective"), 3), *cells,
                     fmt(row.get("holdout_objective"), 3)])
    baselines = holdout.get("baselines", {})
    if baselines:
        original, retrained = holdout_baselines(holdout)
        val, test = record.search["baselines"]["val"], record.search["baselines"]["test"]
        rows.append(["retrained, each against the others", fmt_spread(val["retrained"]["objectives"], 3),
                     fmt_spread(test["retrained"]["objectives"], 3),
                     *(fmt_spread(baselines.get(label, {}).get("retrained", []), 3) for label in labels),
                     fmt_spread(retrained, 3)])
        rows.append(["original (no unlearning)", fmt(val["original"]["objective"], 3), fmt(test["original"]["objective"], 3),
                     *(fmt(baselines.get(label, {}).get("original"), 3) for label in labels), fmt(original, 3)])
    return header, rows


def aligned(head: list[str], rows: list[list[str]]) -> str:
    """A table as aligned text for the terminal."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def table(record: RunRecord, top: int = 5) -> str:
    """best_table as aligned text for the terminal."""
    return aligned(*best_table(record, top))


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
    timed = record.timed
    if timed:
        overhead = [r["trial_time_s"] - r["time_s"] * r.get("requests", 1) for r in timed]  # time_s: per request
        trial_s = [r["trial_time_s"] for r in timed]
        lines.append(f"mean trial {sum(trial_s) / len(trial_s):.2f} s, of which outside the unlearning "
                     f"(data, evaluation, reporting) {sum(overhead) / len(overhead):.2f} s")
    for t in record.trials:
        if t.status == "ERROR":
            lines.append(f"failed trial {t.trial_id}: {t.error}")
    if record.ranked():
        lines += ["", table(record, top)]
        if record.reseeds:
            seeds, again = len(record.reseeds["seeds"]), len(record.reseeds["trials"])
            lines.append(f"ranked: the {again} best by their own run were run again with other unlearning seeds, and "
                         f"go first by their mean over {seeds} seeds (obj. over {seeds} seeds, mean ± sd)")
        if record.holdout:
            holdout = record.holdout
            lines += ["", f"held-out requests (never tuned on; objective on each one's test split, {holdout['aggregate']} "
                          f"over them in the last column; the best configuration was chosen on the tuning requests alone):",
                      aligned(*holdout_table(record))]
        lines += ["", f"best config: {run_dir / 'best_config.yaml'}",
                  f"re-run it:   python -m tune_unlearn run --config {run_dir / 'best_config.yaml'}"]
    lines.append(f"all trials:  {run_dir / 'results.csv'}")
    if (run_dir / "pareto.csv").exists():
        lines.append(f"pareto front: {run_dir / 'pareto.csv'}")
    lines.append(f"tensorboard --logdir {run_dir}")
    if record.search.get("optuna_storage"):
        lines.append(f"optuna study: optuna-dashboard {record.search['optuna_storage']} (study {record.search['study_name']})")
    elif (run_dir / STUDY_FILE).exists():
        lines.append(f"optuna study: optuna-dashboard sqlite:///{run_dir.resolve() / STUDY_FILE}")
    if record.search.get("mlflow"):
        lines.append(f"mlflow runs:  mlflow ui --backend-store-uri {record.search['mlflow']}")
    if record.interrupted:
        lines.append(f"the search was interrupted; continue it with: python -m tune_unlearn.search "
                     f"--storage-path {run_dir.parent} --name {run_dir.name} --resume")
    return "\n".join(lines)
