"""The comparison methods behave as their reference implementations do (each test fails on the
behaviour this project had before aligning them)."""

import torch

from tune_unlearn.data import TensorPart, load_data
from tune_unlearn.experiment import load_experiment
from tune_unlearn.methods import get_method
from tune_unlearn.methods.fanchuan import logit_similarity
from tune_unlearn.pipeline import run_method


def test_salun_draws_new_random_labels_every_epoch(prepared, monkeypatch):
    drawn = []
    real = TensorPart.relabel

    def recording(self, other, labels):
        drawn.append(labels.clone())
        return real(self, other, labels)

    monkeypatch.setattr(TensorPart, "relabel", recording)
    run_method(prepared, "salun", get_method("salun").resolve({"epochs": 3}))
    assert len(drawn) == 3 and not torch.equal(drawn[0], drawn[1]) and not torch.equal(drawn[1], drawn[2])


def test_neggrad_plus_leaves_batchnorm_statistics_untouched(prepared):
    result = run_method(prepared, "neggrad_plus", get_method("neggrad_plus").resolve({"epochs": 1}))
    after = result.model.state_dict()
    original = prepared.refs.original_state
    stats = [k for k in original if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(after[k].cpu(), original[k]) for k in stats)
    assert not torch.equal(after["fc.weight"].cpu(), original["fc.weight"])  # the weights did move


def test_scrub_defaults_run_three_max_passes_in_ten_epochs(prepared):
    hp = get_method("scrub").resolve({})
    assert (hp["max_epochs"], hp["epochs"], hp["retain_batch_size"], hp["forget_batch_size"]) == (3, 10, 32, 64)
    result = run_method(prepared, "scrub", hp)
    phases = [h["phase"] for h in result.history]
    assert phases.count("scrub_max") == 3 and phases.count("scrub") == 10


def test_fanchuan_similarity_stays_fp32_under_bf16_autocast():
    forget, retain = torch.randn(8, 10) * 300, torch.randn(6, 10) * 300
    with torch.autocast("cpu", dtype=torch.bfloat16):
        naive = forget.float() @ retain.float().T  # what the port did: autocast casts it back to bf16
        safe = logit_similarity(forget, retain, 1.15)
    assert naive.dtype == torch.bfloat16 and safe.dtype == torch.float32
    assert torch.allclose(safe, forget @ retain.T / 1.15)


def test_the_relearning_probe_scores_on_the_forgotten_classes_held_out_samples(monkeypatch, runtime):
    import tune_unlearn.leakage as leakage
    from tune_unlearn.metrics import evaluate
    from tune_unlearn.models import build_model

    exp = load_experiment("dtl_digits", {"model.width": 4, "leakage.epochs": 1})
    data = load_data(exp)
    scored = []
    real = leakage.masked_accuracy

    def recording(mask, part, runtime, batch_size):
        scored.append(part.name)
        return real(mask, part, runtime, batch_size)

    monkeypatch.setattr(leakage, "masked_accuracy", recording)
    model = runtime.prepare(build_model(exp.model, data.num_classes, data.in_channels))
    out = evaluate(model, data, runtime, 512, leakage=exp.leakage)
    assert scored == ["val_forget", "test_forget"]  # the source task's held-out data, not forget-set samples
    assert 0 <= out["val"]["pl_forget_acc"] <= 100 and 0 <= out["test"]["pl_forget_acc"] <= 100
