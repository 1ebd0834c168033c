"""The `run` command end to end on tiny digits, and every bad input it must refuse early."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY_ARGS, cache_with_calibration
from tune_unlearn.commands.run import main

REPO = Path(__file__).resolve().parent.parent
FAST = [*TINY_ARGS, "--set", "mask_epochs=2", "--set", "ft_epochs=1"]


def run(capsys, *args):
    code = main([*args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def cache(tmp_path_factory, prepared, session_cache):
    return str(cache_with_calibration(session_cache, tmp_path_factory.mktemp("run-cache")))


@pytest.mark.train
def test_run_prints_one_json_object_and_reuses_the_cache(capsys, cache, tmp_path):
    code, out, err = run(capsys, "--experiment", "digits", "--method", "selective", "--cache-dir", cache, *FAST,
                         "--json", str(tmp_path / "r.json"), "--save-model", str(tmp_path / "m.pt"))
    assert code == 0, err
    result = json.loads(out)
    assert set(result) >= {"method", "experiment", "hparams", "metrics", "reference", "original", "objective", "components"}
    for block in ("metrics", "reference", "original"):  # the validation split: what a search optimises
        assert set(result[block]) >= {"retain_acc", "forget_acc", "val_acc", "mia", "mia_cv_acc", "time_s", "cost"}
    for block in ("test_metrics", "reference_test", "original_test"):  # the test split: final numbers
        assert set(result[block]) >= {"retain_acc", "forget_acc", "test_acc", "mia", "mia_cv_acc", "time_s", "cost"}
    assert result["reference"]["n_models"] == 3 and "val_acc_sd" in result["reference"]
    assert result["original"]["cost"] == 0 and result["original"]["time_s"] == 0  # an unlearning that does nothing
    assert 0 < result["components"]["cost_ratio"] < 1
    assert result["hparams"]["ft_epochs"] == 1 and result["hparams"]["mask_batch_size"] == 64  # experiment default
    assert set(result["stats"]) >= {"mask_zero_share", "mask_zero_share_scope", "decayed_weights"}
    assert json.loads((tmp_path / "r.json").read_text())["objective"] == result["objective"]
    assert set(torch.load(tmp_path / "m.pt", weights_only=True)) >= {"fc.weight", "layer4.1.conv2.weight"}
    assert "training the original model" in err

    code, out, err = run(capsys, "--cache-dir", cache, *FAST, "--set", "lam=1e-7", "--set", "decay=0.5")
    assert code == 0
    assert "cache hit: original model" in err and "cache hit: retrain model (seed 2)" in err
    assert "training the" not in err
    again = json.loads(out)
    assert again["hparams"]["lam"] == 1e-7 and again["hparams"]["decay"] == 0.5
    assert again["reference"] == result["reference"]


def test_config_file_sets_hyperparameters_and_flags_win(capsys, cache, tmp_path):
    config = tmp_path / "hp.yaml"
    config.write_text("lam: 1e-5\ndecay: 0.3\n")  # a flat mapping of hyperparameters
    code, out, _ = run(capsys, "--cache-dir", cache, *FAST, "--config", str(config), "--set", "decay=0.2")
    assert code == 0
    hp = json.loads(out)["hparams"]
    assert hp["lam"] == 1e-5 and hp["decay"] == 0.2


def test_a_bad_weight_in_a_config_file_is_a_one_line_error(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("method: selective\nweights: {cost: abc}\n")
    code, _, err = run(capsys, "--config", str(config), "--cache-dir", str(tmp_path / "c"))
    assert code == 2 and err.count("\n") == 1
    assert "objective weight cost must be a number >= 0, got 'abc'" in err
    assert not (tmp_path / "c").exists()


def test_list_shows_experiments_and_methods_with_defaults(capsys):
    code, out, _ = run(capsys, "--list")
    assert code == 0
    assert "digits" in out and "fmnist" in out and "imagenet100" in out
    assert "selective" in out and "lam" in out and "layer_scope" in out


@pytest.mark.parametrize("args,message", [
    (["--experiment", "mnist9"], "unknown experiment 'mnist9'; allowed: cifar10, cifar100, digits"),
    (["--method", "forgetful"], "unknown method 'forgetful'; allowed:"),
    (["--set", "lamda=1"], "unknown hyperparameter of method 'selective': 'lamda'"),
    (["--set", "threshold=0.5"], "threshold = 0.5 exceeds x_init = 0.01"),
    (["--set", "decay=2"], "decay = 2.0 is out of range; allowed: [0, 1]"),
    (["--forget-fraction", "1.5"], "forget fraction must lie in (0, 1), got 1.5"),
    (["--forget-fraction", "0"], "forget fraction must lie in (0, 1), got 0.0"),
    (["--forget-classes", "12"], "forget class 12 does not exist; allowed: 0..9"),
    (["--exp-set", "train.epochz=3"], "unknown key 'train.epochz'"),
    (["--set", "lam"], "--set takes KEY=VALUE"),
    (["--weight", "speed=1"], "unknown objective weight 'speed'"),
    (["--original", "/nonexistent/model.pt"], "no such checkpoint: /nonexistent/model.pt"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_training(capsys, tmp_path, args, message):
    code, out, err = run(capsys, "--cache-dir", str(tmp_path / "cache"), *args)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message in err
    assert not (tmp_path / "cache").exists()


def test_missing_dataset_names_where_it_looked_and_how_to_install(capsys, tmp_path):
    code, _, err = run(capsys, "--experiment", "fmnist", "--data-dir", str(tmp_path), "--cache-dir", str(tmp_path / "c"))
    assert code == 2 and err.count("\n") == 1
    assert str(tmp_path) in err and "apt-get install dataset-fashion-mnist" in err and "--download" in err
    assert not (tmp_path / "c").exists()


def test_corrupt_original_checkpoint_is_refused(capsys, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    code, _, err = run(capsys, "--original", str(bad), "--cache-dir", str(tmp_path / "c"), *TINY_ARGS)
    assert code == 2 and "cannot read checkpoint" in err and err.count("\n") == 1
    assert not list((tmp_path / "c").glob("*/*.pt")) if (tmp_path / "c").exists() else True


@pytest.mark.train
def test_python_dash_m_entry_point(tmp_path, cache):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "tune_unlearn", "run", "--cache-dir", cache, *FAST],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["method"] == "selective"
