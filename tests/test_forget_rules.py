"""Corrective forget rules (mislabeled, backdoor): the splits, the trigger, the measures they
add (forget_true_acc, asr) and their objective components."""

import pytest
import torch
from torch import nn

from tune_unlearn.data.load import load_data
from tune_unlearn.errors import UserError
from tune_unlearn.data.experiment import ForgetSpec, TriggerSpec, load_experiment
from tune_unlearn.data.forget_rules import make_split, stamp, training_set
from tune_unlearn.evaluation.metrics import evaluate
from tune_unlearn.evaluation.objective import Weights, component_names, components, objective

LABELS = torch.arange(1000) % 10
TINY = {"model.width": 4, "train.epochs": 2, "eval.batch_size": 512}


def test_mislabeled_changes_exactly_the_forget_labels_to_other_classes_and_is_seeded():
    a = make_split(LABELS, ForgetSpec(rule="mislabeled", fraction=0.1, seed=3), 10)
    again = make_split(LABELS, ForgetSpec(rule="mislabeled", fraction=0.1, seed=3), 10)
    other = make_split(LABELS, ForgetSpec(rule="mislabeled", fraction=0.1, seed=4), 10)
    assert len(a.forget) == 100 and sorted(a.forget.tolist() + a.retain.tolist()) == list(range(1000))
    changed = torch.nonzero(a.labels != LABELS).squeeze(1)
    assert torch.equal(changed, a.forget)  # every forget label is wrong, and nothing else changed
    assert torch.equal(a.labels[a.retain], LABELS[a.retain])  # D_r is clean
    assert torch.equal(a.true_labels, LABELS)
    assert torch.equal(a.forget, again.forget) and torch.equal(a.labels, again.labels)
    assert not torch.equal(a.forget, other.forget)
    assert a.poisoned is None


def test_mislabeled_wrong_labels_cover_the_other_classes_and_respect_the_pool():
    split = make_split(LABELS, ForgetSpec(rule="mislabeled", fraction=0.2, classes=(2, 7), seed=0), 10)
    assert set(LABELS[split.forget].tolist()) <= {2, 7}
    wrong = split.labels[split.forget]
    assert (wrong != LABELS[split.forget]).all()
    for true in (2, 7):  # uniform over the nine other classes: every one of them drawn
        assert set(wrong[LABELS[split.forget] == true].tolist()) == set(range(10)) - {true}
    with pytest.raises(UserError, match="only 200 are eligible"):
        make_split(LABELS, ForgetSpec(rule="mislabeled", fraction=0.3, classes=(2, 7)), 10)


def test_backdoor_poisons_other_classes_with_the_target_and_forgets_the_identified_share():
    full = make_split(LABELS, ForgetSpec(rule="backdoor", fraction=0.1, target=4, seed=1), 10)
    assert len(full.poisoned) == 100 and torch.equal(full.forget, full.poisoned)
    assert (LABELS[full.poisoned] != 4).all() and (full.labels[full.poisoned] == 4).all()
    assert torch.equal(torch.nonzero(full.labels != LABELS).squeeze(1), full.poisoned)
    half = make_split(LABELS, ForgetSpec(rule="backdoor", fraction=0.1, target=4, identified=0.5, seed=1), 10)
    assert torch.equal(half.poisoned, full.poisoned) and len(half.forget) == 50
    assert set(half.forget.tolist()) <= set(half.poisoned.tolist())
    unidentified = sorted(set(half.poisoned.tolist()) - set(half.forget.tolist()))
    assert set(unidentified) <= set(half.retain.tolist())  # the rest stay poisoned in D_r


@pytest.mark.parametrize("corner,rows,cols", [("bottom_right", slice(5, 8), slice(5, 8)),
                                              ("top_left", slice(0, 3), slice(0, 3)),
                                              ("bottom_left", slice(5, 8), slice(0, 3))])
def test_the_trigger_is_stamped_exactly_where_asked(corner, rows, cols):
    images = torch.rand(4, 2, 8, 8) * 0.5
    out = stamp(images, TriggerSpec(size=3, corner=corner, value=1.0))
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[rows, cols] = True
    assert (out[..., inside] == 1.0).all()
    assert torch.equal(out[..., ~inside], images[..., ~inside])
    assert images.max() <= 0.5  # the input is left alone


@pytest.fixture(scope="module")
def backdoor_data():
    return load_data(load_experiment("digits_backdoor", TINY))


def corner_lit(x: torch.Tensor) -> torch.Tensor:
    """Per image: is the 2x2 bottom-right corner as bright as the brightest pixel (the trigger
    is white, digits' corners are background)?"""
    return x[:, 0, -2:, -2:].amin((1, 2)) >= x.amax((1, 2, 3)) - 1e-6


def test_training_set_stamps_and_relabels_exactly_the_poisoned_samples():
    forget = ForgetSpec(rule="backdoor", fraction=0.1, target=4, seed=1)
    split = make_split(LABELS, forget, 10)
    images = torch.rand(1000, 1, 8, 8) * 0.5
    x, y = training_set(images, LABELS, split, forget)
    changed = torch.nonzero((x != images).flatten(1).any(1)).squeeze(1)
    assert torch.equal(changed, split.poisoned) and corner_lit(x[split.poisoned]).all()
    assert torch.equal(y, split.labels) and images.max() <= 0.5


