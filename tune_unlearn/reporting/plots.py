"""The report's pictures (matplotlib, PNG). Each function takes plain numbers and a path, draws
one figure and returns the path, so that it can be used on its own in a notebook too."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PALETTE = plt.get_cmap("tab10")


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _clip_floor(values: Sequence[float]) -> float | None:
    """Where to cut the y axis so that a few collapsed trials (objective near -1) do not
    flatten the interesting range; None when everything fits."""
    top = max(values)
    return top - 1.0 if min(values) < top - 1.0 else None


def _scatter_clipped(ax, xs, ys, floor, **kwargs):
    """Points above `floor` as dots, those below as triangles sitting on the axis floor."""
    above = [(x, y) for x, y in zip(xs, ys) if floor is None or y >= floor]
    below = [x for x, y in zip(xs, ys) if floor is not None and y < floor]
    if above:
        ax.scatter(*zip(*above), **kwargs)
    if below:
        ax.scatter(below, [floor] * len(below), marker="v", s=30, color="grey", label="below the axis")


def objective_over_trials(values: Sequence[float], labels: Sequence[str], best_label: str, path: Path,
                          baselines: dict[str, float] | None = None) -> Path:
    """Objective of each finished trial in completion order, with the best so far, and the
    `baselines` (label -> objective, e.g. the retrained models and the original) as dashed lines
    (named in the legend with their value when they fall below the axis)."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    x = list(range(1, len(values) + 1))
    best, running = [], -math.inf
    for v in values:
        running = max(running, v)
        best.append(running)
    floor = _clip_floor(values)
    _scatter_clipped(ax, x, values, floor, s=18, color=PALETTE(0), label="trial")
    shown = [max(b, floor) if floor is not None else b for b in best]
    ax.step(x, shown, where="post", color=PALETTE(1), label="best so far")
    if best_label in labels:
        i = labels.index(best_label)
        ax.scatter([i + 1], [values[i]], s=90, facecolors="none", edgecolors="red", linewidths=2, label="chosen")
    for i, (label, value) in enumerate((baselines or {}).items()):
        if floor is None or value >= floor:
            ax.axhline(value, color=PALETTE(2 + i), ls="--", lw=1, label=f"{label} ({value:.3g})")
        else:
            ax.plot([], [], color=PALETTE(2 + i), ls="--", lw=1, label=f"{label} ({value:.3g}, below the axis)")
    if floor is not None:
        ax.set_ylim(floor - 0.03, max(best[-1], *((baselines or {}).values() or [best[-1]])) + 0.05)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("finished trial")
    ax.set_ylabel("objective (higher is better)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def pareto_front(points: dict[str, dict], front: set[str], chosen: str, path: Path) -> Path:
    """Validation accuracy against forget gap, coloured by cost ratio; the front joined, the
    chosen configuration marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    gaps = [p["forget_gap"] for p in points.values()]
    tests = [p["val_acc"] for p in points.values()]
    costs = [p["cost_ratio"] for p in points.values()]
    sc = ax.scatter(gaps, tests, c=costs, cmap="viridis", s=28)
    fig.colorbar(sc, ax=ax, label="cost / retraining cost")
    on_front = sorted((points[t]["forget_gap"], points[t]["val_acc"]) for t in front)
    if on_front:
        ax.plot(*zip(*on_front), color="black", lw=1, alpha=0.6, label="Pareto front (all components)")
        ax.scatter(*zip(*on_front), s=60, facecolors="none", edgecolors="black")
    if chosen in points:
        ax.scatter([points[chosen]["forget_gap"]], [points[chosen]["val_acc"]], marker="*", s=250, color="red",
                   label="chosen (best objective)")
    ax.set_xlabel("forget gap (spreads of the retrained models beyond the first, lower is better)")
    ax.set_ylabel("validation accuracy (%)")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def importances(table: dict[str, dict[str, float]], path: Path) -> Path:
    """Grouped horizontal bars: one group per hyperparameter, one bar per evaluator."""
    evaluators = list(table)
    params = sorted({p for imp in table.values() for p in imp}, key=lambda p: -max(t.get(p, 0) for t in table.values()))
    fig, ax = plt.subplots(figsize=(6.4, 0.5 + 0.45 * len(params) * max(1, len(evaluators)) / 1.5))
    height = 0.8 / max(1, len(evaluators))
    for i, name in enumerate(evaluators):
        ys = [j + i * height for j in range(len(params))]
        ax.barh(ys, [table[name].get(p, 0.0) for p in params], height=height, color=PALETTE(i), label=name)
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(params))])
    ax.set_yticklabels(params)
    ax.invert_yaxis()
    ax.set_xlabel("importance for the objective")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def objective_vs_params(samples: dict[str, list], objective: list[float], log_params: set[str], best: dict,
                        path: Path) -> Path:
    """One panel per searched hyperparameter: objective against its value, best marked."""
    names = list(samples)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.1 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        values = samples[name]
        floor = _clip_floor(objective)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            _scatter_clipped(ax, values, objective, floor, s=16, color=PALETTE(0))
            if name in log_params:
                ax.set_xscale("log")
            elif all(isinstance(v, int) for v in values):
                ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            x_best = best.get(name)
        else:
            categories = sorted({str(v) for v in values})
            _scatter_clipped(ax, [categories.index(str(v)) for v in values], objective, floor, s=16, color=PALETTE(0))
            ax.set_xticks(range(len(categories)))
            ax.set_xticklabels(categories, rotation=20, fontsize=8)
            x_best = categories.index(str(best[name])) if name in best else None
        if x_best is not None:
            ax.scatter([x_best], [max(objective)], marker="*", s=160, color="red")
        if floor is not None:
            ax.set_ylim(floor - 0.03, max(objective) + 0.05)
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes[0][0].set_ylabel("objective")
    return _save(fig, path)


def radar(methods: dict[str, dict[str, float]], path: Path) -> Path:
    """The paper's Figure 4: retain, forget and test accuracy, MIA and time per method, each
    normalised to [0, 1] by the best method (the largest value; for time the fastest)."""
    axes_keys = [("retain_acc", "retain acc"), ("forget_acc", "forget acc"), ("test_acc", "test acc"),
                 ("mia", "MIA"), ("time_s", "time")]
    best = {k: (min if k == "time_s" else max)(m[k] for m in methods.values()) for k, _ in axes_keys}
    angles = [2 * math.pi * i / len(axes_keys) for i in range(len(axes_keys))]
    fig = plt.figure(figsize=(9.2, 5.6))
    ax = fig.add_axes((0.06, 0.08, 0.52, 0.84), projection="polar")
    for i, (name, m) in enumerate(methods.items()):
        values = [best[k] / m[k] if k == "time_s" else m[k] / best[k] if best[k] else 0.0 for k, _ in axes_keys]
        ax.plot(angles + angles[:1], values + values[:1], color=PALETTE(i % 10), lw=1.6, label=name)
        ax.fill(angles + angles[:1], values + values[:1], color=PALETTE(i % 10), alpha=0.06)
    ax.set_xticks(angles)
    labels = [f"{label}\n(best {best[k]:.3g}{' s' if k == 'time_s' else ''})" for k, label in axes_keys]
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_rlabel_position(252)  # radial ticks between the time and MIA axes, clear of the labels
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.12, 0.5), frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)  # fixed axes: tight_layout would squeeze the polar plot for the legend
    plt.close(fig)
    return path


def mask_zero_share(epochs: Sequence[int], shares: Sequence[float], scope_share: float | None, path: Path) -> Path:
    """The paper's Figure 3: share of zero mask entries over mask-learning epochs."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(epochs, [100 * s for s in shares], marker="o", ms=3, color=PALETTE(0), label="whole network")
    if scope_share is not None:
        ax.axhline(100 * scope_share, color=PALETTE(1), ls="--", lw=1, label="inside the decay scope (end)")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("mask-learning epoch")
    ax.set_ylabel("zero mask entries (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def training_curves(epochs: Sequence[int], series: dict[str, Sequence[float]], reference: dict[str, float],
                    title: str, path: Path, ylabel: str = "accuracy (%)") -> Path:
    """Accuracies after each evaluated epoch of one trial, with the retrained model dashed (or,
    with another `ylabel`, any per-epoch series; NaN where a series has no value)."""
    fig, ax = plt.subplots(figsize=(4.6, 3.0))
    for i, (name, values) in enumerate(series.items()):
        ax.plot(epochs, values, marker="o", ms=3, color=PALETTE(i), label=name)
        if name in reference:
            ax.axhline(reference[name], color=PALETTE(i), ls="--", lw=0.8)
    if max(epochs) - min(epochs) < 12:  # short runs: every epoch ticked (a lone epoch included)
        ax.set_xticks(range(min(epochs), max(epochs) + 1))
    else:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right" if reference else "best")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def epsilon_histograms(rows: dict[str, dict], bins: int, bin_width: float, path: Path) -> Path:
    """Per-example eps of each row (one panel each): share of the forget examples in each bin
    that scores (2^-k for bin k), and beyond the last one (scores 0)."""
    names = list(rows)
    cols = min(3, len(names))
    nrows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False, sharey=True)
    edges = [k * bin_width for k in range(bins + 1)]
    labels = [f"{lo:g}-{hi:g}\n({2.0 ** -k:g})" for k, (lo, hi) in enumerate(zip(edges, edges[1:]))] + [f"≥{edges[-1]:g}\n(0)"]
    for i, (ax, name) in enumerate(zip(axes.flat, names)):
        eps = rows[name]["epsilon"]
        counts = [0] * (bins + 1)
        for e in eps:
            counts[min(int(e // bin_width), bins)] += 1
        ax.bar(range(bins + 1), [100 * c / max(len(eps), 1) for c in counts], color=PALETTE(i % 10))
        ax.set_xticks(range(bins + 1))
        ax.set_xticklabels(labels, fontsize=7)
        quality = rows[name].get("forget_quality")
        ax.set_title(f"{name}: F = {quality:.3f}" if quality is not None else name, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("forget examples (%)")
    for ax in axes[-1]:
        ax.set_xlabel("per-example ε (bin score)", fontsize=8)
    return _save(fig, path)


def roc_curves(curves: dict[str, dict], path: Path) -> Path:
    """ROC curve of the attack per row ({"fpr", "tpr", "auc"}), on linear and on log axes."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for i, (name, c) in enumerate(curves.items()):
        for ax in axes:
            ax.plot(c["fpr"], c["tpr"], color=PALETTE(i % 10), lw=1.4, label=f"{name} (AUC {c['auc']:.3f})")
    positive = [f for c in curves.values() for f in c["fpr"] if f > 0]
    low = min(positive) if positive else 1e-3
    for ax, start in zip(axes, (0.0, low)):
        ax.plot([start, 1], [start, 1], color="grey", ls="--", lw=0.8, label="chance")
        ax.set_xlabel("false positive rate (held-out retrained models)")
        ax.set_ylabel("true positive rate")
        ax.grid(alpha=0.3)
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlim(low, 1)
    axes[1].set_ylim(low, 1.05)
    axes[0].legend(fontsize=7, loc="lower right")
    return _save(fig, path)
