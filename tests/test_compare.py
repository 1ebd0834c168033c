"""The compare command end to end on tiny data."""

import csv

import pytest
import yaml

from conftest import TINY_ARGS
from tune_unlearn.commands.compare import main


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.train
def test_compare_runs_every_method_on_every_seed_and_resumes(tmp_path, session_cache, capsys):
    tuned = tmp_path / "run1" / "best_config.yaml"
    tuned.parent.mkdir()
    tuned.write_text(yaml.safe_dump({"method": "finetune", "experiment": "digits", "hparams": {"epochs": 1, "lr": 0.01}}))
    args = ["--experiment", "digits", "--methods", "finetune", "ssd", "selective", "--seeds", "0", "1", "--out", str(tmp_path / "cmp"),
            "--cache-dir", str(session_cache), "--configs", str(tuned), *TINY_ARGS,
            "--exp-set", "method_defaults={selective: {mask_epochs: 2, mask_batch_size: 32, ft_epochs: 1}}"]
    assert main(args) == 0
    table = capsys.readouterr().out
    written = rows(tmp_path / "cmp" / "compare.csv")
    assert len(written) == 2 * (3 + 1 + 3)  # per seed: three methods, the original, three retrained models
    assert {r["config"] for r in written if r["method"] == "finetune"} == {"tuned:run1"}
    assert all(r["status"] == "ok" for r in written)
    assert {r["seed"] for r in written} == {"0", "1"}
    for method in ("finetune", "ssd", "selective", "(retrained)", "(original)"):
        assert f"| {method} |" in table
    assert "±" in table and (tmp_path / "cmp" / "compare.md").read_text() in table
    # every row, the baselines included, is scored on the test split with the same objective
    assert all(r["objective"] != "" for r in written)
    original = [r for r in written if r["method"] == "(original)"]
    assert all(float(r["time_s"]) == 0 and float(r["cost"]) == 0 for r in original)
    methods = [r for r in written if not r["method"].startswith("(")]
    assert all(r["val_objective"] != "" and float(r["test_acc"]) > 0 for r in methods)

    assert main(args) == 0  # a rerun skips what is done
    assert len(rows(tmp_path / "cmp" / "compare.csv")) == len(written)


@pytest.mark.train
def test_class_forgetting_compare(tmp_path, session_cache, capsys):
    args = ["--methods", "finetune", "--seeds", "0", "--forget-classes", "3", "--out", str(tmp_path / "c"),
            "--cache-dir", str(session_cache), *TINY_ARGS]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "forget classes [3]" in out
    written = rows(tmp_path / "c" / "compare.csv")
    retrained = [r for r in written if r["method"] == "(retrained)"]
    assert len(retrained) == 3 and all(float(r["forget_acc"]) == 0.0 for r in retrained)  # never saw class 3
    assert all(float(r["cost_ratio"]) == 1.0 and r["objective"] != "" for r in retrained)


@pytest.mark.parametrize("args,message", [
    (["--methods", "nope"], "unknown method 'nope'"),
    (["--methods", "ssd", "--set"], None),
])
def test_bad_compare_input(tmp_path, capsys, args, message):
    if message is None:
        with pytest.raises(SystemExit):
            main(args)
        return
    assert main([*args, "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