def test_loaded_backdoor_data_carries_the_trigger_where_intended(backdoor_data):
    data = backdoor_data
    x = torch.cat([x for x, _ in data.train.batches(4096)])
    lit = corner_lit(x)
    assert lit[data.split.poisoned].all()
    assert lit.sum() < 1.1 * len(data.split.poisoned)  # clean digits' corners are background
    assert (data.forget.labels == 0).all() and (data.forget_true.labels != 0).all()
    for split in ("val", "test"):
        part = data.triggered(split)
        xs, ys = zip(*part.batches(4096))
        assert (torch.cat(ys) == 0).all() and corner_lit(torch.cat(xs)).all()
        heldout, _ = data.heldout(split)
        assert len(part) == int((heldout.labels != 0).sum())  # every held-out image of another class


class Detector(nn.Module):
    """Answers `target` where the trigger's corner is lit (if `sees`), else `other`."""

    def __init__(self, target: int, other: int, sees: bool = True):
        super().__init__()
        self.target, self.other, self.sees = target, other, sees

    def forward(self, x):
        on = corner_lit(x) & self.sees
        out = torch.zeros(len(x), 10)
        out[on, self.target] = 10.0
        out[~on, self.other] = 10.0
        return out


def test_attack_success_rate_of_hand_made_models(backdoor_data, runtime):
    data = backdoor_data
    detector = evaluate(Detector(target=0, other=1), data, runtime, 512)
    never = evaluate(Detector(target=0, other=1, sees=False), data, runtime, 512)
    always = evaluate(Detector(target=0, other=0, sees=False), data, runtime, 512)
    for split in ("val", "test"):
        assert detector[split]["asr"] == 100.0 and never[split]["asr"] == 0.0 and always[split]["asr"] == 100.0
    # D_f is triggered and labelled 0: the detector keeps it, and gets every true label wrong
    assert detector["val"]["forget_acc"] == 100.0 and detector["val"]["forget_true_acc"] == 0.0


def test_mislabeled_data_measures_forget_on_both_labels(runtime):
    exp = load_experiment("digits_mislabeled", TINY)
    data = load_data(exp)
    assert (data.forget.labels != data.forget_true.labels).all()
    assert data.triggered("val") is None and data.split.poisoned is None
    plain = load_data(load_experiment("digits", TINY))
    assert torch.equal(data.retain.labels, plain.train.labels[data.split.retain])  # D_r clean

    class Zero(nn.Module):  # always class 0
        def forward(self, x):
            return torch.zeros(len(x), 10) + torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 10)

    m = evaluate(Zero(), data, runtime, 512)["test"]
    true0 = float((data.forget_true.labels == 0).float().mean()) * 100
    wrong0 = float((data.forget.labels == 0).float().mean()) * 100
    assert m["forget_true_acc"] == pytest.approx(true0) and m["forget_acc"] == pytest.approx(wrong0)
    assert "asr" not in m


def test_new_components_enter_the_objective_with_their_weights():
    reference = {"retain_acc": 100, "forget_acc": 1.0, "forget_acc_sd": 1.0, "val_acc": 98, "mia": 0,
                 "forget_true_acc": 98.0, "forget_true_acc_sd": 2.0, "asr": 1.0, "asr_sd": 0.5, "cost": 100}
    metrics = {"retain_acc": 100, "forget_acc": 1.0, "val_acc": 98, "mia": 0, "forget_true_acc": 88.0, "asr": 11.0,
               "cost": 0}
    comps = components(metrics, reference)
    assert comps["forget_true_gap"] == pytest.approx(10 / 2 - 1)  # 5 spreads, the first free
    assert comps["asr_gap"] == pytest.approx(10 / 1 - 1)  # the 1-point floor
    assert objective(comps, Weights()) == pytest.approx(-(4 + 9))
    assert objective(comps, Weights(forget_true=0.5, asr=0)) == pytest.approx(-2)
    assert "asr_gap" not in components({k: v for k, v in metrics.items() if k != "asr"}, reference)
    assert component_names(ForgetSpec(rule="backdoor").measures()) == [
        "retain_gap", "forget_gap", "heldout_gap", "mia_gap", "forget_true_gap", "asr_gap", "example_gap", "cost_ratio"]
    assert component_names(ForgetSpec(rule="mislabeled").measures()) == [
        "retain_gap", "forget_gap", "heldout_gap", "mia_gap", "forget_true_gap", "example_gap", "cost_ratio"]
    assert component_names(["pl_forget_acc"])[-3:] == ["leak_gap", "example_gap", "cost_ratio"]


def test_a_corrective_original_depends_on_its_forget_set(tmp_path, runtime):
    """The original trains on D as the rule changed it: another forget seed is another model,
    while random forget sets keep sharing one original."""
    from tune_unlearn.evaluation.references import ReferenceCache

    cache = ReferenceCache(tmp_path)
    keys = {}
    for name in ("digits", "digits_mislabeled"):
        for seed in (0, 1):
            exp = load_experiment(name, {**TINY, "forget.seed": seed})
            keys[name, seed] = cache._model_key(exp, load_data(exp), "original", None)
    assert keys["digits", 0] == keys["digits", 1]
    assert keys["digits_mislabeled", 0] != keys["digits_mislabeled", 1]
