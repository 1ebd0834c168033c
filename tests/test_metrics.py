import math

import numpy as np
import pytest
import torch

from tune_unlearn.evaluation.metrics import forget_test_attack, member_rate, sample_losses
from tune_unlearn.training import Diverged


def test_sample_losses_on_hand_built_logits():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    labels = torch.tensor([0, 1])
    # uniform: loss log 2; [3:1] with label 1: p = 1/4, loss log 4
    assert np.allclose(sample_losses(logits, labels), [math.log(2), math.log(4)])


def test_non_finite_logits_are_divergence():
    with pytest.raises(Diverged):
        sample_losses(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))


def _losses(rng, loss_mean, n):
    return np.abs(rng.normal(loss_mean, 0.05, n))


def test_member_rate_follows_what_the_forget_set_looks_like():
    rng = np.random.default_rng(0)
    retain, test = _losses(rng, 0.01, 400), _losses(rng, 2.0, 100)
    assert member_rate(retain, test, _losses(rng, 0.01, 50)) == 100.0  # looks trained on
    assert member_rate(retain, test, _losses(rng, 2.0, 50)) == 0.0  # looks unseen


def test_a_confidently_corrected_wrong_label_is_not_a_member():
    """Retain and held-out samples nearly all classified correctly (the held-out ones a little
    less confidently); forget samples with wrong labels that the model now assigns to their
    true class with confidence: high loss on the label, so not members, however confident."""
    torch.manual_seed(0)
    n = 300

    def logits(margin, n, wrong=False):
        out = torch.zeros(n, 10)
        out[:, 0] = margin + torch.rand(n)  # the model's answer: class 0
        return out, torch.full((n,), 1 if wrong else 0)

    retain = sample_losses(*logits(12.0, n))
    heldout = sample_losses(*logits(6.0, n))
    forget = sample_losses(*logits(12.0, 50, wrong=True))  # as confident as on retain, but not the label
    assert member_rate(retain, heldout, forget) == 0.0
    assert member_rate(retain, heldout, sample_losses(*logits(12.0, 50))) == 100.0


def test_competition_attack_is_chance_when_indistinguishable_and_perfect_when_separable():
    rng = np.random.default_rng(0)
    same = forget_test_attack(rng.normal(1, 1, 300), rng.normal(1, 1, 300))
    assert 40 <= same <= 60
    assert forget_test_attack(rng.normal(0.01, 0.001, 300), rng.normal(3, 0.1, 300)) == 100.0
    assert forget_test_attack(np.ones(5), np.ones(5)) is None  # too few samples to cross-validate
