import pytest
import torch

from tune_unlearn.errors import UserError
from tune_unlearn.methods.masking import maskable_names, scope_names
from tune_unlearn.methods import get_method
from tune_unlearn.methods.base import Context, UnlearnData
from tune_unlearn.pipeline import run_method


def _unlearn(prepared, runtime, monkeypatch, **hp):
    """Run the selective method's mask + decay (no fine-tuning) and return (before, after, mask)."""
    import tune_unlearn.methods.masking as masking  # the selective method imports learn_mask from it when it runs

    captured = {}
    real_learn = masking.learn_mask

    def spy(*args, **kwargs):
        captured["mask"] = real_learn(*args, **kwargs)
        return captured["mask"]

    monkeypatch.setattr(masking, "learn_mask", spy)
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


@pytest.mark.parametrize("scope", ["layer4", "layer3+layer4"])
def test_cached_prefix_mask_learning_selects_what_the_full_network_would(prepared, runtime, scope):
    """mask_scope=scope learns from cached activations through the scope alone; masking the same
    weights inside the full network (same seed, same data) selects the same entries."""
    from tune_unlearn.methods.masking import CachedInputs, learn_mask
    from tune_unlearn.network.stages import first_stage

    names = scope_names(maskable_names(prepared.model()), scope)
    settings = dict(x_init=0.01, threshold=0.005, lam=1e-6, lr=1e-3, epochs=4, batch_size=32, names=names)
    torch.manual_seed(0)
    full = learn_mask(prepared.model(), prepared.data.forget, runtime, **settings)
    model = prepared.model()
    cached = CachedInputs(model, prepared.data.forget, runtime, first_stage(names), 512)
    torch.manual_seed(0)
    fast = learn_mask(model, cached, runtime, start=first_stage(names), **settings)
    for name in names:
        assert torch.allclose(full.real[name], fast.real[name], atol=1e-6), name
        assert torch.equal(full.selected()[name], fast.selected()[name]), name


def test_ft_scope_scope_leaves_everything_before_the_scope_unchanged(prepared):
    hp = get_method("selective").resolve({"mask_batch_size": 32, "mask_epochs": 2, "ft_epochs": 1,
                                          "mask_scope": "scope", "ft_scope": "scope", "layer_scope": "layer4"})
    result = run_method(prepared, "selective", hp)
    after = {k: v.cpu() for k, v in result.model.state_dict().items()}
    original = prepared.refs.original_state
    before_scope = [k for k in original if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer2", "layer3")]
    assert before_scope and all(torch.equal(after[k], original[k]) for k in before_scope)  # BatchNorm statistics too
    assert not torch.equal(after["layer4.1.conv2.weight"], original["layer4.1.conv2.weight"])
    assert not torch.equal(after["fc.weight"], original["fc.weight"])


def test_a_scope_mask_over_every_layer_is_the_paper_mask(prepared):
    """mask_scope=scope with layer_scope=all has no frozen prefix: it is mask_scope=all."""
    base = {"mask_batch_size": 32, "mask_epochs": 2, "ft_epochs": 1, "layer_scope": "all"}
    a = run_method(prepared, "selective", get_method("selective").resolve({**base, "mask_scope": "all"}))
    b = run_method(prepared, "selective", get_method("selective").resolve({**base, "mask_scope": "scope"}))
    assert a.metrics["forget_acc"] == b.metrics["forget_acc"] and a.stats == b.stats


def test_the_scope_options_cost_less(prepared):
    base = {"mask_batch_size": 32, "mask_epochs": 4, "ft_epochs": 1}
    paper = run_method(prepared, "selective", get_method("selective").resolve(
        {**base, "mask_scope": "all", "ft_scope": "all"}))
    fast = run_method(prepared, "selective", get_method("selective").resolve(
        {**base, "mask_scope": "scope", "ft_scope": "scope"}))
    assert fast.metrics["cost"] < 0.75 * paper.metrics["cost"]


def test_bn_recalibrate_re_estimates_the_statistics_on_the_retain_set(prepared):
    from tune_unlearn.training import recalibrate_batchnorm

    model = prepared.model()
    recalibrate_batchnorm(model, prepared.data.retain, 512)
    first = dict(model.named_buffers())["bn1.running_mean"].clone()
    x = torch.cat([x for x, _ in prepared.data.retain.batches(512)])
    with torch.no_grad():
        stem = model.conv1(x)
    assert torch.allclose(first, stem.mean(dim=(0, 2, 3)), atol=1e-4)  # the retain set's own mean
    hp = get_method("selective").resolve({"mask_batch_size": 32, "mask_epochs": 2, "ft_epochs": 0, "bn_recalibrate": True})
    result = run_method(prepared, "selective", hp)
    assert not torch.equal(result.model.state_dict()["layer1.0.bn1.running_var"].cpu(),
                           prepared.refs.original_state["layer1.0.bn1.running_var"])
