"""Real Tune searches with the Optuna searcher on tiny data (one Ray session for all)."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import search_args, space_file
from tune_unlearn import search
from tune_unlearn.export import main as export_main
from tune_unlearn.report import main as report_main
from tune_unlearn.run import main as run_main

REPO = Path(__file__).resolve().parent.parent
COMPONENTS = ("test_ratio", "forget_gap", "mia_gap", "time_ratio")


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def reports(trial_dir):
    return [json.loads(line) for line in (Path(trial_dir) / "result.json").read_text().splitlines()]


def test_search_runs_every_trial_reports_finite_objectives_and_exports(finished_search, capsys):
    run_dir = finished_search
    rows = read_csv(run_dir / "results.csv")
    assert len(rows) == 3 and {r["status"] for r in rows} == {"TERMINATED"}
    assert set(rows[0]) >= {"trial_id", "status", "lam", "decay", "ft_epochs", "retain_acc", "forget_acc",
                            "test_acc", "mia", "time_s", "objective", *COMPONENTS}
    for trial_dir in run_dir.glob("trial_*"):
        lines = reports(trial_dir)
        config = json.loads((trial_dir / "params.json").read_text())
        assert len(lines) == config["ft_epochs"] + 1  # one report per fine-tuning epoch, then the final one
        for r in lines:
            assert math.isfinite(r["objective"]) and all(math.isfinite(r[c]) for c in COMPONENTS)
        assert lines[-1]["final"] == 1 and "mask_zero_share" in lines[-1]
        assert list(trial_dir.glob("events.out.tfevents.*"))  # TensorBoard
    best = yaml.safe_load((run_dir / "best_config.yaml").read_text())
    top = max(rows, key=lambda r: float(r["objective"]))
    assert best["result"]["trial_id"] == top["trial_id"] and best["method"] == "selective"
    assert best["hparams"]["mask_epochs"] == 2 and best["experiment_overrides"]["model.width"] == 4
    saved = json.loads((run_dir / "search.json").read_text())
    assert saved["reference"]["test_acc"] > 0 and saved["num_samples"] == 3


def test_export_round_trip_into_run_config(finished_search, capsys, session_cache, tmp_path):
    capsys.readouterr()
    assert export_main([str(finished_search), "--top", "2", "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert "retrained" in out and "tensorboard --logdir" in out
    top2 = json.loads((finished_search / "top2.json").read_text())
    assert len(top2) == 2 and top2[0]["result"]["objective"] >= top2[1]["result"]["objective"]
    best = yaml.safe_load((finished_search / "best_config.yaml").read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the trial (one CPU), so the arithmetic is the same
    try:
        code = run_main(["--config", str(finished_search / "best_config.yaml"), "--cache-dir", str(session_cache)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    rerun = json.loads(capsys.readouterr().out)
    assert rerun["hparams"] == best["hparams"]
    for key in ("retain_acc", "forget_acc", "test_acc", "mia"):
        assert rerun["metrics"][key] == pytest.approx(best["result"]["metrics"][key], abs=1e-6), key


def test_a_diverging_trial_fails_with_its_reason_and_the_search_goes_on(ray_address, tmp_path, session_cache, capsys):
    path = space_file(tmp_path, num_samples=2, params={"decay": {"type": "uniform", "low": 0.0, "high": 0.5}},
                      fixed={"mask_epochs": 2, "ft_epochs": 1, "ft_lr": 1e12})
    assert search.main(["--space", path, "--max-concurrent", "1", *search_args(tmp_path, session_cache, "nan")]) == 0
    rows = read_csv(tmp_path / "runs" / "nan" / "results.csv")
    assert len(rows) == 2  # the second trial ran after the first failed
    assert all(r["status"] == "ERROR" and "diverged" in r["error"] and "nan" in r["error"] for r in rows)
    assert "failed trial" in capsys.readouterr().out


def test_multi_objective_with_asha_exports_a_pareto_front(multi_objective_search):
    run_dir = multi_objective_search
    saved = json.loads((run_dir / "search.json").read_text())
    assert saved["objectives"] == {"test_ratio": "max", "forget_gap": "min", "mia_gap": "min", "time_ratio": "min",
                                   "leak_gap": "min"}
    assert "pl_forget_acc" in saved["reference"]
    rows = {r["trial_id"]: r for r in read_csv(run_dir / "results.csv")}
    front = read_csv(run_dir / "pareto.csv")
    assert front and all(rows[r["trial_id"]]["status"] == "TERMINATED" for r in front)
    signs = {"test_ratio": 1, "forget_gap": -1, "mia_gap": -1, "time_ratio": -1, "leak_gap": -1}
    finished = [r for r in rows.values() if r["status"] == "TERMINATED"]
    for f in front:  # nothing finished dominates a front member
        fv = [signs[c] * float(f[c]) for c in signs]
        for o in finished:
            ov = [signs[c] * float(o[c]) for c in signs]
            assert not (all(a >= b for a, b in zip(ov, fv)) and any(a > b for a, b in zip(ov, fv)))


def test_bad_input_stops_before_ray_starts(tmp_path, capsys, monkeypatch):
    def no_ray(*args, **kwargs):
        raise AssertionError("Ray must not start on bad input")

    monkeypatch.setattr(search, "start_ray", no_ray)
    cases = [
        (["--space", "nope"], "unknown search space 'nope'"),
        (["--space", "default", "--method", "other"], "unknown method 'other'"),
        (["--space", "default", "--experiment", "fmnist", "--data-dir", str(tmp_path)], "apt-get install dataset-fashion-mnist"),
        (["--space", "default", "--num-samples", "0"], "--num-samples must be >= 1"),
        (["--space", "default", "--gpus-per-trial", "-1"], "--gpus-per-trial must be >= 0"),
        (["--space", "default", "--weight", "speed=2"], "unknown objective weight 'speed'"),
        (["--resume", "--storage-path", str(tmp_path / "none")], "--resume: no search to resume"),
    ]
    for args, message in cases:
        assert search.main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (args, err)


def test_resume_after_ctrl_c_runs_no_trial_twice(ray_address, tmp_path, session_cache):
    """Interrupt a search (SIGINT, as Ctrl-C) after two trials finished, resume it by name, and
    check that the finished trials were not run again and the rest completed."""
    path = space_file(tmp_path, num_samples=5)
    run_dir = tmp_path / "runs" / "resume"
    cmd = [sys.executable, "-m", "tune_unlearn.search", "--space", path, "--max-concurrent", "1",
           "--address", ray_address, *search_args(tmp_path, session_cache, "resume")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while len(list(run_dir.glob("*/final_result.json"))) < 2:
        assert proc.poll() is None and time.time() < deadline, "the search ended or stalled before two trials finished"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    finished_before = {p.parent.name: (p.read_text(), len(reports(p.parent))) for p in run_dir.glob("*/final_result.json")}
    assert 2 <= len(finished_before) < 5, out
    assert "interrupted" in out
    assert report_main([str(run_dir)]) == 0  # a report of the interrupted search says so
    page = (run_dir / "report" / "index.html").read_text()
    assert "(interrupted)" in page and "INTERRUPTED" in page and "--resume" in page

    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resuming" in proc.stdout
    rows = read_csv(run_dir / "results.csv")
    assert len(rows) == 5 and {r["status"] for r in rows} == {"TERMINATED"}
    for name, (final, count) in finished_before.items():
        assert (run_dir / name / "final_result.json").read_text() == final
        assert len(reports(run_dir / name)) == count, f"{name} ran again"
