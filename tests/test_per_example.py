"""Per-example evaluation: the competition's forgetting quality and the likelihood-ratio attack on
hand-built confidences with known answers, the cached ensembles, and compare --per-example end
to end on tiny data."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from conftest import TINY_ARGS, tiny_args
from tune_unlearn.commands.compare import main as compare_main
from tune_unlearn.commands import ensembles as ens
from tune_unlearn.commands.per_example import COLUMNS
from tune_unlearn.evaluation.per_example.lira import LiRA
from tune_unlearn.evaluation.per_example.quality import EPSILON_CAP, bin_count, epsilon_table, example_epsilon
from tune_unlearn.evaluation.per_example.quality import example_scores, forget_quality, logit_confidence
from tune_unlearn.commands.per_example import Scorer, markdown, write
from tune_unlearn.run_config import resolve_run


def gaussian_confs(rng, n_models, n_examples, shift=0.0):
    scale = rng.uniform(0.5, 2.0, n_examples)
    return rng.normal(0.0, 1.0, (n_models, n_examples)) * scale + shift


# --------------------------------------------------------------------------- forgetting quality


def test_logit_scaled_confidence_is_stable_and_exact():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [900.0, 0.0, -5.0], [-900.0, 0.0, 3.0]])
    labels = torch.tensor([0, 1, 0, 0])
    conf = logit_confidence(logits, labels)
    p = torch.softmax(logits[:2].double(), 1)[torch.arange(2), labels[:2]]
    assert torch.allclose(conf[:2], torch.log(p / (1 - p)))
    assert conf[1] == pytest.approx(math.log(0.5))  # p = 1/3: log(1/3 / 2/3)
    assert conf[2] == pytest.approx(900 - math.log1p(math.exp(-5))) and conf[3] == pytest.approx(-903.0486, abs=1e-3)


def test_bins_follow_the_number_of_models():
    assert [bin_count(n) for n in (2, 3, 4, 8, 512)] == [0, 2, 4, 4, 14]  # 2 * ceil(ln(N - 1))
    scores = example_scores(np.array([0.0, 0.49, 0.5, 1.2, 1.99, 2.0, 50.0]), 8)
    assert scores.tolist() == [1, 1, 0.5, 0.25, 0.125, 0, 0]


def test_epsilon_bounds_and_their_edge_cases():
    table = epsilon_table(4, 4)  # [true positives, false positives] of 4 + 4
    assert table[4, 0] == np.inf  # perfect separation
    assert np.isnan(table[3, 0]) and np.isnan(table[4, 1])  # one error rate 0: discarded
    assert table[3, 1] == pytest.approx(math.log((1 - 1e-5 - 0.25) / 0.25))
    assert table[2, 2] == 0.0  # chance: the bound is clipped at 0
    # perfectly separated samples, and a constant (very peaky) unlearned sample
    assert example_epsilon(np.array([5.0, 6, 7, 8]), np.array([0.0, 1, 2, 3])) == EPSILON_CAP
    assert example_epsilon(np.full(4, 1.5), np.array([0.0, 1, 2, 3])) == EPSILON_CAP
    assert example_epsilon(np.full(4, 1.5), np.full(4, 1.5)) == 0.0  # nothing tells them apart


def test_identical_ensembles_forget_perfectly_and_separated_ones_do_not():
    rng = np.random.default_rng(0)
    confs = gaussian_confs(rng, 8, 60)
    quality, eps = forget_quality(confs, confs.copy())
    assert quality == 1.0 and (eps < 0.5).all()
    far, _ = forget_quality(gaussian_confs(rng, 8, 60, shift=25.0), confs)
    assert far == 0.0
    # two samples of one distribution: below 1 with few models (the ideal at this N)
    same, _ = forget_quality(gaussian_confs(rng, 8, 200), gaussian_confs(rng, 8, 200))
    assert 0.1 < same < 0.5
    with pytest.raises(ValueError, match="equally many"):
        forget_quality(confs[:4], confs)


# --------------------------------------------------------------------------- the attack


def test_lira_cannot_tell_retraining_and_tells_the_original():
    rng = np.random.default_rng(1)
    members = gaussian_confs(rng, 8, 100, shift=6.0)
    outside = gaussian_confs(rng, 8, 100)
    lira = LiRA(members, outside)
    assert lira.evaluate(gaussian_confs(rng, 8, 100)).auc == pytest.approx(0.5, abs=0.06)
    assert abs(lira.evaluate_retrained().auc - 0.5) < 0.08
    perfect = lira.evaluate(gaussian_confs(rng, 8, 100, shift=6.0))
    assert perfect.auc > 0.95 and perfect.tpr_at[0.01] > 0.5
    assert lira.evaluate_original().auc > 0.95


# --------------------------------------------------------------------------- cached ensembles


def _count(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return calls


def test_ensembles_are_cached_and_grow(prepared, tmp_path, monkeypatch):
    import tune_unlearn.evaluation.references.training as references

    trained = _count(monkeypatch, references, "train_recipe")
    unlearned = _count(monkeypatch, ens, "unlearn")
    log = lambda m: None  # noqa: E731
    originals, ids = ens.reference_ensemble(prepared, tmp_path, "original", 3, log)
    retrained, _ = ens.reference_ensemble(prepared, tmp_path, "retrain", 3, log)
    run = resolve_run("finetune", "digits", {"model.width": 4, "train.epochs": 2}, {"epochs": 1})
    method = ens.unlearned_ensemble(prepared, tmp_path, run, "finetune", 3, ids[0], log)
    assert len(trained) == 6 and len(unlearned) == 3 and originals.new == retrained.new == method.new == 3
    assert originals.matrix().shape == (3, len(prepared.data.forget))
    assert not np.allclose(retrained.confs[0], retrained.confs[1])  # different training seeds
    # an ensemble's model is the one `run` makes with that seed: only the run's evaluation is skipped
    from tune_unlearn.pipeline import run_method

    same = ens.model_outputs(prepared, run_method(prepared, run.method, run.hparams, run.weights, seed=1).model)
    assert np.array_equal(same["conf"].numpy(), method.confs[1]) and same["test_acc"] == method.test_acc[1]

    again = ens.unlearned_ensemble(prepared, tmp_path, run, "finetune", 3, ids[0], log)
    assert len(unlearned) == 3 and again.new == 0 and np.array_equal(again.matrix(), method.matrix())

    grown, _ = ens.reference_ensemble(prepared, tmp_path, "original", 4, log)
    grown_retrained, _ = ens.reference_ensemble(prepared, tmp_path, "retrain", 4, log)
    assert len(trained) == 8 and grown.new == grown_retrained.new == 1  # one more of each, nothing else
    assert np.array_equal(grown.matrix()[:3], originals.matrix())
    ens.unlearned_ensemble(prepared, tmp_path, run, "finetune", 4, ids[0], log)
    assert len(unlearned) == 4


def test_the_retrained_ensemble_extends_the_references(prepared, session_cache, monkeypatch):
    import tune_unlearn.evaluation.references.training as references

    trained = _count(monkeypatch, references, "train_recipe")
    retrained, _ = ens.reference_ensemble(prepared, session_cache, "retrain", 3, lambda m: None)
    assert len(trained) == 0 and retrained.new == 0  # the references' own K = 3 models
    assert retrained.test_acc == pytest.approx([m["test"]["test_acc"] for m in prepared.refs.retrained])


# --------------------------------------------------------------------------- rows, table, report


def hand_built(rng, name, n, shift=0.0):
    e = ens.Ensemble(name)
    for row in gaussian_confs(rng, n, 50, shift):
        e.add({"conf": torch.tensor(row), "retain_acc": 99.0, "test_acc": 90.0})
    return e


@pytest.mark.train
def test_rows_score_every_ensemble_against_the_same_reference(tmp_path):
    from tune_unlearn.reporting.report import per_example_section, render_html

    rng = np.random.default_rng(2)
    originals, retrained = hand_built(rng, "original", 6, 8.0), hand_built(rng, "retrain", 6)
    scorer = Scorer(originals, retrained)
    assert scorer.per_side == 3
    good, bad = hand_built(rng, "good", 6), hand_built(rng, "bad", 6, 30.0)
    f_good, eps = scorer.quality(good.matrix())
    assert len(eps) == 2 * 50  # both halves, pooled
    assert scorer.quality(bad.matrix())[0] == 0.0 < f_good
    assert scorer.quality(good.matrix()[:2])[0] is None  # fewer models than a half

    from tune_unlearn.commands.per_example import row

    rows = [row("good", "default", good, f_good, scorer.lira.evaluate(good.matrix()), scorer, good.retain_acc,
                good.test_acc, 0.1)]
    assert rows[0]["competition_score"] == pytest.approx(f_good)  # same accuracies as the reference
    details = {"experiment": "hand", "forget": "50 examples", "n_models": 6, "per_side": 3, "bins": bin_count(3),
               "forget_examples": 50, "device": "cpu",
               "rows": {"good": {"epsilon": eps.tolist(), "forget_quality": f_good, "n_models": 6, "failed": [],
                                 "roc": {"fpr": [0, 0.5, 1], "tpr": [0, 0.5, 1], "auc": 0.5}}}}
    assert "N = 6" in markdown(rows, details)
    (tmp_path / "compare.csv").write_text("method\n")
    write(tmp_path, rows, details)
    section = per_example_section(tmp_path / "compare.csv", tmp_path)
    pictures = [b[1] for b in section.blocks if b[0] == "img"]
    assert pictures == ["per_example_epsilon.png", "per_example_roc.png"]
    assert all((tmp_path / p).stat().st_size > 5000 for p in pictures)
    assert "N = 6" in section.title and "per_example_roc.png" in render_html("t", [section])


@pytest.mark.train
def test_compare_per_example_end_to_end(tmp_path, session_cache, capsys):
    out = tmp_path / "cmp"
    args = ["--methods", "finetune", "--seeds", "0", "--out", str(out), "--cache-dir", str(session_cache),
            "--per-example", "3", *TINY_ARGS, "--exp-set", "method_defaults={finetune: {epochs: 1}}"]
    assert compare_main(args) == 0
    printed = capsys.readouterr().out
    with open(out / "per_example.csv") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    assert [(r["method"], r["config"]) for r in rows] == [("original", "train seeds 0..2"), ("retrain", "seeds 1..1 vs 0..0"),
                                                          ("finetune", "default")]
    assert all(r["n_models"] == "3" and 0 <= float(r["lira_auc"]) <= 1 for r in rows)
    assert all(r["forget_quality"] == "" for r in rows)  # halves of 1 model: F has no bin
    assert "N = 3 models per ensemble" in printed and "needs N >= 6" in printed
    details = json.loads((out / "per_example.json").read_text())
    assert set(details["rows"]) == {"original", "retrain", "finetune"} and details["n_models"] == 3
    assert (out / "compare.csv").exists()  # the comparison itself is unchanged


@pytest.mark.train
def test_compare_per_example_on_a_backdoor(tmp_path, session_cache, capsys):
    """The corrective measures reach compare's table, and the per-example rows are made."""
    out = tmp_path / "bd"
    args = ["--methods", "finetune", "--seeds", "0", "--out", str(out), "--cache-dir", str(session_cache),
            "--per-example", "3", *tiny_args("digits_backdoor"), "--exp-set", "method_defaults={finetune: {epochs: 1}}"]
    assert compare_main(args) == 0
    printed = capsys.readouterr().out
    assert "poisoned with a 2x2 bottom-right trigger to class 0" in printed
    assert "| forget true |" in printed and "| ASR |" in printed
    with open(out / "per_example.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["original", "retrain", "finetune"]
    assert all(0 <= float(r["lira_auc"]) <= 1 for r in rows)


def test_too_few_models_are_refused_before_any_training(tmp_path, capsys):
    args = ["--methods", "finetune", "--out", str(tmp_path / "x"), "--cache-dir", str(tmp_path / "c"),
            "--per-example", "2", *TINY_ARGS]
    assert compare_main(args) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: --per-example needs N >= 3 models per side, got 2"
    assert not (tmp_path / "c").exists() and not (tmp_path / "x").exists()
