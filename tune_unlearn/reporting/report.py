"""One report per search: `report/index.html` (opens offline) and `report/report.md`, built
from the same sections, with PNG pictures beside them.

Sections: the best trials beside the retrained and original models; the objective over trials
(and the Pareto front of a multi-objective search); hyperparameter importance and the
objective against each searched hyperparameter; the paper's Figure 4 (radar of the five
measures per method, from a compare.csv) and, when compare --per-example wrote its
per_example.csv beside that file, the per-example evaluation (per-example eps histograms,
the likelihood-ratio attack's ROC curves); the paper's Figure 3 (zero mask entries over
mask-learning epochs, best trial); each trial's curves over its evaluated epochs.
"""

from __future__ import annotations

import html
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from . import plots
from .importance import importances
from ..search.results import RunRecord, load_run
from ..search.summary import best_table, fmt, holdout_table
from ..search.export import pareto_front
from ..search.trial_files import HISTORY, method_logs


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)  # ("p", text) | ("table", header, rows) | ("img", file, caption)

    def text(self, value: str) -> "Section":
        self.blocks.append(("p", value))
        return self

    def table(self, header: list[str], rows: list[list[str]]) -> "Section":
        self.blocks.append(("table", header, rows))
        return self

    def image(self, path: Path, root: Path, caption: str) -> "Section":
        """A picture, referenced relative to the report directory `root`."""
        self.blocks.append(("img", path.relative_to(root).as_posix(), caption))
        return self


# --------------------------------------------------------------------------- sections


def best_trials(record: RunRecord, top: int) -> Section:
    s = Section("Best trials beside the retrained and the original model")
    s.table(*best_table(record, top))
    s.text("objective: what the search maximised, on the validation split: the gaps to the retrained models in units "
           "of their spread beyond the first, plus the cost ratio (0 is ideal), over the tuning requests; test obj.: the "
           "same on the test split; held-out obj. (where run): on the requests the search held out (test split). "
           "The measures are the test split's (final numbers). retrained (K): K models retrained with different seeds, "
           "mean ± sd, each scored against the others (what a perfect unlearning scores); original: no unlearning "
           "(time and cost 0). Accuracies and MIA in %; MIA: share of the forget set an attack trained on retain vs "
           "held-out samples calls members; MIA cv: the competition kit's forget-vs-held-out attack accuracy "
           "(50 = indistinguishable); forget test: the forgotten classes' test samples (class forgetting); PL forget: "
           "forget accuracy a Piggyback mask recovers (leakage); cost %: multiply-accumulates as a share of "
           "retraining's; time: unlearning wall time (retrained: training time).")
    return s


def holdout_section(record: RunRecord) -> Section:
    s = Section("Tuning against held-out requests")
    s.table(*holdout_table(record))
    tuned = ", ".join(r["label"] for r in record.search.get("requests", []))
    s.text(f"Tuned on the requests {tuned}; the held-out requests were never seen by the searcher. Each configuration "
           "(the best trials by the tuning objective, and the method's defaults) ran once on every held-out request, "
           "scored on its test split; held-out obj. is their "
           f"{record.holdout['aggregate']}. The best configuration is the one with the best tuning objective: the "
           "held-out scores say how it carries over to new deletion requests and are not used to choose it. "
           "retrained: each retrained model of the request scored against the others; original: no unlearning.")
    return s


def search_progress(record: RunRecord, out: Path) -> Section:
    s = Section("The search")
    finished = sorted(record.finished, key=lambda t: t.result.get("timestamp") or 0)
    if not finished:
        return s.text("No trial has finished yet.")
    best = record.ranked()[0]
    val = (record.search.get("baselines") or {}).get("val")
    baselines = {}
    if val:
        if val["retrained"]["objectives"]:
            baselines["retrained, each against the others"] = statistics.fmean(val["retrained"]["objectives"])
        baselines["original (no unlearning)"] = val["original"]["objective"]
    path = plots.objective_over_trials([t.result["objective"] for t in finished], [t.trial_id for t in finished],
                                       best.trial_id, out / "objective.png", baselines)
    s.image(path, out, f"Objective (validation split) of each finished trial and the best so far; the chosen trial "
                       f"({best.trial_id}) circled; dashed: the baselines scored the same way.")
    if record.search.get("multi_objective"):
        front = {t.trial_id for t in pareto_front(record)}
        points = {t.trial_id: t.result for t in finished}
        path = plots.pareto_front(points, front, best.trial_id, out / "pareto.png")
        s.image(path, out, f"Multi-objective search over {', '.join(record.search['objectives'])}: the {len(front)} trials no "
                      "other trial dominates (Pareto front), validation accuracy against the forget gap, coloured by "
                      "the cost ratio; the star is the trial with the best weighted objective.")
    return s


