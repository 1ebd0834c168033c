"""How an unlearning is judged: the measures (metrics.py), the leakage probe (leakage.py), the
objective against the retrained ensemble (objective.py), the cached original and retrained
models (references.py) and per-example evaluation from ensembles (per_example/)."""
