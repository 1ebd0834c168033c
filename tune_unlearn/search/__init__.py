"""The search: its plan (plan.py) and space (space.py), validated before Ray starts; Ray and
the Tuner (tuner.py); the trainable, the only module calling tune.report (trainable.py); the
Optuna study (study.py), MLflow (tracking.py) and the trial lines (progress.py); and what a
search leaves behind (results.py, export.py, summary.py). `python -m tune_unlearn.search`
runs command.main."""

from .command import main

__all__ = ["main"]
