"""`compare --per-example N`: per-example evaluation from ensembles of N models (ensembles.py)
with the statistics of evaluation/per_example/ (the competition's forgetting quality, a
likelihood-ratio attack). One row per ensemble: forgetting quality, the competition's score and
the attack, written to per_example.csv (the table) and per_example.json (the per-example
epsilons and ROC curves the report draws) in compare's output directory.

Cost: besides the comparison it trains N - 1 original models and N - K retrained models (K:
the references' own) once, and runs every method N times; all of it is cached, so a rerun or a
larger N only adds what is missing.

Every row is measured against the same retrained models. The N retrained models are split in
halves of h = N // 2: the first half is the reference every F is computed against; the
second is the held-out half whose F is the `retrain` row (what a perfect unlearning scores,
the ideal). F compares equally many models per side, and its value depends strongly on that
number (quality.py), so every row uses h per side: an ensemble of N models is scored as its
halves (models 0..h-1 and h..2h-1) against the reference, and F is their mean; its eps
histogram pools both halves. F needs h >= 3 (N >= 6): with fewer models per side no bin
fits below ceil(ln(h - 1)) and the row's F is left empty. RA/TA and RA_R/TA_R of the
competition's score are the means of the row's models and of the reference half.
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..data.experiment import Experiment
from ..pipeline import prepare
from ..files import atomic_write, atomic_write_text, log_stderr
from ..runtime import Runtime
from .ensembles import Ensemble, reference_ensemble, unlearned_ensemble
from ..evaluation.per_example.limits import MIN_MODELS
from ..evaluation.per_example.lira import Attack, LiRA
from ..evaluation.per_example.quality import bin_count, competition_score, forget_quality

COLUMNS = ["method", "config", "forget_quality", "competition_score", "lira_auc", "lira_tpr_at_1fpr",
           "lira_tpr_at_01fpr", "n_models", "seconds"]
ORIGINAL, RETRAIN = "original", "retrain"


class Scorer:
    """F against the reference half and the fitted attack, shared by every row."""

    def __init__(self, originals: Ensemble, retrained: Ensemble):
        confs = retrained.matrix()
        self.per_side = len(confs) // 2
        h = self.per_side
        self.reference, self.heldout = confs[:h], confs[h:2 * h]
        self.retain_ref = statistics.fmean(retrained.retain_acc[:h])
        self.test_ref = statistics.fmean(retrained.test_acc[:h])
        self.lira = LiRA(originals.matrix(), confs)

    def quality(self, confs: np.ndarray) -> tuple[float | None, np.ndarray]:
        """Mean F of the h-model halves of `confs` against the reference; the eps pooled."""
        h = self.per_side
        if bin_count(h) == 0 or len(confs) < h:
            return None, np.array([])
        results = [forget_quality(confs[k * h:(k + 1) * h], self.reference) for k in range(len(confs) // h)]
        return statistics.fmean(f for f, _ in results), np.concatenate([eps for _, eps in results])


def row(method: str, config: str, ensemble: Ensemble, quality: float | None, attack: Attack | None,
        scorer: Scorer, retain_acc: list[float], test_acc: list[float], seconds: float) -> dict:
    score = None
    if quality is not None:
        score = competition_score(quality, statistics.fmean(retain_acc), statistics.fmean(test_acc),
                                  scorer.retain_ref, scorer.test_ref)
    return {"method": method, "config": config, "forget_quality": quality, "competition_score": score,
            "lira_auc": attack.auc if attack else None,
            "lira_tpr_at_1fpr": attack.tpr_at[0.01] if attack else None,
            "lira_tpr_at_01fpr": attack.tpr_at[0.001] if attack else None,
            "n_models": len(ensemble.confs), "seconds": seconds}


def _curve(values: np.ndarray, digits: int = 5) -> list[float]:
    return [round(float(v), digits) for v in values]


def evaluate(runs: list, exp: Experiment, runtime: Runtime, cache_dir: str | Path, n: int,
             download: bool = False, log: Callable[[str], None] = log_stderr) -> tuple[list[dict], dict]:
    """Rows (original, retrain, then each (method, config label, resolved run) of `runs`) and
    the per-example details, for N models per ensemble on `exp`'s forget set."""
    if n < MIN_MODELS:
        raise ValueError(f"N >= {MIN_MODELS} models per ensemble needed, got {n}")
    prepared = prepare(exp, runtime, cache_dir, download=download, log=log)
    originals, ids = reference_ensemble(prepared, cache_dir, "original", n, log)
    retrained, _ = reference_ensemble(prepared, cache_dir, "retrain", n, log)
    log(f"per-example: {n} original and {n} retrained models ({originals.new} and {retrained.new} trained now)")
    started = time.perf_counter()
    scorer = Scorer(originals, retrained)
    h, s = scorer.per_side, exp.train.seed
    shared = time.perf_counter() - started
    details = {"experiment": exp.name, "forget": exp.forget.describe(), "n_models": n, "per_side": h,
               "bins": bin_count(h), "forget_examples": len(prepared.data.forget), "device": runtime.describe(),
               "rows": {}}
    rows = []

    def add(method: str, config: str, ensemble: Ensemble, measure: Callable[[], tuple], accs: tuple, made: float):
        clock = time.perf_counter()
        quality, eps, attack = measure()
        r = row(method, config, ensemble, quality, attack, scorer, *accs, made + time.perf_counter() - clock)
        rows.append(r)
        details["rows"][label(r)] = {"epsilon": _curve(eps, 3), "forget_quality": quality,
                                     "roc": {"fpr": _curve(attack.fpr), "tpr": _curve(attack.tpr),
                                             "auc": attack.auc} if attack else None,
                                     "n_models": r["n_models"], "failed": ensemble.failed}

    add(ORIGINAL, f"train seeds {s}..{s + n - 1}", originals,
        lambda: (*scorer.quality(originals.matrix()), scorer.lira.evaluate_original()),
        (originals.retain_acc, originals.test_acc), originals.seconds + shared)
    add(RETRAIN, f"seeds {s + h}..{s + 2 * h - 1} vs {s}..{s + h - 1}", retrained,
        lambda: (*scorer.quality(scorer.heldout), scorer.lira.evaluate_retrained()),
        (retrained.retain_acc[h:2 * h], retrained.test_acc[h:2 * h]), retrained.seconds)
    for method, config, run in runs:
        log(f"per-example: {method} ({config}), {n} seeds")
        ensemble = unlearned_ensemble(prepared, cache_dir, run, f"{method} ({config})", n, ids[0], log)
        for failure in ensemble.failed:
            log(f"per-example: {method} ({config}) {failure}")
        if not ensemble.confs:
            rows.append(row(method, config, ensemble, None, None, scorer, [], [], ensemble.seconds))
            continue
        add(method, config, ensemble,
            lambda e=ensemble: (*scorer.quality(e.matrix()), scorer.lira.evaluate(e.matrix())),
            (ensemble.retain_acc, ensemble.test_acc), ensemble.seconds)
    return rows, details




