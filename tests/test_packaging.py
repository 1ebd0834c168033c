"""The package installs like any other: a wheel holds tune_unlearn alone, with the shipped
experiments and search spaces, and runs from any folder without the clone."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import cache_with_calibration

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this checkout, installed (without its dependencies, which the test's
    environment has) into a fresh folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    no_isolation = ["--no-build-isolation"] if _has("setuptools") else []  # else pip fetches setuptools
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *no_isolation, "-w",
                    str(tmp / "dist"), str(REPO)], check=True, cwd=tmp)
    [wheel] = (tmp / "dist").glob("tune_unlearn-*.whl")
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, cwd=tmp)
    return wheel, target


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def run_installed(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("TUNE_UNLEARN_EXPERIMENTS", None)
    env.pop("TUNE_UNLEARN_SPACES", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_wheel_holds_the_package_alone_with_its_yaml_files(installed):
    wheel, target = installed
    with zipfile.ZipFile(wheel) as z:
        tops = {name.split("/")[0] for name in z.namelist()}
        names = set(z.namelist())
    assert {t for t in tops if not t.endswith(".dist-info")} == {"tune_unlearn"}
    assert "tune_unlearn/search_spaces/default.yaml" in names
    assert "tune_unlearn/experiment_settings/digits_mislabeled.yaml" in names
    assert not any(n.endswith("robustness.py") for n in names)  # the benchmark scripts stay in the repository


@pytest.mark.ray
def test_the_installed_package_lists_and_searches_from_another_folder(installed, tmp_path, prepared, session_cache):
    _, target = installed
    cache_with_calibration(session_cache, tmp_path / "cache")
    out = run_installed(target, tmp_path, "-c", "import tune_unlearn; print(tune_unlearn.__file__)")
    assert out.stdout.strip().startswith(str(target)), out.stderr  # not the checkout
    listed = run_installed(target, tmp_path, "-m", "tune_unlearn", "run", "--list")
    assert listed.returncode == 0, listed.stderr
    assert "digits_mislabeled" in listed.stdout and "selective" in listed.stdout
    search = run_installed(target, tmp_path, "-m", "tune_unlearn.search", "--space", "default", "--num-samples", "1",
                           "--requests", "seed=0", "--holdout", "none", "--reseeds", "1", "--exp-set", "model.width=4",
                           "--exp-set", "train.epochs=2", "--cache-dir", str(tmp_path / "cache"),
                           "--storage-path", str(tmp_path / "runs"), "--name", "wheel")
    assert search.returncode == 0, search.stdout[-2000:] + search.stderr[-2000:]
    assert (tmp_path / "runs" / "wheel" / "best_config.yaml").is_file()


def test_pyproject_lists_every_sub_package():
    """The package list is written out (two packages come from folders outside tune_unlearn/):
    a new sub-package missing from it would install without its modules."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "tune_unlearn").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject.toml's packages: {sorted(found - listed)}"


def test_a_checkout_on_the_path_finds_its_experiments_and_spaces(tmp_path):
    """A checkout used without installing it (PYTHONPATH=<clone>, as on an offline GPU machine)
    finds the shipped experiments and search spaces in the clone's folders. `-S` keeps the
    editable install's import hook out; the environment's packages stay on the path."""
    import sysconfig

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"]])}
    env.pop("TUNE_UNLEARN_EXPERIMENTS", None)
    env.pop("TUNE_UNLEARN_SPACES", None)
    code = ("from tune_unlearn.data.experiment import load_experiment, EXPERIMENT_FILES\n"
            "from tune_unlearn.search.space import SPACE_FILES\n"
            "print(load_experiment('fmnist_mislabeled').name, SPACE_FILES.find('paper_2pct').name, "
            "*EXPERIMENT_FILES.shipped())")
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["fmnist_mislabeled", "paper_2pct.yaml", str(REPO / "experiments" / "settings")]
