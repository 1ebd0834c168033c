"""Forget requests (parsing, the default held-out set, what is refused), aggregation over
requests, and the per-example gap's estimator on hand-made confidences."""

import math

import numpy as np
import pytest

from tune_unlearn.data.experiment import load_experiment
from tune_unlearn.data.requests import (base_request, check_requests, default_holdout, parse_request,
                                        parse_requests)
from tune_unlearn.errors import UserError
from tune_unlearn.evaluation.example_gap import FLOOR, ExampleReference, leave_one_out_gaps
from tune_unlearn.evaluation.objective import Weights, aggregate, aggregate_components, objective
from tune_unlearn.pipeline import RunResult
from tune_unlearn.search.trainable import combined_report


def test_requests_parse_from_the_command_line_and_from_spaces():
    assert parse_request("seed=3,train_seed=1", "--requests").label == "seed3_train1"
    assert parse_request({"classes": [3, 5]}, "space").label == "class3-5"
    assert parse_request("classes=3+5", "--requests") == parse_request({"classes": [3, 5]}, "space")
    assert parse_request({"fraction": 0.05, "seed": 2}, "space").label == "seed2_frac0.05"
    exp = load_experiment("digits_mislabeled")
    assert parse_request("seed=4", "x").experiment(exp).forget.seed == 4
    assert parse_request("train_seed=2", "x").experiment(exp).train.seed == 2
    for spec, message in [("speed=1", "unknown request key 'speed'; allowed: seed, classes, fraction, train_seed"),
                          ("seed", "a request is KEY=VALUE"), ("seed=1.5", "request key seed takes a whole number"),
                          ("classes=a", "takes class numbers")]:
        with pytest.raises(UserError, match=message):
            parse_request(spec, "--requests")
    with pytest.raises(UserError, match="request seed1 is listed twice"):
        parse_requests(["seed=1", "seed=1"], "--requests")


def test_the_default_holdout_is_two_new_forget_sets_and_another_original():
    mislabeled = load_experiment("digits_mislabeled")
    tuning = parse_requests(["seed=0", "seed=1"], "x")
    assert [r.label for r in default_holdout(tuning, mislabeled)] == ["seed2", "seed3", "seed0_train1"]
    classes = load_experiment("digits_class")  # forgets class 3
    assert [r.label for r in default_holdout([base_request(classes)], classes)] == ["class0", "class1", "class3_train1"]
    check_requests(tuning, default_holdout(tuning, mislabeled), mislabeled)


def test_a_held_out_request_the_search_tunes_on_is_refused():
    exp = load_experiment("digits_mislabeled")  # forget seed 0
    with pytest.raises(UserError, match="held-out request seed0 makes the same forget set and models as tuning request"):
        check_requests([base_request(exp), *parse_requests(["seed=1"], "x")], parse_requests(["seed=0"], "x"), exp)
    classes = load_experiment("digits_class")  # with whole classes the seed chooses nothing
    with pytest.raises(UserError, match="held-out request seed5"):
        check_requests([base_request(classes)], parse_requests(["seed=5"], "x"), classes)
    with pytest.raises(UserError, match="changes the forget rule from 'random' to 'classes'"):
        digits = load_experiment("digits")
        check_requests([base_request(digits)], parse_requests(["classes=3"], "x"), digits)


def test_objectives_of_several_requests_aggregate_by_mean_or_worst():
    assert aggregate([-1.0, -3.0]) == -2.0 and aggregate([-1.0, -3.0], "worst") == -3.0
    comps = [{"forget_gap": 1.0, "cost_ratio": 0.1, "asr_gap": 5.0}, {"forget_gap": 3.0, "cost_ratio": 0.3}]
    assert aggregate_components(comps) == pytest.approx({"forget_gap": 2.0, "cost_ratio": 0.2})
    assert aggregate_components(comps, "worst") == {"forget_gap": 3.0, "cost_ratio": 0.3}  # components are minimised
    with pytest.raises(ValueError, match="unknown aggregate 'best'"):
        aggregate([1.0], "best")


