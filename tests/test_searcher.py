"""The Optuna searcher Ray drives, exercised without Ray running: suggestions stay inside the
space, the sampler is seeded, and finished trials feed the study."""

from ray.tune.search.optuna import OptunaSearch

from tune_unlearn.search.space import load_space


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


def test_a_restored_searcher_does_not_enqueue_its_start_point_twice_into_a_stored_study(tmp_path):
    """What Tuner.restore does to the searcher: a fresh one from tuner.pkl gets the space (which
    opens the stored study and would enqueue the start point again), then its saved state."""
    import optuna

    from tune_unlearn.search.study import StudySearch, open_storage

    space = load_space("default")
    from tune_unlearn.methods import get_method

    start = space.start_point(get_method(space.method).resolve())
    assert start

    def fresh(cls):
        searcher = cls(metric="objective", mode="max", points_to_evaluate=[start], storage=open_storage(tmp_path),
                       study_name="s", sampler=optuna.samplers.TPESampler(seed=0))
        searcher.set_search_properties("objective", "max", space.tune_space())
        return searcher

    first = fresh(StudySearch)
    assert first.suggest("t0") == start  # the start point runs first
    first.on_trial_complete("t0", result={"objective": 1.0})
    first.save(str(tmp_path / "state.pkl"))

    def waiting():
        study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
        return len(study.get_trials(states=(optuna.trial.TrialState.WAITING,)))

    fresh(OptunaSearch)
    assert waiting() == 1  # Ray's own searcher: the start point is queued again and would run twice
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    study._storage.set_trial_state_values(study.get_trials()[-1]._trial_id, optuna.trial.TrialState.FAIL)
    restored = fresh(StudySearch)
    restored.restore(str(tmp_path / "state.pkl"))
    assert waiting() == 0
    config = restored.suggest("t1")
    assert config != start and len(restored._ot_study.trials) == 3  # t0, the failed duplicate, t1
