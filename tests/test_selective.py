import pytest
import torch

from tune_unlearn.errors import UserError
from tune_unlearn.masking import maskable_names, scope_names
from tune_unlearn.methods import get_method
from tune_unlearn.methods.base import Context, UnlearnData
from tune_unlearn.pipeline import run_method


def _unlearn(prepared, runtime, monkeypatch, **hp):
    """Run the selective method's mask + decay (no fine-tuning) and return (before, after, mask)."""
    import tune_unlearn.methods.selective as selective

    captured = {}
    real_learn = selective.learn_mask

    def spy(*args, **kwargs):
        captured["mask"] = real_learn(*args, **kwargs)
        return captured["mask"]

    monkeypatch.setattr(selective, "learn_mask", spy)
    method = get_method("selective")
    params = method.resolve({"mask_batch_size": 32, "mask_epochs": 5, "mask_lr": 1e-3, "ft_epochs": 0, **hp})
    model = prepared.model()
    before = {k: v.clone() for k, v in model.named_parameters()}
    data = UnlearnData(prepared.data.retain, prepared.data.forget, prepared.data.train, prepared.data.num_classes)
    ctx = Context(runtime, 64, 512, prepared.experiment.train, prepared.model)
    stats = method.unlearn(model, data, params, ctx)
    return before, dict(model.named_parameters()), captured["mask"], stats


@pytest.mark.parametrize("scope", ["layer4", "fc", "all"])
def test_decay_touches_only_selected_weights_inside_the_scope(prepared, runtime, monkeypatch, scope):
    before, after, mask, stats = _unlearn(prepared, runtime, monkeypatch, lam=1e-6, decay=0.25, layer_scope=scope)
    selected = mask.selected()
    inside = set(scope_names(maskable_names(prepared.model()), scope))
    decayed = 0
    for name, w in after.items():
        if name in inside:
            expected = torch.where(selected[name], before[name] * 0.25, before[name])
            assert torch.allclose(w, expected), name
            decayed += int(selected[name].sum())
        else:
            assert torch.equal(w, before[name]), name  # outside the scope (and BatchNorm, biases): untouched
    assert stats["decayed_weights"] == decayed
    assert 0 < decayed < stats["scope_weights"]
    assert 0.0 < stats["mask_zero_share"] < 1.0


def test_threshold_above_x_init_is_rejected():
    with pytest.raises(UserError, match="threshold = 0.02 exceeds x_init = 0.01"):
        get_method("selective").resolve({"threshold": 0.02, "x_init": 0.01})


@pytest.mark.parametrize("name,value,match", [
    ("decay", 1.5, r"decay = 1.5 is out of range; allowed: \[0, 1\]"),
    ("decay", -0.1, "out of range"),
    ("layer_scope", "layer9", "unknown value for hyperparameter layer_scope"),
    ("ft_epochs", 1.5, "must be an integer"),
    ("lamda", 1, "unknown hyperparameter of method 'selective': 'lamda'; allowed: lam, threshold"),
])
def test_bad_hyperparameters_are_one_line_errors(name, value, match):
    with pytest.raises(UserError, match=match):
        get_method("selective").resolve({name: value})


def test_string_values_from_the_command_line_are_typed():
    hp = get_method("selective").resolve({"lam": "1e-7", "ft_epochs": "3", "layer_scope": "all"})
    assert hp["lam"] == 1e-7 and hp["ft_epochs"] == 3 and hp["layer_scope"] == "all"


def test_a_full_run_reports_per_epoch_states_and_the_mask_history(prepared):
    method = get_method("selective")
    hp = method.resolve({"mask_batch_size": 32, "mask_epochs": 3, "ft_epochs": 2})
    reports = []
    result = run_method(prepared, method, hp, on_report=reports.append)
    assert [r.epoch for r in reports] == [1, 2]
    assert all(r.phase == "finetune" and set(r.metrics) >= {"val_acc", "mia", "time_s", "cost"} for r in reports)
    assert [h["epoch"] for h in result.history if h["phase"] == "mask"] == [1, 2, 3]
    assert reports[-1].metrics["time_s"] <= result.metrics["time_s"]
    assert result.metrics["time_s"] > 0
