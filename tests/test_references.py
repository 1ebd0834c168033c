import math
from pathlib import Path

import pytest
import torch

from conftest import copy_cache
from tune_unlearn.errors import UserError
from tune_unlearn.pipeline import prepare
from tune_unlearn.files import atomic_write


def _count_training(monkeypatch):
    import tune_unlearn.evaluation.references.training as references

    calls = []
    real = references.train_recipe

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(references, "train_recipe", counting)
    return calls


ALL_TRAINED = {"original": "trained", "retrain-0": "trained", "retrain-1": "trained", "retrain-2": "trained"}
ALL_CACHED = {role: "cached" for role in ALL_TRAINED}


@pytest.fixture
def filled_cache(prepared, session_cache, tmp_path):
    """A copy of the session's cache with the tiny experiment's references (trained once) as its
    only models: the session's other tests leave models of other forget seeds and experiments."""
    cache = copy_cache(session_cache, tmp_path / "cache")
    ours = {Path(path).name for path in prepared.refs.paths.values()}
    for model in cache.rglob("*.pt"):
        if model.name not in ours:
            model.unlink()
    return cache


@pytest.mark.train
def test_second_prepare_is_a_cache_hit_and_says_so(tiny_experiment, runtime, tmp_path, monkeypatch):
    from tune_unlearn.data.load import load_data
    from tune_unlearn.evaluation.references import untrained_seconds

    calls = _count_training(monkeypatch)
    data = load_data(tiny_experiment, runtime.device)
    forecast = untrained_seconds(tiny_experiment, data, runtime, tmp_path)
    first = prepare(tiny_experiment, runtime, tmp_path, log=lambda m: None)
    assert first.refs.status == ALL_TRAINED and len(calls) == 4  # the original and K = 3 retrained models
    # The forecast of the training (what decides whether a search trains its requests in parallel
    # tasks) is the work the training then counted, at the same prices; none once all are cached
    counted = [first.refs.original["val"], *(m["val"] for m in first.refs.retrained)]
    assert forecast == pytest.approx(sum(m["cost"] for m in counted), rel=1e-6)
    assert untrained_seconds(tiny_experiment, data, runtime, tmp_path) == 0
    messages = []
    second = prepare(tiny_experiment, runtime, tmp_path, log=messages.append)
    assert second.refs.status == ALL_CACHED and len(calls) == 4
    assert sum("cache hit" in m for m in messages) == 4
    assert second.refs.retrained == first.refs.retrained
    assert all(torch.equal(first.refs.original_state[k], second.refs.original_state[k]) for k in first.refs.original_state)
    # the device's prices are measured once and cached: the same cost model, nothing measured again
    assert second.refs.cost_model == first.refs.cost_model and not any("calibrating" in m for m in messages)


def test_the_retrained_models_differ_and_their_ensemble_has_a_spread(prepared):
    refs = prepared.refs
    states = refs.retrain_states
    assert len(states) == 3 and not torch.equal(states[0]["fc.weight"], states[1]["fc.weight"])
    reference = refs.reference("val")
    assert reference["n_models"] == 3
    values = [m["val"]["val_acc"] for m in refs.retrained]
    assert reference["val_acc"] == pytest.approx(sum(values) / 3)
    assert reference["val_acc_sd"] == pytest.approx(torch.tensor(values).std().item())
    assert reference["cost"] > 0 and reference["time_s"] > 0  # training cost (estimated s) and time, for the cost ratio
    # the cost is the counted work at the device's prices, the same for every retrained model
    prices = refs.prices()  # either price may be 0 where the other explains the steps' time (a tiny network: calls)
    assert prices.mac_s >= 0 and prices.call_s >= 0 and prices.mac_s + prices.call_s > 0
    for model in refs.retrained:
        assert model["val"]["cost"] == pytest.approx(prices.seconds(model["val"]["macs"], model["val"]["calls"]))
    steps = refs.retrained[0]["val"]["steps"]
    assert steps == 2 * math.ceil(len(prepared.data.retain) / prepared.experiment.train.batch_size)  # 2 epochs


def test_growing_the_ensemble_trains_only_the_new_model(prepared, tiny_experiment, runtime, filled_cache, monkeypatch):
    from dataclasses import replace

    calls = _count_training(monkeypatch)
    four = prepare(replace(tiny_experiment, retrained_models=4), runtime, filled_cache, log=lambda m: None).refs
    assert len(calls) == 1  # one more retrained model, nothing else
    assert four.status == {**ALL_CACHED, "retrain-3": "trained"} and four.reference("val")["n_models"] == 4
    assert four.retrained[:3] == prepared.refs.retrained


def test_a_new_forget_seed_reuses_the_original_and_retrains_only_the_references(tiny_experiment, runtime, filled_cache):
    from dataclasses import replace

    # one retrained model is enough to tell: the original is not trained again, the references are
    other = replace(tiny_experiment, forget=replace(tiny_experiment.forget, seed=1), retrained_models=1)
    refs = prepare(other, runtime, filled_cache, log=lambda m: None).refs
    assert refs.status == {"original": "cached", "retrain-0": "trained"}


