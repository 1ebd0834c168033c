"""The search spaces that ship with tune_unlearn, installed as tune_unlearn.search_spaces
(pyproject.toml maps this folder into the package, so an installed copy finds them)."""
