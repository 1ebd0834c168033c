"""The objective's properties: gaps to the retrained ensemble in either direction, in units of
its spread (with a floor), every measure counted, cost compared like for like."""

import pytest
import torch
from torch import nn

from tune_unlearn.cost import CostMeter, CostModel, fit_prices
from tune_unlearn.errors import UserError
from tune_unlearn.evaluation.objective import FLOOR, Weights, components, ensemble, leave_one_out, score

RETRAINED = [  # three retrained models on the validation split; the forgotten class is never predicted
    {"retain_acc": 99.0, "forget_acc": 0.0, "val_acc": 97.0, "mia": 10.0, "time_s": 9.0, "cost": 1000},
    {"retain_acc": 99.5, "forget_acc": 0.0, "val_acc": 98.0, "mia": 14.0, "time_s": 11.0, "cost": 1000},
    {"retain_acc": 100.0, "forget_acc": 0.0, "val_acc": 99.0, "mia": 12.0, "time_s": 10.0, "cost": 1000},
]
REF = ensemble(RETRAINED)  # val_acc 98 ± 1, mia 12 ± 2, forget 0 ± 0, retain 99.5 ± 0.5


def unlearned(**changes):
    return {"retain_acc": 99.5, "forget_acc": 0.0, "val_acc": 98.0, "mia": 12.0, "time_s": 1.0, "cost": 100, **changes}


def test_ensemble_holds_mean_spread_and_size():
    assert REF["n_models"] == 3
    assert REF["val_acc"] == pytest.approx(98.0) and REF["val_acc_sd"] == pytest.approx(1.0)
    assert REF["mia_sd"] == pytest.approx(2.0) and REF["forget_acc_sd"] == 0.0


def test_within_the_spread_is_a_tie_and_only_cost_separates():
    inside = components(unlearned(val_acc=98.9, mia=10.5), REF)
    assert inside["heldout_gap"] == 0 and inside["mia_gap"] == 0
    _, cheap = score(unlearned(val_acc=98.9, cost=50), REF, Weights())
    _, dear = score(unlearned(val_acc=98.0, cost=500), REF, Weights())
    assert cheap > dear


def test_no_reward_for_deviating_in_either_direction():
    above = components(unlearned(val_acc=98.0 + 3.0), REF)["heldout_gap"]  # better test accuracy than retraining
    below = components(unlearned(val_acc=98.0 - 3.0), REF)["heldout_gap"]
    assert above == below == pytest.approx(2.0)  # 3 spreads away, the first one free
    assert score(unlearned(val_acc=101.0), REF, Weights())[1] < score(unlearned(), REF, Weights())[1]


def test_gaps_are_in_units_of_the_spread():
    # the same 4-point MIA difference is 2 spreads of a 2-point sd, but 4 of a 1-point sd
    assert components(unlearned(mia=16.0), REF)["mia_gap"] == pytest.approx(1.0)
    narrow = ensemble([{**m, "mia": 12.0 + d} for m, d in zip(RETRAINED, (-1.0, 0.0, 1.0))])
    assert components(unlearned(mia=16.0), narrow)["mia_gap"] == pytest.approx(3.0)


def test_a_spread_near_zero_is_floored():
    # every retrained model has 0% on the forgotten class: 5 points is 5 floors, not infinity
    gap = components(unlearned(forget_acc=5.0), REF)["forget_gap"]
    assert gap == pytest.approx(5.0 / FLOOR - 1)


@pytest.mark.parametrize("key,component", [("retain_acc", "retain_gap"), ("forget_acc", "forget_gap"),
                                           ("val_acc", "heldout_gap"), ("mia", "mia_gap")])
def test_every_measure_counts(key, component):
    base = score(unlearned(), REF, Weights())[1]
    comps, value = score(unlearned(**{key: REF[key] + 20.0}), REF, Weights())
    assert comps[component] > 0 and value < base
    assert score(unlearned(**{key: REF[key] + 20.0}), REF, Weights().updated({component.removesuffix("_gap"): 0.0}))[1] == base


def test_the_test_split_is_scored_with_its_own_key():
    test_ref = ensemble([{"test_acc": m["val_acc"], **{k: v for k, v in m.items() if k != "val_acc"}} for m in RETRAINED])
    metrics = {"test_acc": 93.0, **{k: v for k, v in unlearned().items() if k != "val_acc"}}
    assert components(metrics, test_ref)["heldout_gap"] == pytest.approx(4.0)


