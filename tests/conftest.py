"""Shared fixtures: a tiny digits experiment (width-4 ResNet-18, 2 epochs) so that tests train
real references in a second or two on a CPU."""

from __future__ import annotations

import pytest

from tune_unlearn.experiment import load_experiment
from tune_unlearn.pipeline import prepare
from tune_unlearn.runtime import make_runtime

TINY = {"model.width": 4, "train.epochs": 2, "eval.batch_size": 512}
TINY_ARGS = [arg for key, value in TINY.items() for arg in ("--exp-set", f"{key}={value}")]
# Small budgets for every method's own epochs, used as --set values in end-to-end runs.
TINY_SELECTIVE = {"mask_epochs": 2, "ft_epochs": 1}


@pytest.fixture(scope="session")
def runtime():
    return make_runtime("cpu")


@pytest.fixture(scope="session")
def tiny_experiment():
    return load_experiment("digits", TINY)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def prepared(tiny_experiment, runtime, session_cache):
    """Data and cached references of the tiny experiment, shared by the whole session."""
    return prepare(tiny_experiment, runtime, session_cache, log=lambda message: None)


@pytest.fixture(scope="session")
def ray_address():
    """One local Ray session for every test that runs Tune (ray.init costs seconds)."""
    import logging

    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
