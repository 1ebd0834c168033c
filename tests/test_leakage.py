"""Leakage (Piggyback relearning) and the Disposable Transfer Learning setting."""

import json

import pytest
import torch
from torch import nn

from conftest import TINY, TINY_ARGS
from tune_unlearn.commands.compare import main as compare_main
from tune_unlearn.errors import UserError
from tune_unlearn.data.parts import TensorPart
from tune_unlearn.data.experiment import LeakageSpec, load_experiment
from tune_unlearn.evaluation.leakage import attack_split, relearn_accuracy
from tune_unlearn.methods.gc import gradient_collision
from tune_unlearn.evaluation.objective import components
from tune_unlearn.commands.run import main as run_main

class TwoLayer(nn.Module):
    """The smallest network the attack applies to: a feature layer and a classifier `fc`."""

    def __init__(self, d: int = 8, hidden: int = 16, classes: int = 4):
        super().__init__()
        self.body = nn.Linear(d, hidden)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.body(x.flatten(1))))


@pytest.fixture(scope="module")
def feature_zero_task():
    """Forgotten classes 0 and 1, decided by the sign of input feature 0 alone."""
    torch.manual_seed(0)
    x = torch.randn(400, 1, 1, 8)
    y = (x[:, 0, 0, 0] > 0).long()
    return TensorPart("forget", x, y, torch.arange(400), torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1), 0, False, False)


def test_knowledge_that_is_gone_does_not_come_back_and_hidden_knowledge_does(feature_zero_task, runtime):
    """A network whose features read feature 0 (it learned the forgotten classes) against one
    with no weight on it (it never did): a mask can only remove weights, so only the first
    relearns the classes; the second stays at chance."""
    knows, never = TwoLayer(), TwoLayer()
    with torch.no_grad():
        knows.body.weight[:2] = 0.0
        knows.body.weight[0, 0], knows.body.weight[1, 0] = 3.0, -3.0
        never.body.weight[:, 0] = 0.0
    spec = LeakageSpec(epochs=20, batch_size=32)
    hidden = relearn_accuracy(knows, feature_zero_task, runtime, spec, 512)
    gone = relearn_accuracy(never, feature_zero_task, runtime, spec, 512)
    assert hidden > 90.0 and gone < 62.0, (hidden, gone)


def test_the_attack_is_fixed_and_leaves_the_model_alone(prepared, runtime):
    model = prepared.model()
    forget = prepared.data.forget
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = relearn_accuracy(model, forget, runtime, prepared.experiment.leakage, 512)
    assert first == relearn_accuracy(model, forget, runtime, prepared.experiment.leakage, 512)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    learn, held = attack_split(forget, prepared.experiment.leakage)
    assert not set(learn.indices.tolist()) & set(held.indices.tolist())
    assert len(learn) + len(held) == len(forget)


def test_one_forgotten_class_is_probed_beside_retain_samples(prepared, runtime):
    """A one-class forget set (a forgotten class, a backdoor's target) cannot train a head alone:
    the attacker learns it beside as many retain samples, and is still scored on the forget side."""
    part = prepared.data.forget
    one_class = part.subset(torch.nonzero(part.labels == part.labels[0]).squeeze(1))
    with pytest.raises(ValueError, match="at least two classes"):
        relearn_accuracy(prepared.model(), one_class, runtime, prepared.experiment.leakage, 512)
    spec = prepared.experiment.leakage
    learn, held = attack_split(one_class, spec, others=prepared.data.retain)
    k = len(one_class) - len(held)
    assert len(learn) == 2 * k and len(torch.unique(learn.labels)) > 1
    assert set(learn.indices[k:].tolist()) <= set(prepared.data.retain.indices.tolist())
    assert not set(held.indices.tolist()) - set(one_class.indices.tolist())
    score = relearn_accuracy(prepared.model(), one_class, runtime, spec, 512, others=prepared.data.retain)
    assert 0.0 <= score <= 100.0


@pytest.mark.train
def test_run_with_leakage_reports_it_for_the_run_and_the_references(capsys, session_cache):
    code = run_main(["--cache-dir", str(session_cache), *TINY_ARGS, "--set", "mask_epochs=2", "--set", "ft_epochs=1",
                     "--leakage"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    for block in ("metrics", "reference", "original"):
        assert 0.0 <= result[block]["pl_forget_acc"] <= 100.0
    assert result["components"]["leak_gap"] == pytest.approx(components(result["metrics"], result["reference"])["leak_gap"])
    assert 0.0 <= result["test_metrics"]["pl_forget_acc"] <= 100.0 and "pl_forget_acc_sd" in result["reference"]


def test_gradient_collision_goes_down_when_minimised_and_has_a_finite_gradient():
    """Two source batches of one class start with well-aligned gradients; minimising the GC
    term turns them apart, through a finite second-order gradient."""
    torch.manual_seed(0)
    model = TwoLayer()
    params = [model.body.weight, model.fc.weight]
    batches = [(torch.randn(32, 1, 1, 8), torch.zeros(32, dtype=torch.long)) for _ in range(2)]
    optimizer = torch.optim.SGD(params, lr=0.5)
    values = []
    for _ in range(30):
        collision = gradient_collision(model, batches, params)
        optimizer.zero_grad()
        collision.backward()
        assert all(torch.isfinite(p.grad).all() for p in params)
        optimizer.step()
        values.append(float(collision.detach()))
    assert values[0] > 0.8 and values[-1] < values[0] - 0.2, values


def test_transfer_needs_class_forgetting():
    with pytest.raises(UserError, match="train.original 'transfer' pretrains on the forget classes"):
        load_experiment("dtl_digits", {"forget.fraction": 0.1})


@pytest.mark.train
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
    for method in ("gc", "(original)", "(retrained)"):
        row = rows[method]
        assert row["status"] == "ok"
        for key in ("test_acc", "forget_acc", "forget_test_acc", "pl_forget_acc"):
            assert 0.0 <= float(row[key]) <= 100.0, (method, key)
    assert float(rows["(retrained)"]["forget_test_acc"]) == 0.0  # the target-only model never saw 0-4
