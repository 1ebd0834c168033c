"""The Optuna searcher Ray drives, exercised without Ray running: suggestions stay inside the
space, the sampler is seeded, and finished trials feed the study."""

from ray.tune.search.optuna import OptunaSearch

from tune_unlearn.search_space import load_space


def make(seed, metric="objective", mode="max"):
    space = load_space("default")
    searcher = OptunaSearch(space=None, metric=metric, mode=mode, seed=seed)
    searcher.set_search_properties(metric, mode, space.tune_space())
    return space, searcher


def test_suggestions_stay_in_the_space_and_respect_threshold_below_x_init():
    space, searcher = make(seed=0)
    for i in range(20):
        config = searcher.suggest(f"t{i}")
        assert set(config) == set(space.params)
        for name, spec in space.params.items():
            if spec.type == "choice":
                assert config[name] in spec.values
            else:
                assert spec.low <= config[name] <= spec.high
        assert isinstance(config["ft_epochs"], int)
        assert config["threshold"] <= config["x_init"]
        searcher.on_trial_complete(f"t{i}", result={"objective": -config["lam"]})


def test_the_sampler_is_seeded():
    first = [make(seed=7)[1].suggest("a") for _ in range(1)]
    again = [make(seed=7)[1].suggest("a") for _ in range(1)]
    other = [make(seed=8)[1].suggest("a") for _ in range(1)]
    assert first == again and first != other


def test_completed_and_failed_trials_reach_the_study():
    _, searcher = make(seed=0)
    searcher.suggest("ok")
    searcher.suggest("bad")
    searcher.on_trial_complete("ok", result={"objective": 0.9})
    searcher.on_trial_complete("bad", error=True)
    states = [t.state.name for t in searcher._ot_study.trials]
    assert states == ["COMPLETE", "FAIL"]
    assert searcher._ot_study.best_value == 0.9


def test_multi_objective_study_has_one_direction_per_component():
    metrics = ["retain_gap", "forget_gap", "heldout_gap", "mia_gap", "cost_ratio"]
    _, searcher = make(seed=0, metric=metrics, mode=["min"] * 5)
    searcher.suggest("a")
    searcher.on_trial_complete("a", result={"retain_gap": 0.0, "forget_gap": 1.0, "heldout_gap": 0.5, "mia_gap": 2.0, "cost_ratio": 0.1})
    study = searcher._ot_study
    assert [d.name for d in study.directions] == ["MINIMIZE"] * 5
    assert len(study.best_trials) == 1
