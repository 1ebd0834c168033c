"""The comparison's table: compare.csv's rows (appended one per run, so a killed comparison
loses nothing) and their Markdown summary, mean and spread per method beside the retrained
models. `tune-unlearn compare` writes them; the report page shows them."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

from ..evaluation.objective import COMPONENT_MODES
from ..search.summary import MEASURES as EXPORT_MEASURES


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# Every row is measured on the test split (final numbers) and scored against the retrained
# ensemble on it; `val_objective` is the validation split's score (what a search optimises).
COLUMNS = ["method", "config", "seed", "status", "retain_acc", "forget_acc", "forget_true_acc", "test_acc",
           "forget_test_acc", "asr", "pl_forget_acc", "mia", "mia_cv_acc", "time_s", "cost", "macs", "steps",
           *COMPONENT_MODES,
           "objective", "val_objective", "hparams"]
RETRAINED, ORIGINAL = "(retrained)", "(original)"  # the baseline rows' method names
# The table's measures: the search table's, without the competition kit's attack
MEASURES = [(k, label) for k, label in EXPORT_MEASURES if k != "mia_cv_acc"]


def append_row(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS})


def _numbers(rows: list[dict], key: str) -> list[float]:
    out = []
    for r in rows:
        try:
            value = float(r[key])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(value):
            out.append(value)
    return out


def _mean_spread(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def markdown(rows: list[dict], title: str) -> str:
    """Mean ± standard deviation over seeds per method; accuracies and MIA with their
    difference to the retrained models' mean, cost as a share of retraining. Columns for the
    forget set's true labels, the forgotten classes' test accuracy, the attack success rate and
    leakage appear when the rows have them."""
    optional = ("forget_true_acc", "forget_test_acc", "asr", "pl_forget_acc")
    measures = [(k, label) for k, label in MEASURES if k not in optional or _numbers(rows, k)]
    reference = [r for r in rows if r["method"] == RETRAINED]
    ref = {k: statistics.mean(_numbers(reference, k)) if _numbers(reference, k) else None for k, _ in measures}
    head = "| method | config | runs | " + " | ".join(label for _, label in measures) + " | cost % | time s | objective |"
    lines = [f"### {title}", "", head, "|" + "---|" * (len(measures) + 6)]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["config"]), []).append(r)
    for (method, config), group in groups.items():
        ok = [r for r in group if r["status"] == "ok"]
        cells = []
        for key, _ in measures:
            values = _numbers(ok, key)
            cell = _mean_spread(values)
            if values and ref.get(key) is not None and not method.startswith("("):
                cell += f" ({statistics.mean(values) - ref[key]:+.2f})"
            cells.append(cell)
        cells.append(_mean_spread([100 * v for v in _numbers(ok, "cost_ratio")], 1))
        cells.append(_mean_spread(_numbers(ok, "time_s")))
        failed = len(group) - len(ok)
        runs = f"{len(ok)}" + (f" (+{failed} failed)" if failed else "")
        lines.append(f"| {method} | {config} | {runs} | " + " | ".join(cells) +
                     f" | {_mean_spread(_numbers(ok, 'objective'), 3)} |")
    lines += ["", "Test split. In brackets: difference to the mean of the retrained models (accuracy and MIA points). "
              "cost %: multiply-accumulates as a share of retraining's. objective: gaps to the retrained models in "
              "units of their spread beyond the first, plus the cost ratio (0 is ideal); (retrained): each retrained "
              "model scored against the others, i.e. what a perfect unlearning scores; (original): no unlearning."]
    return "\n".join(lines) + "\n"
