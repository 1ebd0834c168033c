"""MLflow tracking of a search (`--mlflow [TRACKING_URI]`, the `mlflow` extra): one MLflow run
per trial through Ray Tune's MLflowLoggerCallback (parameters, every report's metrics, the final
result), in an MLflow experiment named after the search; after the export, best_config.yaml as
an artifact of the best trial's run.

Without a URI the store is local to the search: `sqlite:///<run_dir>/mlflow.db` (MLflow's own
default backend is SQLite since the file store was deprecated), artifacts in
<run_dir>/mlartifacts. Only the driver writes it.

Kept out of search.py: Tune pickles callbacks into its experiment state, and classes defined in
a `python -m` entry module would not unpickle on resume.
"""

from __future__ import annotations

from pathlib import Path

from ray.air.integrations.mlflow import MLflowLoggerCallback

from .results import MLFLOW_FILE
from ..files import sqlite_url

ARTIFACTS = "mlartifacts"


def local_uri(run_dir: str | Path) -> str:
    """The search's own MLflow store (the default of --mlflow without a URI)."""
    return sqlite_url(Path(run_dir) / MLFLOW_FILE)


def ensure_experiment(uri: str, name: str, run_dir: Path) -> str:
    """The MLflow experiment `name`, created when missing (with its artifacts in the run
    directory when the store is the search's own: a client-side SQLite store would otherwise put
    them in ./mlruns of the working directory); its id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = (run_dir / ARTIFACTS).resolve().as_uri() if uri == local_uri(run_dir) else None
    return client.create_experiment(name, artifact_location=location)


class TrialRuns(MLflowLoggerCallback):
    """MLflowLoggerCallback that also tags each trial's run with its Tune trial id (`trial_id`),
    so that the export can find the best trial's run."""

    def log_trial_start(self, trial):
        if trial not in self._trial_runs:
            self.tags = {**self.tags, "trial_id": trial.trial_id}  # copied into the run's tags by the parent
        super().log_trial_start(trial)


def make_callback(uri: str, experiment: str) -> TrialRuns:
    return TrialRuns(tracking_uri=uri, experiment_name=experiment, tags={"search": experiment})


def log_best_config(uri: str, experiment: str, trial_id: str, path: Path) -> str | None:
    """Attach `path` (best_config.yaml) to the MLflow run of trial `trial_id`; its run id, or
    None when the store has no run for it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run_id = trial_run(client, experiment, trial_id)
    if run_id is not None:
        client.log_artifact(run_id, str(path))
    return run_id


def trial_run(client, experiment: str, trial_id: str) -> str | None:
    """The id of trial `trial_id`'s (latest) MLflow run, or None."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.trial_id = '{trial_id}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def log_holdout(uri: str, experiment: str, holdout: dict) -> None:
    """The held-out results (holdout.json) as metrics of each configuration's trial run:
    `holdout_objective` and `holdout/<request>/test_objective`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    for row in holdout["configs"]:
        run_id = trial_run(client, experiment, row["trial_id"]) if row.get("trial_id") else None
        if run_id is None:
            continue
        if row.get("holdout_objective") is not None:
            client.log_metric(run_id, "holdout_objective", row["holdout_objective"])
        for label, result in row["requests"].items():
            if result and "test_objective" in result:
                client.log_metric(run_id, f"holdout/{label}/test_objective", result["test_objective"])