def label(r: dict) -> str:
    """How the report names a row."""
    return r["method"] if r["method"] in (ORIGINAL, RETRAIN) or r["config"] == "default" else f"{r['method']} ({r['config']})"


def _cell(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(rows: list[dict], details: dict) -> str:
    """The rows as a Markdown table, N and the per-side count in the heading and every row."""
    n, h = details["n_models"], details["per_side"]
    lines = [f"### Per-example evaluation: {details['experiment']}, forget {details['forget']}, N = {n} models per "
             f"ensemble, on {details['device']}", "",
             "| method | config | F | competition score | LiRA AUC | TPR @ 1% FPR | TPR @ 0.1% FPR | N | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['config']} | {_cell(r['forget_quality'])} | {_cell(r['competition_score'])} | "
                     f"{_cell(r['lira_auc'])} | {_cell(r['lira_tpr_at_1fpr'])} | {_cell(r['lira_tpr_at_01fpr'])} | "
                     f"{r['n_models']} | {r['seconds']:.1f} |")
    f_note = (f"F: the competition's forgetting quality (1 is best) of halves of {h} models against the same {h} "
              f"retrained models ({details['bins']} bins of eps, up to {details['bins'] / 2:g}; the competition used 512 "
              f"models per side), on the {details['forget_examples']} forget examples; retrain: the other {h} retrained "
              "models, the ideal at this N." if details["bins"] else
              f"F: not computed: halves of {h} models per side leave no bin below ceil(ln({h} - 1)) (needs N >= 6).")
    lines += ["", f_note + " Competition score: F x RA/RA_R x TA/TA_R (test split). LiRA: likelihood-ratio attack, "
              "positives the row's models, negatives held-out retrained models (AUC 0.5 = indistinguishable from "
              "retraining; below 0.5: less member-like than retraining, also a difference). N = "
              f"{n} models per ensemble. seconds: time spent on the row in this run (the original and retrain rows "
              "include training their ensembles)."]
    return "\n".join(lines) + "\n"


def write(out: Path, rows: list[dict], details: dict) -> tuple[Path, Path]:
    """per_example.csv and per_example.json in `out`."""
    csv_path, json_path = out / "per_example.csv", out / "per_example.json"

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            for r in rows:
                writer.writerow({k: "" if r[k] is None else round(r[k], 6) if isinstance(r[k], float) else r[k]
                                 for k in COLUMNS})

    atomic_write(csv_path, write_csv)
    atomic_write_text(json_path, json.dumps(details))
    return csv_path, json_path


def run(out: Path, runs: list, exp: Experiment, runtime: Runtime, cache_dir: str | Path, n: int,
        download: bool = False, log: Callable[[str], None] = log_stderr) -> list[dict]:
    """compare --per-example N: evaluate, write per_example.csv/.json in `out`, print the table."""
    started = time.perf_counter()
    rows, details = evaluate(runs, exp, runtime, cache_dir, n, download, log)
    csv_path, json_path = write(out, rows, details)
    print(markdown(rows, details))
    print(f"per-example rows: {csv_path}\nper-example details: {json_path}\n"
          f"per-example evaluation took {time.perf_counter() - started:.1f} s (N = {n})")
    return rows
