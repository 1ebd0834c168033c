"""tune-unlearn benchmark: its refusals before any work, and one small benchmark end to end
(two methods, two trials each, one held-out request) that a rerun resumes without searching again."""

import csv
import json

import pytest

from conftest import tiny_args
from tune_unlearn.commands.benchmark import main
from tune_unlearn.evaluation.objective import Weights


@pytest.mark.parametrize("extra,message", [
    (["--methods", "nope"], "unknown method 'nope'"),
    (["--trials", "0"], "--trials must be >= 1, got 0"),
    (["--per-example", "4"], "--per-example needs N >= 6"),
    (["--num-samples", "4"], "--num-samples: the benchmark sets it"),
    (["--name", "x"], "--name: the benchmark sets it"),
    (["--holdout", "none"], "a benchmark judges every method on held-out requests"),
])
def test_benchmark_refuses_in_one_line(tmp_path, capsys, extra, message):
    assert main(["--methods", "finetune", "--out", str(tmp_path / "b"), *tiny_args("digits_mislabeled"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "b").exists()  # refused before anything was written


def test_a_rerun_must_ask_what_the_benchmark_started_with(tmp_path, capsys):
    args = ["--methods", "finetune", "--out", str(tmp_path / "b"), *tiny_args("digits_mislabeled")]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "benchmark.json").write_text(json.dumps(
        {"search_args": args[4:], "trials": 20, "per_example": 12, "searched_s": {}}))
    assert main([*args, "--trials", "5"]) == 2
    assert "started with trials 20, not 5" in capsys.readouterr().err


def test_every_method_gets_the_same_requests_and_objective(tmp_path):
    """selective's own space tunes on two requests and holds out two others, finetune's on the
    experiment's own; gc's weighs leakage instead of MIA. In a benchmark all get the same: the
    experiment's request, held out the search's default, and the default objective."""
    from tune_unlearn.commands.benchmark import check_passthrough, plan_searches, with_common_settings

    given = tiny_args("digits_mislabeled")
    passthrough = with_common_settings(given, check_passthrough(given), "selective", tmp_path)
    assert passthrough[len(given):len(given) + 6] == ["--requests", "seed=0", "--holdout", "seed=1", "seed=2",
                                                      "seed=0,train_seed=1"]
    plans = plan_searches(["selective", "finetune", "gc"], 2, tmp_path, passthrough)
    for plan in plans.values():
        assert [r.label for r in plan.requests] == ["seed0"]
        assert [r.label for r in plan.holdout] == ["seed1", "seed2", "seed0_train1"]
        assert plan.num_samples == 2 and plan.weights == Weights()  # gc's space weighs leakage, not MIA
    assert {p.run_dir for p in plans.values()} == {tmp_path / n for n in ("selective", "finetune", "gc")}
    # what the user names is kept, for every method
    given = [*given, "--requests", "seed=3", "seed=4", "--weight", "mia=0.5"]
    passthrough = with_common_settings(given, check_passthrough(given), "selective", tmp_path)
    plans = plan_searches(["selective", "finetune", "gc"], 2, tmp_path, passthrough)
    assert all([r.label for r in p.holdout] == ["seed5", "seed6", "seed3_train1"] for p in plans.values())
    assert all(p.weights == Weights(mia=0.5) for p in plans.values())


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.ray
def test_benchmark_end_to_end_and_resumed(ray_address, tmp_path, session_cache, capsys):
    out = tmp_path / "bench"
    args = ["--methods", "finetune", "ssd", "--trials", "2", "--per-example", "6", "--out", str(out),
            "--cache-dir", str(session_cache), "--holdout", "seed=1", "--holdout-top", "1", "--reseeds", "2",
            "--reseed-top", "1",
            "--max-concurrent", "1",
            *tiny_args("digits_mislabeled")]
    assert main(args) == 0
    printed = capsys.readouterr()
    rows = read(out / "leaderboard.csv")
    assert [r["method"] for r in rows][-2:] == ["(original)", "(retrained)"]
    methods = rows[:-2]
    assert {r["method"] for r in methods} == {"finetune", "ssd"}
    for r in methods:  # each tuned with the same budget, judged on the held-out request
        assert r["trials"] == "2/2" and r["holdout_requests"] == "seed1"
        assert r["holdout_objective"] and r["defaults_holdout_objective"] and r["forget_true_acc"]
        assert r["forget_quality"] and r["lira_auc"] and float(r["cost_pct"]) > 0
        assert "original" in r["verdict"]
        assert r["tuning_objective_seeds_sd"]  # the best of each search was chosen on two unlearning seeds
    objectives = [float(r["holdout_objective"]) for r in methods]
    assert objectives == sorted(objectives, reverse=True)
    page = (out / "leaderboard.html").read_text()
    assert "<table>" in page and "ssd" in page and (out / "leaderboard.md").read_text() in printed.out
    # the searches' own held-out phase is where the numbers come from, the baselines' included
    holdout = json.loads((out / "ssd" / "holdout.json").read_text())
    best = next(c for c in holdout["configs"] if c["rank"] == 1)
    ssd = next(r for r in methods if r["method"] == "ssd")
    assert float(ssd["holdout_objective"]) == pytest.approx(best["holdout_objective"])
    original, retrained = rows[-2:]  # as the first search (finetune's) scored them
    baselines = json.loads((out / "finetune" / "holdout.json").read_text())["baselines"]["seed1"]
    assert float(original["holdout_objective"]) == pytest.approx(baselines["original"])
    assert float(retrained["holdout_objective"]) == pytest.approx(baselines["retrained_mean"])
    assert float(retrained["cost_pct"]) == 100 and retrained["forget_quality"] and retrained["holdout_objective_sd"]

    trial_files = sorted((out / "finetune").glob("*/result.json"))
    stamps = [p.stat().st_mtime_ns for p in trial_files]
    assert main(args) == 0  # a rerun: nothing searched again, the same leaderboard
    assert "2 searches already finished, not run again" in capsys.readouterr().err
    assert [p.stat().st_mtime_ns for p in trial_files] == stamps
    assert read(out / "leaderboard.csv") == rows
