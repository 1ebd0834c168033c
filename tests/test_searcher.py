"""The Optuna searcher Ray drives, exercised without Ray running: suggestions stay inside the
space, the sampler is seeded, and finished trials feed the study."""

import json

import optuna
import pytest
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


def sampler_plans():
    """Every sampler x single/multi-objective combination the search command accepts."""
    from tune_unlearn.search.options import SAMPLERS

    return [(s, multi) for s in SAMPLERS for multi in (False, True) if multi or not s.startswith("nsga")]


@pytest.mark.parametrize("sampler,multi", sampler_plans())
def test_every_sampler_survives_the_pickling_tune_does_and_goes_on_after_a_restore(tmp_path, sampler, multi):
    """Tune pickles the searcher into tuner.pkl when the Tuner is built and saves its state with
    searcher.save; a resume unpickles tuner.pkl, sets the space again and restores the state.
    Optuna 5.1's NSGA samplers do not pickle; the search must not depend on it."""
    from ray import cloudpickle

    from tune_unlearn.commands.search import parse_options
    from tune_unlearn.search.plan import make_plan
    from tune_unlearn.search.tuner import make_searcher

    args = ["--space", "default", "--sampler", sampler, "--seed", "3", "--storage-path", str(tmp_path),
            "--name", "run", *(["--multi-objective"] if multi else [])]
    plan = make_plan(parse_options(args))
    plan.run_dir.mkdir(parents=True)
    metrics, _ = plan.objectives()

    def fresh(searcher_bytes):
        searcher = cloudpickle.loads(searcher_bytes)
        searcher.set_search_properties(None if multi else "objective", None if multi else "max", plan.space.tune_space())
        return searcher

    def finish(searcher, trial_id, value):
        searcher.on_trial_complete(trial_id, result={m: value for m in metrics})

    tuner_pkl = cloudpickle.dumps(make_searcher(plan))  # what Tuner(...) writes
    first = fresh(tuner_pkl)
    seen = [first.suggest("t0")]
    finish(first, "t0", 0.5)
    first.save(str(tmp_path / "state.pkl"))  # the experiment state Tune saves
    seen.append(first.suggest("t1"))  # asked after the last save, never finished: the driver was killed

    restored = fresh(tuner_pkl)
    restored.restore(str(tmp_path / "state.pkl"))
    assert type(restored._ot_study.sampler.sampler).__name__ == type(first._ot_study.sampler.sampler).__name__
    seen.append(restored.suggest("t2"))
    finish(restored, "t2", 0.25)
    states = [t.state.name for t in optuna.load_study(study_name="run", storage=f"sqlite:///{plan.run_dir / 'optuna.db'}").trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE"]  # t1 is marked failed: Tune will never report it
    assert seen[2] != seen[0]  # the start point is not run a second time


def test_a_moved_run_folder_resumes_against_its_own_study(tmp_path):
    """A run folder moved (or downloaded into another staging folder) after it was pickled: the
    resumed searcher reads and writes the optuna.db beside it, and nothing at the old place."""
    import shutil

    from ray import cloudpickle

    from tune_unlearn.commands.search import parse_options
    from tune_unlearn.search import study as study_module
    from tune_unlearn.search.plan import make_plan
    from tune_unlearn.search.tuner import make_searcher

    plan = make_plan(parse_options(["--space", "default", "--storage-path", str(tmp_path / "old"), "--name", "run"]))
    plan.run_dir.mkdir(parents=True)
    tuner_pkl = cloudpickle.dumps(make_searcher(plan))
    first = cloudpickle.loads(tuner_pkl)
    first.set_search_properties("objective", "max", plan.space.tune_space())
    first.suggest("t0")
    first.on_trial_complete("t0", result={"objective": 0.5})
    first.save(str(plan.run_dir / "state.pkl"))

    moved = tmp_path / "new" / "run"
    shutil.move(str(tmp_path / "old"), str(tmp_path / "new"))
    with study_module.studies_in(moved):  # what the driver does around Tuner.restore and fit
        restored = cloudpickle.loads(tuner_pkl)
        restored.set_search_properties("objective", "max", plan.space.tune_space())
        restored.restore(str(moved / "state.pkl"))
    assert study_module._bound_run_dir is None  # the next search in this process is not affected
    restored.suggest("t1")
    restored.on_trial_complete("t1", result={"objective": 0.25})
    values = [t.value for t in optuna.load_study(study_name="run", storage=f"sqlite:///{moved / 'optuna.db'}").trials]
    assert values == [0.5, 0.25]
    assert not (tmp_path / "old").exists()  # no empty study created where the run used to be


def test_the_searcher_stops_at_its_total_counting_a_trial_tune_lost_but_not_one_lost_while_running(tmp_path):
    """After a hard kill, the study can hold a finished trial that Tune's restored state lacks
    (it would run one trial too many), and a running one a restore marks as lost (it counts as
    nothing)."""
    from tune_unlearn.search.study import LOST_ATTR, StudySearch, open_storage

    space = load_space("default")
    searcher = StudySearch(metric="objective", mode="max", storage=open_storage(tmp_path), study_name="s",
                           sampler=optuna.samplers.RandomSampler(seed=0), total=3)
    searcher.set_search_properties("objective", "max", space.tune_space())
    searcher.suggest("t0")
    searcher.on_trial_complete("t0", result={"objective": 1.0})
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    lost = study.ask()  # running at the kill, unknown to Tune: marked by the restore
    study._storage.set_trial_system_attr(lost._trial_id, LOST_ATTR, True)
    study.tell(lost, state=optuna.trial.TrialState.FAIL)
    study.tell(study.ask(), 0.5)  # finished after Tune last saved its state: in the study only
    assert isinstance(searcher.suggest("t1"), dict)  # the third trial: the lost one does not count
    assert searcher.suggest("t2") == StudySearch.FINISHED  # t0, the one Tune lost, t1


def test_a_trial_whose_node_had_no_data_does_not_count_against_the_total(tmp_path):
    """It never ran: a resume, once the node has the data, runs a trial in its place."""
    from tune_unlearn.search.study import LOST_ATTR, StudySearch, open_storage
    from tune_unlearn.search.trial_files import FAILED_KEY, NODE_DATA_KEY, finished_reports

    space = load_space("default")
    searcher = StudySearch(metric="objective", mode="max", storage=open_storage(tmp_path), study_name="s",
                           sampler=optuna.samplers.RandomSampler(seed=0), total=1)
    searcher.set_search_properties("objective", "max", space.tune_space())
    searcher.suggest("t0")
    searcher.on_trial_complete("t0", result={"objective": float("nan"), FAILED_KEY: "node 10.0.0.9: no data",
                                             NODE_DATA_KEY: True})
    [t0] = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    assert t0.state == optuna.trial.TrialState.FAIL and t0.system_attrs.get(LOST_ATTR)
    assert isinstance(searcher.suggest("t1"), dict)
    searcher.on_trial_complete("t1", result={"objective": 1.0})
    assert searcher.suggest("t2") == StudySearch.FINISHED
    # and its final report is not one a resume reports again: that trial runs
    for trial, report in (("t0", {FAILED_KEY: "node 10.0.0.9: no data", NODE_DATA_KEY: True}), ("t1", {"objective": 1.0})):
        (tmp_path / f"trial_{trial}").mkdir()
        (tmp_path / f"trial_{trial}" / "final_result.json").write_text(json.dumps(report))
    assert list(finished_reports(tmp_path)) == ["t1"]