def run_result(objective_value: float, forget_gap: float, val_acc: float) -> RunResult:
    comps = {"forget_gap": forget_gap, "cost_ratio": 0.1}
    metrics = {"retain_acc": 99.0, "forget_acc": 0.0, "val_acc": val_acc, "mia": 0.0, "time_s": 1.0, "cost": 10}
    test = {**{k: v for k, v in metrics.items() if k != "val_acc"}, "test_acc": val_acc - 1}
    return RunResult("selective", "digits", {}, metrics, {}, {}, objective_value, comps, test, {}, {},
                     objective_value - 0.5, comps, {"mask_zero_share": 0.5})


def test_a_trial_on_several_requests_reports_each_and_their_aggregate():
    results = [("seed0", run_result(-1.0, 0.0, 98.0)), ("seed1", run_result(-3.0, 2.0, 96.0))]
    mean = combined_report(results, 0, "mean")
    assert mean["objective"] == -2.0 and mean["test_objective"] == -2.5 and mean["forget_gap"] == 1.0
    assert mean["seed0/objective"] == -1.0 and mean["seed1/objective"] == -3.0 and mean["seed1/forget_gap"] == 2.0
    assert mean["val_acc"] == 97.0 and mean["test_acc"] == 96.0 and mean["requests"] == 2 and mean["final"] == 1
    worst = combined_report(results, 0, "worst")
    assert worst["objective"] == -3.0 and worst["test_objective"] == -3.5 and worst["forget_gap"] == 2.0
    single = combined_report(results[:1], 0, "mean")  # one request: the report a search always made
    assert single["objective"] == -1.0 and "seed0/objective" not in single and "requests" not in single


def test_example_gap_on_hand_made_confidences():
    # Three retrained models, three forget samples. Sample 0: they agree exactly (a forgotten
    # class); sample 1: contested; sample 2: in between.
    confs = np.array([[-15.0, 0.0, 2.0], [-15.0, 4.0, 3.0], [-15.0, 8.0, 4.0]])
    ref = ExampleReference.fit(confs)
    own = np.array([0.0, 16.0, 1.0])  # per-sample variances (ddof 1)
    pooled = own.mean()
    expected = np.maximum(np.sqrt((own + pooled) / 2), FLOOR)
    assert ref.mean == pytest.approx([-15.0, 4.0, 3.0]) and ref.spread == pytest.approx(expected)
    assert ref.spread[0] == pytest.approx(math.sqrt(17 / 3 / 2))  # an exact agreement borrows the pooled spread
    assert ref.gap(ref.mean) == 0.0  # the retrained models' own mean costs nothing
    assert ref.gap(ref.mean + 0.9 * ref.spread) == 0.0  # within one spread: a tie
    far = ref.mean + np.array([3.0, 0.0, 0.0]) * ref.spread  # one sample 3 spreads away: (3 - 1) / 3 samples
    assert ref.gap(far) == pytest.approx(2 / 3)
    assert ref.gap(np.array([-5.0, 4.0, 3.0])) == pytest.approx((10 / ref.spread[0] - 1) / 3)  # -5 against -15
    agree = ExampleReference.fit(np.full((3, 2), -15.0))  # no spread anywhere: the floor
    assert agree.spread == pytest.approx([FLOOR, FLOOR]) and agree.gap(np.array([-13.0, -15.0])) == pytest.approx(0.5)
    one = ExampleReference.fit(confs[:1])  # one retrained model: the floor alone
    assert one.spread == pytest.approx([FLOOR] * 3)
    loo = leave_one_out_gaps(confs)
    assert len(loo) == 3 and all(g >= 0 for g in loo) and leave_one_out_gaps(confs[:1]) == []


def test_example_gap_is_a_weighted_component():
    comps = {"retain_gap": 0.0, "example_gap": 2.0, "cost_ratio": 0.1}
    assert objective(comps, Weights(example=1.0)) == pytest.approx(-2.1)
    assert objective(comps, Weights(example=0.0)) == pytest.approx(-0.1)
    with pytest.raises(UserError, match="objective weight example must be a number >= 0"):
        Weights().updated({"example": -1})
