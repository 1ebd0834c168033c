"""Search-space files are validated completely, before Ray starts."""

import pytest
import yaml

from tune_unlearn.errors import UserError
from tune_unlearn.search.space import available_spaces, load_space, method_space

BASE = {"method": "selective", "params": {"lam": {"type": "loguniform", "low": 1e-9, "high": 1e-3}}}


def write(tmp_path, data):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_shipped_spaces_are_valid_and_default_covers_the_six_hyperparameters():
    assert {"default", "wide", "paper_2pct"} <= set(available_spaces())
    for name in available_spaces():
        load_space(name)
    default = load_space("default")
    assert default.method == "selective" and default.experiment == "digits_mislabeled"
    assert set(default.params) >= {"lam", "threshold", "x_init", "decay", "layer_scope", "ft_epochs"}  # the paper's six
    assert set(default.params) - {"lam", "threshold", "x_init", "decay", "layer_scope", "ft_epochs"} == {
        "mask_scope", "ft_scope", "bn_recalibrate", "ft_batch_size"}
    assert default.params["lam"].type == "loguniform" and default.params["layer_scope"].type == "choice"
    assert default.params["ft_epochs"].type == "int"


def test_yaml_1_1_floats_without_a_dot_are_numbers(tmp_path):
    space = load_space(write(tmp_path, {"method": "selective", "params": {"lam": {"type": "loguniform", "low": "1e-9", "high": "1e-3"}}}))
    assert space.params["lam"].low == 1e-9


@pytest.mark.parametrize("change,message", [
    ({"budget": 3}, "unknown key 'budget'; allowed: method, experiment"),
    ({"params": {"lamda": {"type": "uniform", "low": 0, "high": 1}}}, "has no hyperparameter 'lamda'; allowed: lam, threshold"),
    ({"params": {"decay": {"type": "uniform", "low": 0.8, "high": 0.2}}}, "empty or inverted range [0.8, 0.2]"),
    ({"params": {"decay": {"type": "uniform", "low": 0.5, "high": 0.5}}}, "empty or inverted range"),
    ({"params": {"lam": {"type": "loguniform", "low": 0.0, "high": 1e-3}}}, "a log range must stay above zero"),
    ({"params": {"decay": {"type": "uniform", "low": 0.0, "high": 1.5}}}, "decay = 1.5 is out of range; allowed: [0, 1]"),
    ({"params": {"threshold": {"type": "uniform", "low": 1e-3, "high": 2e-2}}},
     "threshold can reach 0.02 but x_init can be as low as 0.01"),
    ({"params": {"x_init": {"type": "uniform", "low": 1e-3, "high": 2e-2}}}, "threshold can reach 0.005 but x_init can be as low as 0.001"),
    ({"params": {"layer_scope": {"type": "choice", "values": ["layer4", "layer7"]}}}, "unknown value for hyperparameter layer_scope: 'layer7'"),
    ({"params": {"ft_epochs": {"type": "uniform", "low": 0, "high": 3}}}, "ft_epochs is an integer hyperparameter; use int or logint"),
    ({"params": {"decay": {"type": "normal", "low": 0, "high": 1}}}, "unknown type in"),
    ({"params": {"decay": {"type": "uniform", "low": 0}}}, "needs both low and high"),
    ({"fixed": {"lam": 1e-5}}, "'lam' is both searched (params) and fixed"),
    ({"fixed": {"decay": -1}}, "decay = -1.0 is out of range"),
    ({"objective": {"speed": 1}}, "objective: unknown objective weight 'speed'; allowed: retain, forget, heldout, mia, cost, forget_true, asr, leak"),
    ({"objective": {"cost": "fast"}}, "objective: objective weight cost must be a number >= 0, got 'fast'"),
    ({"method": "magic"}, "unknown method 'magic'"),
    ({"num_samples": 0}, "num_samples must be >= 1"),
])
def test_bad_spaces_are_rejected_with_what_is_allowed(tmp_path, change, message):
    with pytest.raises(UserError) as err:
        load_space(write(tmp_path, {**BASE, **change}))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_space_name_lists_the_shipped_ones():
    with pytest.raises(UserError, match="unknown search space 'nope'; allowed: .*default"):
        load_space("nope")


def test_method_space_follows_the_declared_ranges():
    space = method_space("selective")
    assert set(space.params) == {"lam", "threshold", "x_init", "decay", "layer_scope", "ft_epochs", "mask_scope", "ft_scope",
                                 "bn_recalibrate", "ft_batch_size"}


@pytest.mark.parametrize("name", available_spaces())
def test_every_shipped_range_lies_inside_the_methods_declared_one(name):
    """A YAML space narrows or fixes what a method declares; it never searches outside it."""
    from tune_unlearn.methods import get_method

    space = load_space(name)
    method = get_method(space.method)
    for pname, spec in space.params.items():
        declared = method.hparam(pname)
        if spec.type == "choice":
            allowed = declared.choices or None
            assert allowed is None or set(spec.values) <= set(allowed), f"{name}: {pname} {spec.values} not in {allowed}"
            if allowed is None:  # a numeric hyperparameter searched over a few values
                assert all(declared.low <= v <= declared.high for v in spec.values), f"{name}: {pname} {spec.values}"
        else:
            assert declared.low <= spec.low and spec.high <= declared.high, (
                f"{name}: {pname} [{spec.low}, {spec.high}] outside the declared [{declared.low}, {declared.high}]")


def test_a_space_without_params_searches_what_the_method_declares(tmp_path):
    """One source for every range: a YAML space states only what differs from the declaration."""
    from tune_unlearn.methods import get_method

    declared = {h.name: (h.low, h.high) for h in get_method("fanchuan").hparams if h.searched}
    space = load_space("fanchuan")
    assert {p: (spec.low, spec.high) for p, spec in space.params.items()} == declared
    fixed = load_space(write(tmp_path, {"method": "fanchuan", "fixed": {"epochs": 3}}))
    assert "epochs" not in fixed.params and fixed.fixed == {"epochs": 3}
    assert set(fixed.params) == set(declared) - {"epochs"}
