"""Per-example statistics of unlearning, computed from ensembles of models' confidences on each
forget example: the NeurIPS 2023 unlearning competition's forgetting quality (quality.py) and
a likelihood-ratio membership attack, U-LiRA style (lira.py). `compare --per-example N`
builds the ensembles and writes the rows (commands/ensembles.py, commands/per_example.py)."""
