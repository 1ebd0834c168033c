"""The experiments that ship with tune_unlearn, installed as tune_unlearn.experiment_settings
(pyproject.toml maps this folder into the package, so an installed copy finds them)."""