def importance_section(record: RunRecord, out: Path) -> Section:
    s = Section("Hyperparameter importance")
    finished = record.finished
    params = record.search["params"]
    table, failed = importances(params, [(t.config, t.result["objective"]) for t in finished])
    if table:
        path = plots.importances(table, out / "importance.png")
        s.image(path, out, "Importance of each searched hyperparameter for the objective, by Optuna's evaluators "
                      f"(on {len(finished)} finished trials).")
        names = list(table)
        order = sorted(params, key=lambda p: -max(table[n].get(p, 0.0) for n in names))
        s.table(["hyperparameter", *names], [[p, *(fmt(table[n].get(p), 3) for n in names)] for p in order])
    for name, why in failed.items():
        s.text(f"{name}: not computed ({why}).")
    if finished:
        samples = {p: [t.config.get(p) for t in finished] for p in params}
        log_params = {p for p, spec in params.items() if spec["type"].startswith("log")}
        path = plots.objective_vs_params(samples, [t.result["objective"] for t in finished], log_params,
                                         record.ranked()[0].config, out / "params.png")
        s.image(path, out, "Objective against each searched hyperparameter (one dot per finished trial, the best starred).")
    return s


def radar_section(compare_csv: Path, out: Path) -> Section:
    from .comparison import markdown, read_rows

    s = Section("Methods compared (the paper's Figure 4)")
    rows = read_rows(compare_csv)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["status"] == "ok" and not r["method"].startswith("("):
            label = r["method"] if r["config"] == "default" else f"{r['method']} ({r['config']})"
            groups.setdefault(label, []).append(r)
    keys = ("retain_acc", "forget_acc", "test_acc", "mia", "time_s")
    means = {label: {k: statistics.mean(float(r[k]) for r in group) for k in keys} for label, group in groups.items()}
    if means:
        path = plots.radar(means, out / "radar.png")
        s.image(path, out, "Retain, forget and test accuracy, MIA and time of each method, each normalised to [0, 1] by "
                      "the best method (the largest value; for time the fastest), as in the paper's Figure 4. For "
                      "forget accuracy and MIA, larger is not better: the ideal is the retrained model's value, "
                      "given in the table below.")
    table = markdown(rows, f"from {compare_csv}")
    s.blocks.append(("markdown-table", table))
    return s


def per_example_section(compare_csv: Path, out: Path) -> Section | None:
    """compare --per-example's results, when its per_example.csv sits beside the compare.csv."""
    from .comparison import read_rows
    from ..evaluation.per_example.quality import BIN_WIDTH

    csv_path, json_path = compare_csv.parent / "per_example.csv", compare_csv.parent / "per_example.json"
    if not csv_path.exists() or not json_path.exists():
        return None
    rows, details = read_rows(csv_path), json.loads(json_path.read_text())
    n, h = details["n_models"], details["per_side"]
    s = Section(f"Per example: forgetting quality and a likelihood-ratio attack (N = {n})")
    measures = ("forget_quality", "competition_score", "lira_auc", "lira_tpr_at_1fpr", "lira_tpr_at_01fpr")
    s.table(["method", "config", "F", "competition score", "LiRA AUC", "TPR @ 1% FPR", "TPR @ 0.1% FPR", "N", "seconds"],
            [[r["method"], r["config"], *(f"{float(r[k]):.3f}" if r[k] else "-" for k in measures),
              r["n_models"], f"{float(r['seconds']):.1f}"] for r in rows])
    s.text(f"{details['experiment']}, forget {details['forget']} ({details['forget_examples']} examples); N = {n} "
           f"models per ensemble: original models (training seeds), retrained models, and each method run with "
           f"{n} seeds from the same original model. F: the NeurIPS 2023 competition's forgetting quality (1 is best): "
           f"per forget example, the eps that the best threshold test on its logit-scaled confidence gives between "
           f"unlearned and retrained models, scored 2^-k in bin k of width {BIN_WIDTH:g}. Every row is scored as halves "
           f"of {h} models against the same {h} retrained models; retrain: the other {h} retrained models (the ideal "
           f"at this N, well below 1 with few models). The competition used 512 models per side; with {h} per side "
           f"eps is coarse and only rows of one table compare. Competition score: F x RA/RA_R x TA/TA_R. LiRA: "
           f"likelihood ratio of per-example Gaussians fit on the original and on held-out retrained models; AUC 0.5 "
           f"= indistinguishable from retraining, below 0.5 = less member-like than retraining (also a difference).")
    with_eps = {name: r for name, r in details["rows"].items() if r["epsilon"]}
    if with_eps and details["bins"]:
        path = plots.epsilon_histograms(with_eps, details["bins"], BIN_WIDTH, out / "per_example_epsilon.png")
        s.image(path, out, f"Per-example eps (both halves of each ensemble pooled; N = {n}, {h} models per side): share "
                      f"of the forget examples per bin, each bin's score in brackets; F is the mean score.")
    else:
        s.text(f"F not computed: with {h} models per side no eps bin scores (needs N >= 6).")
    curves = {name: r["roc"] for name, r in details["rows"].items() if r["roc"]}
    if curves:
        path = plots.roc_curves(curves, out / "per_example_roc.png")
        s.image(path, out, f"ROC of the likelihood-ratio attack per row (N = {n}): positives the row's models on every "
                      "forget example, negatives held-out retrained models; left linear, right log axes (the low "
                      "false-positive end is what matters for privacy).")
    return s


