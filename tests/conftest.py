"""Shared fixtures: a tiny digits experiment (width-4 ResNet-18, 2 epochs) so that tests train
real references in a second or two on a CPU.

Tiers (pyproject.toml registers the markers): `train` trains models, `ray` starts Ray or a
search, `cluster` starts several Ray nodes; each of them is also `slow`. `pytest -m "not slow"`
runs the rest in well under a minute. A test gets its tier from the fixtures it uses
(TIER_FIXTURES) or from a mark of its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from packaging.version import Version

XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1" under pytest-xdist; None in one process
if XDIST_WORKER:  # the README's test command: two test processes
    # One thread each, and for what they start: oversubscribed OpenMP threads spin and cost far
    # more than they gain on two cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    # Ray's files (and /tmp/ray/ray_current_cluster, where `ray start` records the cluster a
    # search without --address joins) in a folder of this worker's, so that the two never see
    # each other's clusters.
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix=f"ray-{XDIST_WORKER}-")

from tune_unlearn.data.experiment import load_experiment
from tune_unlearn.pipeline import prepare
from tune_unlearn.runtime import make_runtime

TIER_FIXTURES = {"ray": {"ray_address", "finished_search", "multi_objective_search"},
                 "train": {"prepared", "corrective"}, "cluster": {"two_nodes", "job_head", "autoscaling_head"}}
SLOW_TIERS = ("train", "ray", "cluster")
SHARED_SEARCHES = {"finished_search", "multi_objective_search"}


def pytest_configure(config):
    # pytest 9.2 keeps a test's id where pytest-xdist 3.8 cannot add its group: --dist loadgroup
    # then silently spreads a group over both processes, and each makes the shared searches and
    # clusters again (minutes more)
    if not XDIST_WORKER and config.pluginmanager.hasplugin("xdist") and config.getoption("dist") == "loadgroup":
        if Version(pytest.__version__) >= Version("9.2") and Version(version("pytest-xdist")) <= Version("3.8"):
            raise pytest.UsageError(f"pytest {pytest.__version__} breaks pytest-xdist {version('pytest-xdist')}'s "
                                    "--dist loadgroup (pytest-dev/pytest-xdist#1386): install pytest<9.2, as the "
                                    "test extra does")


def pytest_unconfigure(config):
    if XDIST_WORKER:  # this worker's Ray files (above), once its Ray has stopped
        shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's, which reads the xdist_group marks added here
def pytest_collection_modifyitems(config, items):
    for item in items:
        for tier, fixtures in TIER_FIXTURES.items():
            if fixtures & set(item.fixturenames):
                item.add_marker(tier)
        if any(item.get_closest_marker(tier) for tier in SLOW_TIERS):
            item.add_marker("slow")
        # Under pytest-xdist (the README's -n 2 --dist loadgroup) a session fixture is made once per
        # worker: the tests that read a finished search run on one worker, as do a module's
        # cluster's.
        if SHARED_SEARCHES & set(item.fixturenames):
            item.add_marker(pytest.mark.xdist_group("searches"))
        elif "two_nodes" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("two_nodes"))
    # The costliest tiers first, the fast one last (longest first): each test process takes the
    # next test as it finishes one, and the many short tests at the end keep both busy while the
    # other runs its last long one (a long test taken last leaves the other process idle for its length).
    costliest = ("cluster", "ray", "train")
    items.sort(key=lambda item: next((i for i, tier in enumerate(costliest) if item.get_closest_marker(tier)),
                                     len(costliest)))


TINY = {"model.width": 4, "train.epochs": 2, "eval.batch_size": 512}
# The random-forget digits experiment (the default one forgets a single class, which the
# leakage probe cannot attack), tiny.
TINY_ARGS = ["--experiment", "digits", *(arg for key, value in TINY.items() for arg in ("--exp-set", f"{key}={value}"))]


def tiny_args(experiment: str) -> list[str]:
    """TINY_ARGS for another experiment (the corrective ones: digits_mislabeled, digits_backdoor)."""
    return ["--experiment", experiment, *TINY_ARGS[2:]]

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
    """The session's model cache. Under pytest-xdist the two test processes share one, in the
    folder above their own: a model or calibration that one made, the other reuses instead of
    making it again (seconds of a core each; the cache writes every file atomically, so a
    model both train at once is only trained twice). A test that deletes from a cache copies it
    first, with copy_cache."""
    if XDIST_WORKER:
        shared = tmp_path_factory.getbasetemp().parent / "session-cache"
        shared.mkdir(exist_ok=True)
        return shared
    return tmp_path_factory.mktemp("cache")


def copy_cache(session_cache: Path, cache: Path) -> Path:
    """A copy of the session's cache at `cache`, without the half-written files (atomic_write's
    temporary ones) of what the other test process is writing into it meanwhile."""
    return Path(shutil.copytree(session_cache, cache, ignore=shutil.ignore_patterns(".*.tmp")))


@pytest.fixture(scope="session")
def prepared(tiny_experiment, runtime, session_cache):
    """Data and cached references of the tiny experiment, shared by the whole session."""
    return prepare(tiny_experiment, runtime, session_cache, log=lambda message: None)


def cache_with_calibration(session_cache: Path, cache: Path) -> Path:
    """`cache`, a model cache without models, holding the cost model's calibration that the
    session's `prepared` made on this machine (the caller asks for `prepared`), as a machine that
    calibrated before has it: measuring it again costs seconds of a core."""
    copy_cache(session_cache / "calibration", cache / "calibration")
    return cache


@pytest.fixture(scope="session")
def ray_address():
    """One local Ray session for every test that runs Tune (ray.init costs seconds)."""
    import logging

    import ray

    # "local": a session of its own, never the cluster a `ray start` elsewhere on this machine
    # recorded in /tmp/ray/ray_current_cluster (which ray.init() would join)
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def space_file(tmp_path, name="tiny", **extra):
    data = {
        "method": "selective", "experiment": "digits_mislabeled", "num_samples": 3,
        "params": {"lam": {"type": "loguniform", "low": 1e-8, "high": 1e-4},
                   "decay": {"type": "uniform", "low": 0.0, "high": 0.9},
                   "ft_epochs": {"type": "int", "low": 1, "high": 2}},
        "fixed": {"mask_epochs": 2},
    }
    data.update(extra)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def search_args(tmp_path, cache, name, *more, experiment="digits", one_at_a_time=True):
    """A search's flags on tiny data; without held-out requests unless `more` names some (each
    would train its own references); one trial at a time unless `more` says otherwise or
    `one_at_a_time` is False (the cluster tests: the trials at once are what they check). One
    trial process instead of two costs the suite seconds of a core per search (its imports)."""
    holdout = [] if "--holdout" in more else ["--holdout", "none"]
    reseeds = [] if "--reseeds" in more else ["--reseeds", "1"]  # finished_search runs its best again
    serial = ["--max-concurrent", "1"] if one_at_a_time and "--max-concurrent" not in more else []
    return ["--storage-path", str(tmp_path / "runs"), "--name", name, "--cache-dir", str(cache),
            *tiny_args(experiment), *holdout, *reseeds, *serial, *more]


@pytest.fixture(scope="session")
def finished_search(ray_address, tmp_path_factory, session_cache):
    """A finished three-trial search of the selective method on the tiny default experiment
    (10% of the labels wrong); its two best run again with a second unlearning seed."""
    from tune_unlearn.commands import search

    tmp = tmp_path_factory.mktemp("search")
    args = ["--space", space_file(tmp), *search_args(tmp, session_cache, "fifo", "--reseeds", "2", "--reseed-top", "2",
                                                     experiment="digits_mislabeled")]
    assert search.main(args) == 0
    return tmp / "runs" / "fifo"


@pytest.fixture(scope="session")
def multi_objective_search(ray_address, tmp_path_factory, session_cache):
    """A finished four-trial multi-objective search on a backdoor (its forget set is one class,
    the target), leakage measured in every trial, with the genetic NSGA-II sampler (the kind
    Optuna 5.1 cannot pickle; the default, TPE, runs in every other search here)."""
    from tune_unlearn.commands import search

    tmp = tmp_path_factory.mktemp("mo")
    args = ["--space", space_file(tmp, num_samples=4), "--multi-objective", "--leakage", "--sampler", "nsga2",
            "--seed", "3",
            *search_args(tmp, session_cache, "mo", experiment="digits_backdoor")]
    assert search.main(args) == 0
    return tmp / "runs" / "mo"


BIN = Path(sys.executable).parent  # this environment's `ray` and `tune-unlearn`
# where `ray start` says which cluster ray.init() joins (RAY_TMPDIR: above)
CURRENT_CLUSTER = Path(os.environ.get("RAY_TMPDIR", "/tmp"), "ray", "ray_current_cluster")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def head_env(**more: str) -> dict:
    """The environment of a `ray start --head` and of what joins it: this environment's `ray`
    first, no $RAY_ADDRESS, and Ray 2.60's token authentication (the head makes or reads
    ~/.ray/auth_token, and the job CLI sends it only in token mode: docs/cluster.md)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "token", **more}
    env.pop("RAY_ADDRESS", None)
    return env


