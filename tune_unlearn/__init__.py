"""tune_unlearn: hyperparameter search for machine unlearning with Ray Tune and Optuna."""

__version__ = "0.1.0"