def mask_section(record: RunRecord, out: Path) -> Section | None:
    best = record.ranked()[0] if record.finished else None
    if best is None:
        return None
    history_file = Path(best.path) / HISTORY
    if not history_file.exists():
        return None
    history = json.loads(history_file.read_text())
    mask = [h for h in history if h.get("phase") == "mask" and "mask_zero_share" in h]
    if not mask:
        return None
    s = Section("Zero mask entries during mask learning (the paper's Figure 3)")
    path = plots.mask_zero_share([h["epoch"] for h in mask], [h["mask_zero_share"] for h in mask],
                                 best.result.get("mask_zero_share_scope"), out / "mask_zero_share.png")
    s.image(path, out, f"Best trial {best.trial_id}: share of mask entries below the threshold after each epoch of mask "
                  f"learning on the forget set (the paper saw it level off near 88% on ImageNet-100).")
    return s


def curves_section(record: RunRecord, out: Path) -> Section:
    s = Section("Each trial's curves")
    reference = record.search.get("reference") or {}
    # per-epoch reports: validation; the corrective rules' measures where the experiment has them
    keys = {"val_acc": "val", "forget_acc": "forget", "forget_true_acc": "forget true", "asr": "ASR",
            "retain_acc": "retain"}
    shown = 0
    for t in sorted(record.trials, key=lambda t: -(t.result.get("objective") or -1e9)):
        epochs = [r for r in t.history if r.get("final") == 0]
        if not epochs:  # one report per trial: the method's own per-epoch log instead
            shown += method_log_curves(s, t, out)
            continue
        shown_keys = {k: label for k, label in keys.items() if k in epochs[0]}
        series = {label: [r[k] for r in epochs] for k, label in shown_keys.items()}
        path = plots.training_curves([r["epoch"] for r in epochs], series,
                                     {label: reference[k] for k, label in shown_keys.items() if k in reference},
                                     f"{t.trial_id} ({t.status.lower()}), objective {fmt(t.result.get('objective'), 4)}",
                                     out / "curves" / f"{t.trial_id}.png")
        s.image(path, out, f"Trial {t.trial_id}: validation-split accuracies after each evaluated epoch (dashed: mean of the retrained models).")
        shown += 1
    if not shown:
        s.text("No trial reported per-epoch states or logs (the method has none, or no trial got that far).")
    return s


def method_log_curves(s: Section, t, out: Path) -> int:
    """The method's own log of every epoch (history.json: losses and the like, every phase in
    turn on one epoch count), for trials that reported only at the end; 1 if drawn."""
    history_file = Path(t.path) / HISTORY
    history = json.loads(history_file.read_text()) if history_file.exists() else []
    logs = [((f"{h['request']} " if h.get("request") else "") + h["phase"], method_logs(h)) for h in history]
    names = list(dict.fromkeys((phase, name) for phase, logged in logs for name in logged))
    if not names:
        return 0
    series = {f"{phase} {name}": [logged.get(name, math.nan) if own == phase else math.nan for own, logged in logs]
              for phase, name in names}
    path = plots.training_curves(list(range(1, len(history) + 1)), series, {},
                                 f"{t.trial_id} ({t.status.lower()}), objective {fmt(t.result.get('objective'), 4)}",
                                 out / "curves" / f"{t.trial_id}.png", ylabel="method's log")
    s.image(path, out, f"Trial {t.trial_id}: the method's own log after each epoch of each phase (the search "
                       "evaluated only the end; --report-every-epoch adds validation accuracies per epoch).")
    return 1


