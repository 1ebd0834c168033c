"""The contract every registered method keeps (a new method is covered by adding it to the
registry): hyperparameters and search space agree, a tiny run gives finite metrics, seeded
runs repeat exactly on the CPU, and methods that must not read the forget set do not."""

import math

import pytest
import torch

from tune_unlearn.errors import UserError
from tune_unlearn.methods import get_method, method_names
from tune_unlearn.methods.base import Context, UnlearnData
from tune_unlearn.pipeline import run_method
from tune_unlearn.search.space import method_space

METHODS = method_names()


def tiny(method) -> dict:
    """The smallest budget of each method: every '*epochs' integer at 1 (2 for mask epochs)."""
    hp = {}
    for h in method.hparams:
        if h.kind == "int" and h.name.endswith("epochs"):
            hp[h.name] = 2 if h.name == "mask_epochs" else max(1, int(h.min or 0))
    if method.name == "selective":
        hp["mask_batch_size"] = 32
    if method.name == "retrain":
        hp["epoch_fraction"] = 0.5
    return hp


def test_the_registry_holds_every_method_of_the_comparison():
    assert set(METHODS) >= {"selective", "finetune", "neggrad_plus", "fanchuan", "kookmin", "ssd", "salun", "scrub", "retrain"}


@pytest.mark.parametrize("name", METHODS)
def test_hyperparameters_defaults_and_search_space_agree(name):
    method = get_method(name)
    names = [h.name for h in method.hparams]
    assert len(names) == len(set(names))
    assert method.resolve() == method.defaults()  # every default passes the method's own checks
    assert method.__doc__ or __import__(type(method).__module__, fromlist=["x"]).__doc__
    space = method_space(name)
    assert space.method == name
    assert set(space.params) == {h.name for h in method.hparams if h.searched}
    for pname, spec in space.params.items():
        default = method.hparam(pname).default
        if spec.type == "choice":
            assert default in spec.values, pname
        else:
            assert spec.low <= default <= spec.high, f"{name}.{pname} default {default} outside [{spec.low}, {spec.high}]"
    if method.epochs_hparam is not None:
        assert method.hparam(method.epochs_hparam).kind == "int"


@pytest.mark.parametrize("name", METHODS)
def test_every_method_keeps_the_contract_outside_methods_are_held_to(name):
    from tune_unlearn.methods.contract import contract_problems

    assert contract_problems(type(get_method(name))) == []


@pytest.mark.parametrize("name", METHODS)
def test_unknown_hyperparameters_are_refused(name):
    with pytest.raises(UserError, match=f"unknown hyperparameter of method '{name}'"):
        get_method(name).resolve({"not_a_hyperparameter": 1})


@pytest.mark.parametrize("name", METHODS)
def test_a_tiny_run_gives_finite_metrics_and_repeats_exactly(prepared, name):
    method = get_method(name)
    hp = method.resolve(tiny(method))
    first = run_method(prepared, method, hp, seed=3)
    assert all(math.isfinite(v) for v in first.metrics.values() if v is not None), first.metrics
    assert math.isfinite(first.objective) and first.metrics["time_s"] > 0
    again = run_method(prepared, method, hp, seed=3)
    timeless = lambda m: {k: v for k, v in m.items() if k != "time_s"}  # noqa: E731
    assert timeless(again.metrics) == timeless(first.metrics)
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()))


@pytest.fixture(scope="module", params=["digits_mislabeled", "digits_backdoor"])
def corrective(request, runtime, session_cache):
    """The tiny corrective experiments' data and references."""
    from tune_unlearn.data.experiment import load_experiment
    from tune_unlearn.pipeline import prepare

    from conftest import TINY

    return prepare(load_experiment(request.param, TINY), runtime, session_cache, log=lambda message: None)


@pytest.mark.parametrize("name", METHODS)
def test_every_method_runs_on_the_corrective_experiments(corrective, name):
    method = get_method(name)
    result = run_method(corrective, method, method.resolve(tiny(method)), seed=0)
    measures = corrective.experiment.forget.measures()
    for metrics in (result.metrics, result.test_metrics):
        assert all(math.isfinite(metrics[k]) for k in measures)
    assert {"forget_true_gap", *(["asr_gap"] if "asr" in measures else [])} <= set(result.components)
    assert math.isfinite(result.objective) and math.isfinite(result.test_objective)


class Untouchable:
    """Stands in for a part a method must not read."""

    def __init__(self, name):
        self.name = name

    def __len__(self):
        raise AssertionError(f"the method read the {self.name} set")

    def __getattr__(self, attribute):
        raise AssertionError(f"the method read the {self.name} set ({attribute})")


@pytest.mark.parametrize("name", [m for m in METHODS if not get_method(m).uses_forget])
def test_methods_that_must_not_read_the_forget_set_do_not(prepared, runtime, name):
    method = get_method(name)
    data = prepared.data
    view = UnlearnData(data.retain, Untouchable("forget"), Untouchable("forget (inside D)"), data.num_classes)
    ctx = Context(runtime, 64, 512, prepared.experiment.train, prepared.model)
    method.unlearn(prepared.model(), view, method.resolve(tiny(method)), ctx)


def test_finetune_and_retrain_are_the_methods_declared_blind_to_the_forget_set():
    assert {m for m in METHODS if not get_method(m).uses_forget} == {"finetune", "retrain"}
