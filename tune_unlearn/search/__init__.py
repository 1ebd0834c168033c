"""The search: what it is asked (options.py), its plan (plan.py) and space (space.py), validated
before Ray starts; the run from start to end (driver.py); Ray and the Tuner (tuner.py); the
trainable, the only module calling tune.report (trainable.py); the Optuna study (study.py),
MLflow (tracking.py) and the trial lines (progress.py); and what a search leaves behind
(results.py, export.py, summary.py). The command line is commands/search.py.

From Python: `run_search(SearchOptions(space="default", num_samples=4))` (search.driver)."""
