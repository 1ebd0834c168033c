import copy

import torch
from torch import nn

from tune_unlearn.methods.masking import PiggybackMask, learn_mask, maskable_names, scope_names
from tune_unlearn.network.resnet import ResNet18
from tune_unlearn.training import predict


def test_masks_cover_conv_and_linear_weights_only():
    model = ResNet18(10, 1, width=4)
    names = maskable_names(model)
    assert "conv1.weight" in names and "fc.weight" in names and "layer4.0.downsample.0.weight" in names
    assert not any("bn" in n or n.endswith(".bias") for n in names)
    assert scope_names(names, "layer4") == [n for n in names if n.startswith("layer4.")]
    assert scope_names(names, "fc") == ["fc.weight"]
    assert set(scope_names(names, "layer3+layer4")) == {n for n in names if n.startswith(("layer3.", "layer4."))}


def test_straight_through_gradient_is_grad_of_effective_weight_times_weight():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3))
    mask = PiggybackMask(model, x_init=0.01, threshold=0.005)
    with torch.no_grad():
        mask.real["0.weight"][0, :2] = 0.0  # two entries below threshold: masked out
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    torch.nn.functional.cross_entropy(mask.forward(x), y).backward()
    w = model[0].weight.detach()
    y_mask = (mask.real["0.weight"] >= 0.005).float()
    w_eff = (w * y_mask).requires_grad_(True)
    torch.nn.functional.cross_entropy(torch.nn.functional.linear(x, w_eff, model[0].bias), y).backward()
    assert torch.allclose(mask.real["0.weight"].grad, w_eff.grad * w, atol=1e-6)
    assert model[0].weight.grad is None  # weights are never trained


def test_zero_share_grows_with_lambda_and_weights_and_bn_stay_frozen(prepared, runtime):
    shares = []
    for lam in (0.0, 1e-6, 1e-3):
        model = prepared.model()
        before = copy.deepcopy(model.state_dict())
        mask = learn_mask(model, prepared.data.forget, runtime, x_init=1e-2, threshold=5e-3, lam=lam,
                          lr=1e-3, epochs=10, batch_size=32)
        shares.append(mask.zero_share())
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics untouched
    assert shares[0] < shares[1] < shares[2]
    assert shares[2] > 0.5


def test_zero_share_stays_zero_without_lambda_when_cross_entropy_is_satisfied(prepared, runtime):
    model = prepared.model()
    with torch.no_grad():
        model.fc.weight.mul_(1e4)  # saturated softmax: on correct samples loss and gradient are exactly 0
    logits, labels = predict(model, prepared.data.forget, runtime, 512)
    correct = prepared.data.forget.subset(torch.nonzero(logits.argmax(1) == labels).squeeze(1))
    assert len(correct) > 10
    mask = learn_mask(model, correct, runtime, x_init=1e-2, threshold=5e-3, lam=0.0, lr=1e-3, epochs=10, batch_size=32)
    assert mask.zero_share() == 0.0
    pushed = learn_mask(model, correct, runtime, x_init=1e-2, threshold=5e-3, lam=1e-6, lr=1e-3, epochs=10, batch_size=32)
    assert pushed.zero_share() > 0.9


def test_masked_forward_with_all_ones_is_the_model(prepared):
    model = prepared.model().eval()
    mask = PiggybackMask(model, x_init=1e-2, threshold=5e-3)
    x, _ = next(prepared.data.test.batches(16))
    with torch.no_grad():
        assert torch.allclose(mask.forward(x), model(x), atol=1e-5)