def test_cost_is_compared_like_for_like_and_wall_time_does_not_count():
    comps = components(unlearned(cost=250), REF)
    assert comps["cost_ratio"] == pytest.approx(0.25)
    slow = score(unlearned(cost=250, time_s=100.0), REF, Weights())[1]
    fast = score(unlearned(cost=250, time_s=0.1), REF, Weights())[1]
    assert slow == fast  # how many trials shared the machine changes nothing


def test_the_original_scores_below_an_unlearning_that_matches_the_ensemble():
    original = {"retain_acc": 100.0, "forget_acc": 99.0, "val_acc": 98.5, "mia": 90.0, "time_s": 0.0, "cost": 0}
    _, doing_nothing = score(original, REF, Weights())
    _, matching = score(unlearned(cost=150), REF, Weights())
    assert doing_nothing < matching
    # a retrained model scored against the others is what a perfect unlearning scores: its full
    # cost (ratio 1) and whatever gaps the spread of two models leaves, far above doing nothing
    perfect = leave_one_out(RETRAINED, Weights())
    assert len(perfect) == 3 and all(doing_nothing + 50 < p <= -1.0 for p in perfect)


@pytest.mark.parametrize("values,message", [({"time": 1.0}, "unknown objective weight 'time'"),
                                            ({"mia": -1}, "must be a number >= 0"), ({"cost": "abc"}, "abc")])
def test_bad_weights_are_refused(values, message):
    with pytest.raises(UserError, match=message):
        Weights().updated(values, "--weight")


def test_the_cost_meter_counts_forward_and_backward_macs_only_while_running():
    layer = nn.Linear(4, 3)
    x = torch.randn(5, 4)
    meter = CostMeter()
    layer(x)
    assert meter.macs == 0  # not running
    with meter.counting():
        with torch.no_grad():
            layer(x)
        assert meter.macs == 5 * 3 * 4  # forward only
        layer(x).sum().backward()
    assert meter.macs == 5 * 3 * 4 + 2 * (5 * 3 * 4)  # forward + weight gradient; the input needs none
    conv = nn.Conv2d(2, 4, 3, padding=1)
    with meter.counting():
        with torch.no_grad():
            conv(torch.randn(1, 2, 5, 5))
    assert meter.macs == 180 + 4 * 25 * 2 * 9


def test_the_meter_counts_layer_calls_with_their_backward_products_and_optimiser_steps():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    meter = CostMeter()
    with meter.counting():
        with torch.no_grad():
            model(torch.randn(2, 4))
        assert (meter.calls, meter.steps) == (2, 0)  # two layers, forward only
        model(torch.randn(2, 4)).sum().backward()
        optimizer.step()
    # first layer: forward + weight gradient (its input needs none); second: + input gradient
    assert (meter.calls, meter.steps) == (2 + 2 + 3, 1)
    optimizer.step()
    assert meter.steps == 1  # not running


def test_prices_fitted_from_steps_recover_the_per_call_and_per_mac_price():
    mac_s, call_s = 2e-11, 5e-5
    points = [(mac_s * m + call_s * 60, {"macs": m, "calls": 60}) for m in (1e8, 4e8, 1.6e9)]
    fitted = fit_prices(points)
    assert fitted == pytest.approx((mac_s, call_s), rel=1e-6)


def test_smaller_steps_over_the_same_data_cost_more_though_their_macs_are_equal():
    """What the search must not exploit: one epoch in batches of 8 does the arithmetic of one
    epoch in batches of 64, but 8 times the steps, and the priced cost says so."""
    from tune_unlearn.data.parts import TensorPart
    from tune_unlearn.runtime import make_runtime
    from tune_unlearn.training import finetune

    torch.manual_seed(0)
    images, labels = torch.randn(64, 1, 4, 4), torch.randint(0, 3, (64,))
    part = TensorPart("retain", images, labels, torch.arange(64), torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1),
                      0, False, False)
    prices = CostModel(mac_s=1e-10, call_s=1e-4)
    counts = {}
    for batch_size in (8, 64):
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
        meter = CostMeter()
        with meter.counting():
            finetune(model, part, make_runtime("cpu"), epochs=1, lr=0.01, batch_size=batch_size)
        counts[batch_size] = meter.counts()
    assert counts[8]["macs"] == counts[64]["macs"]
    assert (counts[8]["steps"], counts[64]["steps"]) == (8, 1)
    assert prices.priced(counts[8])["cost"] > 5 * prices.priced(counts[64])["cost"]