def status_section(record: RunRecord) -> Section:
    s = Section("Status")
    counts: dict[str, int] = {}
    for t in record.trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    search = record.search
    s.text(f"Method {search['method']} on {search['experiment']} (space {search['space']}); "
           f"{len(record.finished)} of {search['num_samples']} trials finished "
           f"({', '.join(f'{v} {k.lower()}' for k, v in sorted(counts.items())) or 'none started'}).")
    if record.interrupted:
        s.text(f"INTERRUPTED: this search did not finish; the figures cover the {len(record.finished)} trials that did. "
               f"Resume it with: python -m tune_unlearn.search --storage-path {record.run_dir.parent} "
               f"--name {record.run_dir.name} --resume")
    for t in record.trials:
        if t.status == "ERROR":
            s.text(f"Trial {t.trial_id} failed: {t.error}")
    return s


# --------------------------------------------------------------------------- rendering


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(title: str, sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for block in s.blocks:
            if block[0] == "p":
                out += [block[1], ""]
            elif block[0] == "table":
                out += [_markdown_table(block[1], block[2]), ""]
            elif block[0] == "markdown-table":
                out += [block[1], ""]
            else:
                out += [f"![{block[2]}]({block[1]})", "", f"*{block[2]}*", ""]
    return "\n".join(out)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _markdown_block_to_html(text: str) -> str:
    """The compare table (Markdown from compare.py) as HTML: heading, table, note."""
    parts, table = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            if set(line.replace("|", "").strip()) <= {"-"}:
                continue
            table.append([c.strip() for c in line.strip("|").split("|")])
        elif line.startswith("### "):
            parts.append(f"<h3>{html.escape(line[4:])}</h3>")
        elif line.strip():
            parts.append(f"<p>{html.escape(line)}</p>")
    if table:
        parts.insert(1, _html_table(table[0], table[1:]))
    return "\n".join(parts)


STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .85em; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, td:nth-child(2) { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
.curves { display: flex; flex-wrap: wrap; gap: .5em; } .curves figure { width: 32%; margin: 0; }
.warning { background: #fff4e5; border-left: 4px solid #f0a020; padding: .5em 1em; }
"""


def render_html(title: str, sections: list[Section]) -> str:
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    for s in sections:
        out.append(f"<h2>{html.escape(s.title)}</h2>")
        images = [b for b in s.blocks if b[0] == "img"]
        grid = len(images) > 3
        if grid:
            out.append("<div class='curves'>")
        for block in s.blocks:
            if block[0] == "p":
                cls = " class='warning'" if block[1].startswith("INTERRUPTED") else ""
                out.append(f"<p{cls}>{html.escape(block[1])}</p>")
            elif block[0] == "table":
                out.append(_html_table(block[1], block[2]))
            elif block[0] == "markdown-table":
                out.append(_markdown_block_to_html(block[1]))
            else:
                out.append(f"<figure><img src='{html.escape(block[1])}' alt='{html.escape(block[2])}'>"
                           f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
        if grid:
            out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out)


def build_report(run_dir: str | Path, compare_csv: str | Path | None = None, top: int = 10) -> Path:
    """Write run_dir/report/{index.html, report.md, *.png}; return the directory."""
    record = load_run(run_dir)
    out = record.run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.png"), *out.glob("curves/*.png")]:  # a re-made report holds only its own pictures
        old.unlink()
    sections = [status_section(record), best_trials(record, top)]
    if record.holdout:
        sections.append(holdout_section(record))
    sections += [search_progress(record, out), importance_section(record, out)]
    if compare_csv:
        sections.append(radar_section(Path(compare_csv), out))
        per_example = per_example_section(Path(compare_csv), out)
        if per_example:
            sections.append(per_example)
    mask = mask_section(record, out)
    if mask:
        sections.append(mask)
    sections.append(curves_section(record, out))
    title = f"tune_unlearn report: {record.run_dir.name}" + (" (interrupted)" if record.interrupted else "")
    (out / "report.md").write_text(render_markdown(title, sections))
    (out / "index.html").write_text(render_html(title, sections))
    return out