def test_a_corrupt_entry_is_rebuilt(tiny_experiment, runtime, filled_cache):
    refs = prepare(tiny_experiment, runtime, filled_cache, log=lambda m: None).refs
    with open(refs.paths["retrain-1"], "wb") as f:
        f.write(b"not a checkpoint")
    messages = []
    again = prepare(tiny_experiment, runtime, filled_cache, log=messages.append).refs
    assert again.status == {**ALL_CACHED, "retrain-1": "trained"}
    assert any("unusable" in m for m in messages)
    assert torch.load(again.paths["retrain-1"], weights_only=True)["meta"]["role"] == "retrain"


def test_trials_never_train(tiny_experiment, runtime, tmp_path):
    with pytest.raises(RuntimeError, match="not in the cache"):
        prepare(tiny_experiment, runtime, tmp_path, allow_training=False, log=lambda m: None)


def test_an_interrupted_write_leaves_no_entry(tmp_path):
    target = tmp_path / "entry.pt"

    def dies_half_way(tmp):
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, dies_half_way)
    assert list(tmp_path.iterdir()) == []


def test_a_user_checkpoint_replaces_the_original(prepared, tiny_experiment, runtime, tmp_path, filled_cache):
    path = tmp_path / "mine.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in prepared.refs.original_state.items()}}, path)
    refs = prepare(tiny_experiment, runtime, filled_cache, original_checkpoint=str(path), log=lambda m: None).refs
    assert refs.status == {**ALL_CACHED, "original": "checkpoint"}  # the retrained models need no original
    assert refs.original["test"]["test_acc"] == pytest.approx(prepared.refs.original["test"]["test_acc"])


def test_a_mismatched_checkpoint_is_a_one_line_error(prepared, tiny_experiment, runtime, tmp_path):
    path = tmp_path / "wrong.pt"
    state = dict(prepared.refs.original_state)
    state["fc.weight"] = torch.zeros(100, state["fc.weight"].shape[1])
    torch.save(state, path)
    with pytest.raises(UserError, match=r"fc.weight has shape \(100, 32\), the model needs \(10, 32\)"):
        prepare(tiny_experiment, runtime, tmp_path / "c", original_checkpoint=str(path), log=lambda m: None)
    path.write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        prepare(tiny_experiment, runtime, tmp_path / "c", original_checkpoint=str(path), log=lambda m: None)
    assert not (tmp_path / "c").exists()  # nothing trained, nothing cached


def test_a_local_search_trains_its_requests_in_parallel_tasks_only_when_that_pays(prepared, session_cache, tmp_path,
                                                                                  monkeypatch):
    """Tasks save at most the training of all request groups but the longest, and each starts a
    process that imports torch: a tiny network's requests train here, one after the other."""
    from conftest import cache_with_calibration, search_args, space_file
    from tune_unlearn.commands.search import parse_options
    import tune_unlearn.search.references as references
    from tune_unlearn.search.plan import make_plan

    cache = cache_with_calibration(session_cache, tmp_path / "cache")
    plan = make_plan(parse_options(["--space", space_file(tmp_path), *search_args(
        tmp_path, cache, "two", "--requests", "seed=0", "seed=1", experiment="digits_mislabeled")]))
    groups = references.request_groups(plan)
    assert len(groups) == 2 and not references.parallel_training_pays(plan, groups, download=False)
    monkeypatch.setattr(references, "TASK_START_S", 0.0)  # were starting a task free, they would pay
    assert references.parallel_training_pays(plan, groups, download=False)
    assert not list(cache.rglob("*.pt"))  # a forecast trains nothing


def test_the_forecast_counts_a_model_that_two_requests_share_once(filled_cache, tmp_path):
    """Two forget sets of one original (random forgetting: the original does not depend on the
    forget set) are one group, trained in one process: its forecast is what the first request
    trains and then what the second still lacks, not the shared original twice."""
    from conftest import cache_with_calibration, search_args, space_file
    from tune_unlearn.commands.search import parse_options
    from tune_unlearn.data.load import load_data
    from tune_unlearn.evaluation.references import untrained_seconds
    from tune_unlearn.runtime import make_runtime
    from tune_unlearn.search.plan import make_plan
    from tune_unlearn.search.references import group_seconds, request_groups

    empty = tmp_path / "empty"
    plan = make_plan(parse_options(["--space", space_file(tmp_path), *search_args(
        tmp_path, empty, "shared", "--requests", "seed=0", "seed=1")]))
    [group] = request_groups(plan)
    [(_, _, first), (_, _, second)] = group
    runtime = make_runtime("auto")  # as group_seconds

    def seconds(exp, cache):
        return untrained_seconds(exp, load_data(exp, runtime.device), runtime, cache, threads=1)

    # `filled_cache` holds the first request's models (the session's tiny experiment)
    assert seconds(first, filled_cache) == 0
    still = seconds(second, filled_cache)  # its original trained (and cached) by the first
    cache_with_calibration(filled_cache, empty)  # the same prices, no models
    [forecast] = group_seconds(plan, [group], download=False)
    assert 0 < still < seconds(second, empty)
    assert forecast == pytest.approx(seconds(first, empty) + still)
