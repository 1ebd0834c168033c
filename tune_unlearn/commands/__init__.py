"""The commands besides the search: run (one unlearning), compare (every method on several
forget sets), export and report (a search's results), and the argparse pieces they share
(cli.py). Each keeps its `python -m tune_unlearn.<command>` form through a thin module."""
