"""Reading results: pictures, hyperparameter importance and the search report's page.
`python -m tune_unlearn report` puts them together."""
