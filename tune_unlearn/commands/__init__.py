"""Every command's command line, and the only place argparse is imported: search, run (one
unlearning), compare (every method on several forget sets; per_example.py and ensembles.py are
its per-example part), export and report (a search's results), and what they share
(arguments.py). `tune-unlearn COMMAND` and `python -m tune_unlearn COMMAND` start them
(tune_unlearn/__main__.py); `python -m tune_unlearn.search` starts the search too."""
