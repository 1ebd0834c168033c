"""Per-example evaluation of unlearning from ensembles of models (compare --per-example N):
the NeurIPS 2023 unlearning competition's forgetting quality and a likelihood-ratio
membership attack (U-LiRA style), each per forget example.

    python -m tune_unlearn.compare --methods selective fanchuan --per-example 8

- ensembles.py: N original, N retrained and, per method and configuration, N unlearned
  models (method seeds 0..N-1); every model's per-example outputs cached;
- quality.py: the competition's per-example epsilon and forgetting quality F;
- lira.py: the attack (per-example Gaussians, likelihood ratios, ROC);
- rows.py: one row per ensemble, written to per_example.csv and per_example.json.

Cost: besides the comparison it trains N - 1 original models and N - K retrained models (K:
the references' own) once, and runs every method N times; all of it is cached, so a rerun
or a larger N only adds what is missing.
"""

from .limits import MIN_MODELS

__all__ = ["COLUMNS", "MIN_MODELS", "evaluate", "run"]


def __getattr__(name: str):
    """The evaluation itself loads torch: imported on first use, so that the command line can
    check --per-example (limits.py) before anything heavy loads."""
    if name in ("COLUMNS", "evaluate", "run"):
        from . import rows

        return getattr(rows, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