@contextlib.contextmanager
def head_process(args: list[str], env: dict, ready, port: int | None = None, timeout: float = 90):
    """`ray start --head --block ARGS` on free ports (its GCS on `port` where given) until
    `ready(port)` says it is up; then stopped by ending that command and every Ray process that
    joined its GCS (an autoscaler's nodes), not by `ray stop`, which would also stop every other
    Ray on the machine (the test session's own among them). Yields the GCS port."""
    before = CURRENT_CLUSTER.read_text() if CURRENT_CLUSTER.exists() else None
    port = port or free_port()
    ports = {"--port": port, "--ray-client-server-port": free_port(), "--dashboard-agent-listen-port": free_port(),
             "--dashboard-agent-grpc-port": free_port(), "--metrics-export-port": free_port(),
             "--runtime-env-agent-port": free_port()}
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats", *args,
           *(f"{k}={v}" for k, v in ports.items())]
    marker = f"TUNE_UNLEARN_TEST_HEAD={port}"  # inherited by every process of this cluster, its nodes' too
    head = subprocess.Popen(cmd, env={**env, **dict([marker.split("=")])}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + timeout
        while not ready(port):
            assert head.poll() is None, "ray start --head ended"
            assert time.time() < deadline, "the head did not come up"
            time.sleep(0.5)
        yield port
    finally:
        head.terminate()
        head.wait(timeout=60)
        # what outlives the command: the nodes the head's autoscaler started, their workers and agents
        for pid in processes_with(f"{marker}\0".encode(), where="environ"):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if before is None:
            CURRENT_CLUSTER.unlink(missing_ok=True)
        else:
            CURRENT_CLUSTER.write_text(before)


def processes_with(text: bytes, where: str = "cmdline") -> list[int]:
    """The pids of this machine's processes whose command line (or `where`: "environ", their
    environment) holds `text`."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int(entry.name) != os.getpid() and text in (entry / where).read_bytes():
                pids.append(int(entry.name))
        except OSError:  # ended meanwhile
            continue
    return pids
