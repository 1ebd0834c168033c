"""The best configurations run again with other unlearning seeds, and the best chosen on the
mean: the order it gives, what reseeds.json holds, and a finished search that did it."""

import json
import statistics

import pytest
import yaml

from conftest import space_file
from tune_unlearn.search.results import RESEED_FILE, RunRecord, TrialRecord, load_run


def trial(trial_id, objective):
    return TrialRecord(trial_id, "TERMINATED", {}, {"objective": objective})


def test_the_ranking_follows_the_mean_over_seeds_then_single_runs_then_failures(tmp_path):
    trials = [trial("a", -1.0), trial("b", -1.1), trial("c", -1.2), trial("d", -1.3), trial("e", -5.0)]
    reseeds = {"seeds": [0, 1, 2], "trials": {
        "a": {"objectives": [-1.0, -3.0, -2.9], "mean": -2.3, "sd": 1.1, "failed": None},  # lucky on seed 0
        "b": {"objectives": [-1.1, -1.0, -1.2], "mean": -1.1, "sd": 0.1, "failed": None},
        "c": {"objectives": [-1.2], "mean": None, "sd": None, "failed": "seed 1: diverged: NaN loss"}}}
    (tmp_path / RESEED_FILE).write_text(json.dumps(reseeds))
    record = RunRecord(tmp_path, {"params": {}, "num_samples": 5}, trials)
    assert [t.trial_id for t in record.ranked()] == ["b", "a", "d", "e", "c"]
    assert record.over_seeds("a")["mean"] == -2.3 and record.over_seeds("d") is None
    (tmp_path / RESEED_FILE).unlink()
    assert [t.trial_id for t in RunRecord(tmp_path, {}, trials).ranked()] == ["a", "b", "c", "d", "e"]


def test_reseeds_json_aggregates_each_seed_over_the_requests_like_the_trials(tmp_path):
    from tune_unlearn.search.options import SearchOptions
    from tune_unlearn.search.plan import make_plan
    from tune_unlearn.search.reruns import hparams_of
    from tune_unlearn.search.reseed import reseed_content, reseed_key

    options = SearchOptions(space=space_file(tmp_path), experiment="digits_mislabeled", requests=("seed=0", "seed=1"),
                            holdout=("none",), aggregate="worst", reseeds=3, storage_path=str(tmp_path), name="r")
    plan = make_plan(options)
    t = TrialRecord("t1", "TERMINATED", {"lam": 1e-6, "decay": 0.5, "ft_epochs": 1}, {"objective": -1.0})
    hparams = hparams_of(plan, t.config)
    assert hparams["lam"] == 1e-6 and hparams["mask_epochs"] == 2  # the space's fixed value
    results = {reseed_key(hparams, "seed0", 1): {"objective": -2.0}, reseed_key(hparams, "seed1", 1): {"objective": -4.0}}
    partial = reseed_content(plan, [t], ["seed0", "seed1"], results)["trials"]["t1"]
    assert partial["objectives"] == [-1.0, -4.0] and partial["mean"] is None  # seed 2 not run yet
    results[reseed_key(hparams, "seed0", 2)] = {"objective": -3.0}
    results[reseed_key(hparams, "seed1", 2)] = {"objective": -1.0}
    done = reseed_content(plan, [t], ["seed0", "seed1"], results)["trials"]["t1"]
    assert done["objectives"] == [-1.0, -4.0, -3.0]  # the worst request of each seed
    assert done["mean"] == pytest.approx(-8 / 3) and done["sd"] == pytest.approx(statistics.stdev([-1, -4, -3]))
    results[reseed_key(hparams, "seed1", 2)] = {"error": "diverged: NaN loss"}
    assert reseed_content(plan, [t], ["seed0", "seed1"], results)["trials"]["t1"]["failed"].startswith("seed 2: diverged")


def test_a_finished_search_chose_its_best_on_the_mean_over_seeds(finished_search, capsys):
    from tune_unlearn.search.plan import Plan
    from tune_unlearn.search.reseed import run_reseeds

    record = load_run(finished_search)
    reseeds = record.reseeds
    by_own_run = sorted(record.finished, key=lambda t: -t.result["objective"])
    assert reseeds["seeds"] == [0, 1] and set(reseeds["trials"]) == {t.trial_id for t in by_own_run[:2]}
    assert all(key.endswith("/seed0/seed1") for key in reseeds["results"])  # one request, seed 1
    for t in by_own_run[:2]:
        over = reseeds["trials"][t.trial_id]
        assert over["objectives"][0] == t.result["objective"] and len(over["objectives"]) == 2
        assert over["mean"] == pytest.approx(statistics.fmean(over["objectives"]))
    ranked = record.ranked()
    means = [reseeds["trials"][t.trial_id]["mean"] for t in ranked[:2]]
    assert means == sorted(means, reverse=True) and ranked[2].trial_id == by_own_run[2].trial_id
    best = yaml.safe_load((finished_search / "best_config.yaml").read_text())
    assert best["result"]["trial_id"] == ranked[0].trial_id
    assert best["result"]["over_seeds"]["mean"] == pytest.approx(means[0])
    # a repeated phase runs nothing again
    plan = Plan.from_json(json.loads((finished_search / "search.json").read_text()), finished_search)
    assert run_reseeds(plan, record, {}, False, True, 1.0)["trials"] == reseeds["trials"]
    assert "again with unlearning seeds" not in capsys.readouterr().out
