"""Leakage (Piggyback relearning) and the Disposable Transfer Learning setting."""

import json

import pytest
import torch

from conftest import TINY, TINY_ARGS
from tune_unlearn.compare import main as compare_main
from tune_unlearn.errors import UserError
from tune_unlearn.experiment import load_experiment
from tune_unlearn.leakage import attack_split, relearn_accuracy
from tune_unlearn.methods.gc import gradient_collision
from tune_unlearn.pipeline import prepare
from tune_unlearn.run import main as run_main

FIVE_CLASSES = {"forget.classes": [0, 1, 2, 3, 4]}


@pytest.fixture(scope="module")
def class_prepared(runtime, session_cache):
    """Width 8, 10 epochs: enough training for the features to matter; forget classes 0-4."""
    exp = load_experiment("digits", {"model.width": 8, "train.epochs": 10, **FIVE_CLASSES})
    return prepare(exp, runtime, session_cache, log=lambda m: None)


def test_a_model_never_trained_on_the_classes_relearns_less_of_them(class_prepared, runtime):
    p = class_prepared
    spec = p.experiment.leakage
    original = relearn_accuracy(p.model(), p.data.forget, runtime, spec, 512)
    retrained = relearn_accuracy(p.model(p.refs.retrain_state), p.data.forget, runtime, spec, 512)
    assert original > retrained + 15, (original, retrained)


def test_the_attack_is_fixed_and_leaves_the_model_alone(class_prepared, runtime):
    p = class_prepared
    model = p.model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = relearn_accuracy(model, p.data.forget, runtime, p.experiment.leakage, 512)
    assert first == relearn_accuracy(model, p.data.forget, runtime, p.experiment.leakage, 512)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    learn, held = attack_split(p.data.forget, p.experiment.leakage)
    assert not set(learn.indices.tolist()) & set(held.indices.tolist())
    assert len(learn) + len(held) == len(p.data.forget)


def test_one_forgotten_class_cannot_be_probed(prepared, runtime):
    part = prepared.data.forget
    one_class = part.subset(torch.nonzero(part.labels == part.labels[0]).squeeze(1))
    with pytest.raises(ValueError, match="at least two classes"):
        relearn_accuracy(prepared.model(), one_class, runtime, prepared.experiment.leakage, 512)


def test_run_with_leakage_reports_it_for_the_run_and_the_references(capsys, session_cache):
    code = run_main(["--cache-dir", str(session_cache), *TINY_ARGS, "--set", "mask_epochs=2", "--set", "ft_epochs=1",
                     "--leakage"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    for block in ("metrics", "reference", "original"):
        assert 0.0 <= result[block]["pl_forget_acc"] <= 100.0
    assert result["components"]["leak_gap"] == pytest.approx(
        abs(result["metrics"]["pl_forget_acc"] - result["reference"]["pl_forget_acc"]))


def test_gradient_collision_goes_down_when_minimised_and_has_a_finite_gradient(prepared):
    model = prepared.model().train()
    torch.manual_seed(0)
    batches = [next(prepared.data.forget.batches(16, shuffle=True)) for _ in range(2)]
    params = [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1]
    optimizer = torch.optim.SGD(params, lr=0.05)
    values = []
    for _ in range(15):
        collision = gradient_collision(model, batches, params)
        optimizer.zero_grad()
        collision.backward()
        assert all(torch.isfinite(p.grad).all() for p in params)
        optimizer.step()
        values.append(float(collision.detach()))
    assert -1.0 <= values[-1] < values[0] - 0.2, values


def test_transfer_needs_class_forgetting():
    with pytest.raises(UserError, match="train.original 'transfer' pretrains on the forget classes"):
        load_experiment("dtl_digits", {"forget.fraction": 0.1})


def test_source_task_unlearning_after_transfer_end_to_end(tmp_path, session_cache, capsys):
    """The article's setting on tiny data: the original learns classes 0-4, then transfers to
    5-9; gc disposes of the source; compare with --leakage shows target accuracy, source
    accuracy and Piggyback relearning before (original), after (gc) and for the target-only
    model (the reference)."""
    tiny = [a for k, v in {**TINY, "train.transfer_epochs": 2}.items() for a in ("--exp-set", f"{k}={v}")]
    args = ["--experiment", "dtl_digits", "--methods", "gc", "--seeds", "0", "--leakage", "--out", str(tmp_path / "dtl"),
            "--cache-dir", str(session_cache), *tiny, "--exp-set", "method_defaults={gc: {epochs: 1}}"]
    assert compare_main(args) == 0
    table = capsys.readouterr().out
    assert "forget test" in table and "PL forget" in table
    with open(tmp_path / "dtl" / "compare.csv") as f:
        import csv

        rows = {r["method"]: r for r in csv.DictReader(f)}
    for method in ("gc", "(original)", "(retrained reference)"):
        row = rows[method]
        assert row["status"] == "ok"
        for key in ("test_acc", "forget_acc", "forget_test_acc", "pl_forget_acc"):
            assert 0.0 <= float(row[key]) <= 100.0, (method, key)
    assert float(rows["(retrained reference)"]["forget_test_acc"]) == 0.0  # the target-only model never saw 0-4
