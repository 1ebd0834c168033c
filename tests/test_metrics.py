import math

import numpy as np
import pytest
import torch

from tune_unlearn.metrics import forget_test_attack, member_rate, sample_features
from tune_unlearn.training import Diverged


def test_sample_features_on_hand_built_logits():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    labels = torch.tensor([0, 1])
    feats = sample_features(logits, labels)
    # uniform: loss log 2, confidence 1/2, entropy log 2; [3:1]: p = (3/4, 1/4), label 1
    assert np.allclose(feats[0], [math.log(2), 0.5, math.log(2)])
    assert np.allclose(feats[1], [math.log(4), 0.75, -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))])


def test_non_finite_logits_are_divergence():
    with pytest.raises(Diverged):
        sample_features(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))


def _features(rng, loss_mean, n):
    loss = np.abs(rng.normal(loss_mean, 0.05, n))
    return np.stack([loss, np.exp(-loss), loss], 1)


def test_member_rate_follows_what_the_forget_set_looks_like():
    rng = np.random.default_rng(0)
    retain, test = _features(rng, 0.01, 400), _features(rng, 2.0, 100)
    assert member_rate(retain, test, _features(rng, 0.01, 50)) == 100.0  # looks trained on
    assert member_rate(retain, test, _features(rng, 2.0, 50)) == 0.0  # looks unseen


def test_competition_attack_is_chance_when_indistinguishable_and_perfect_when_separable():
    rng = np.random.default_rng(0)
    same = forget_test_attack(rng.normal(1, 1, 300), rng.normal(1, 1, 300))
    assert 40 <= same <= 60
    assert forget_test_attack(rng.normal(0.01, 0.001, 300), rng.normal(3, 0.1, 300)) == 100.0
    assert forget_test_attack(np.ones(5), np.ones(5)) is None  # too few samples to cross-validate
