"""The defining steps of three comparison methods, each checked against hand-computed answers:
SSD's strict selection and its clamped dampening, Kookmin's per-layer re-initialisation, its
gradient scaling and its warm-up schedule, and Fanchuan's stages in their order, each on the
data set it should see. Most tests run the method's own `unlearn` on a hand-built model and
hand-built data (or importances), with the surrounding machinery monkeypatched, so they take a
fraction of a second; one SSD test checks a real run on the tiny digits experiment."""

import math

import pytest
import torch
from torch import nn

from tune_unlearn import training
from tune_unlearn.data.parts import TensorPart
from tune_unlearn.methods import fanchuan, get_method, ssd
from tune_unlearn.methods.base import Context, UnlearnData
from tune_unlearn.methods.fanchuan import logit_similarity
from tune_unlearn.methods.kookmin import warmup_then_decay


def context(runtime, epoch_ends=None):
    record = (lambda *a: epoch_ends.append(a)) if epoch_ends is not None else (lambda *a: None)
    return Context(runtime, 64, 512, None, None, record)


def constant_part(name, values, labels, crop_padding=0, flip=False):
    """A TensorPart of 1x8x8 images, image i filled with values[i] (mean 0, std 1)."""
    images = torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 8, 8).contiguous()
    return TensorPart(name, images, torch.tensor(labels), torch.arange(len(values)), torch.zeros(1, 1, 1),
                      torch.ones(1, 1, 1), crop_padding, flip, False)


def two_parts(n_forget, n_retain, crop_padding=0, flip=False):
    """Forget images are +5 everywhere, retain images -5, on one tensor (parts of one data set)."""
    values = [5.0] * n_forget + [-5.0] * n_retain
    labels = [i % 2 for i in range(n_forget + n_retain)]
    whole = constant_part("train", values, labels, crop_padding, flip)
    forget = whole.subset(torch.arange(n_forget), "forget")
    retain = whole.subset(torch.arange(n_forget, n_forget + n_retain), "retain")
    return forget, retain, whole


# ---------------------------------------------------------------------------------------------
# SSD (Foster et al., AAAI 2024)
# ---------------------------------------------------------------------------------------------


def ssd_on(monkeypatch, runtime, params, whole, forget, alpha, beta):
    """Run SSD.unlearn on a module holding `params` (name -> tensor), with the importances
    I_D = `whole` and I_f = `forget` given by hand instead of computed."""
    model = nn.Module()
    for name, value in params.items():
        model.register_parameter(name, nn.Parameter(value.clone()))
    importances = {"D": whole, "D_f": forget}
    monkeypatch.setattr(ssd, "fisher_diagonal", lambda model, part, runtime, bs: importances[part])
    data = UnlearnData(retain="D_r", forget="D_f", train="D", num_classes=2)
    hp = get_method("ssd").resolve({"alpha": alpha, "beta": beta})
    stats = get_method("ssd").unlearn(model, data, hp, context(runtime))
    return {n: p.detach() for n, p in model.named_parameters()}, stats


def test_ssd_dampens_only_where_forget_importance_strictly_exceeds_alpha_times_full(monkeypatch, runtime):
    """Step 2, selection: I_f > alpha * I_D (strict); the selected element is multiplied by
    lambda * I_D / I_f, every other one is left bit for bit as it was."""
    weight = torch.tensor([[1.0, -2.0, 3.0], [4.0, -5.0, 6.0]])
    bias = torch.tensor([0.5, -0.25])
    whole = {"weight": torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]), "bias": torch.tensor([0.1, 2.0])}
    forget = {"weight": torch.tensor([[10.0, 10.5, 100.0], [5.0, 40.0, 3.0]]), "bias": torch.tensor([4.0, 19.0])}
    # alpha 10: [[10 > 10 no (equality is not enough), yes, yes], [no, yes, 3 > 0 yes]]; bias: [yes, no]
    after, stats = ssd_on(monkeypatch, runtime, {"weight": weight, "bias": bias}, whole, forget, alpha=10.0, beta=1.0)
    expected = torch.tensor([[1.0, -2.0 / 10.5, 3.0 / 100.0], [4.0, -5.0 / 40.0, 0.0]])
    assert torch.allclose(after["weight"], expected, rtol=1e-6, atol=0)
    assert torch.allclose(after["bias"], torch.tensor([0.5 * 0.1 / 4.0, -0.25]), rtol=1e-6, atol=0)
    # the unselected elements are exactly the original, not approximately
    unselected = torch.tensor([[True, False, False], [True, False, False]])
    assert torch.equal(after["weight"][unselected], weight[unselected])
    assert after["bias"][1].item() == -0.25
    assert stats["dampened_share"] == pytest.approx(5 / 8)  # 4 weights and 1 bias of 8


def test_ssd_clamps_the_dampening_factor_at_one(monkeypatch, runtime):
    """Step 2, clamp: the factor is min(lambda * I_D / I_f, 1): with lambda 5 a selected
    element whose I_f is only 3x I_D would be multiplied by 5/3 unclamped; it stays as it is."""
    weight = torch.tensor([2.0, -2.0, 2.0, -3.0])
    whole = {"weight": torch.tensor([1.0, 1.0, 1.0, 1.0])}
    forget = {"weight": torch.tensor([3.0, 10.0, 100.0, 5.0])}  # alpha 2: all four selected
    after, stats = ssd_on(monkeypatch, runtime, {"weight": weight}, whole, forget, alpha=2.0, beta=5.0)
    # factors: min(5/3, 1) = 1, 0.5, 0.05, min(1, 1) = 1
    assert torch.allclose(after["weight"], torch.tensor([2.0, -1.0, 0.1, -3.0]), rtol=1e-6, atol=0)
    assert after["weight"][0].item() == 2.0 and after["weight"][3].item() == -3.0
    assert stats["dampened_share"] == 1.0


def test_ssd_never_grows_a_weight_and_never_touches_an_unselected_one(monkeypatch, runtime):
    """Selection and clamp together, on random importances and settings: every element is
    either bit-identical (not selected) or multiplied by exactly min(lambda I_D / I_f, 1) <= 1."""
    gen = torch.Generator().manual_seed(0)
    for alpha, beta in ((1.0, 10.0), (2.0, 5.0), (10.0, 1.0), (5.0, 0.5)):
        weight = torch.randn(400, generator=gen)
        whole = torch.rand(400, generator=gen) ** 4  # spread over orders of magnitude
        forget = torch.rand(400, generator=gen) ** 4 * 20
        after, stats = ssd_on(monkeypatch, runtime, {"w": weight}, {"w": whole}, {"w": forget}, alpha, beta)
        selected = forget > alpha * whole
        factor = torch.clamp(beta * whole / forget, max=1.0)
        assert 0 < int(selected.sum()) < 400  # both kinds present, so the test can tell them apart
        assert torch.equal(after["w"][~selected], weight[~selected])
        assert torch.allclose(after["w"][selected], weight[selected] * factor[selected], rtol=1e-6, atol=0)
        assert bool((after["w"].abs() <= weight.abs()).all())
        # selected elements whose unclamped factor exceeds 1 (only possible when lambda > alpha)
        grows = selected & (beta * whole / forget > 1)
        assert bool(grows.any()) == (beta > alpha)
        assert stats["dampened_share"] == pytest.approx(int(selected.sum()) / 400)


class FixedBatches:
    """A part with hand-made batches."""

    def __init__(self, batches):
        self._batches = batches

    def batches(self, batch_size, shuffle=False, augment=False):
        yield from self._batches


def test_ssd_importance_is_the_mean_over_batches_of_the_squared_batch_gradient(runtime):
    """Step 1: per parameter, the squared gradient of each batch's mean cross-entropy, averaged
    over the batches (not the square of the averaged gradient), in eval mode. A zero linear
    layer predicts 1/2 for both classes, so the gradients are known by hand."""
    model = nn.Linear(2, 2)
    nn.init.zeros_(model.weight), nn.init.zeros_(model.bias)
    model.train()
    part = FixedBatches([(torch.tensor([[1.0, 2.0]]), torch.tensor([0])),
                         (torch.tensor([[2.0, 0.0]]), torch.tensor([1]))])
    importance = ssd.fisher_diagonal(model, part, runtime, batch_size=1)
    # batch 1: dW = (p - onehot(0)) x^T = [[-.5, -1], [.5, 1]]; batch 2: [[1, 0], [-1, 0]]; db = [-+.5, +-.5]
    assert torch.allclose(importance["weight"], torch.tensor([[0.625, 0.5], [0.625, 0.5]]))
    assert torch.allclose(importance["bias"], torch.tensor([0.25, 0.25]))
    assert not model.training
    assert all(p.grad is None for p in model.parameters())  # no gradient left for the dampening step


def test_ssd_real_run_leaves_unselected_weights_bit_identical(prepared, monkeypatch):
    """Steps 1 and 2 on the tiny digits ResNet: with the importances SSD computed, every
    parameter element outside the selection is the original bit for bit, every selected one is
    the original times min(lambda I_D / I_f, 1), and nothing is trained."""
    computed = []
    real = ssd.fisher_diagonal

    def recording(model, part, runtime, batch_size):
        computed.append((part.name, real(model, part, runtime, batch_size)))
        return computed[-1][1]

    monkeypatch.setattr(ssd, "fisher_diagonal", recording)
    hp = get_method("ssd").resolve({"alpha": 10.0, "beta": 1.0})
    # the method alone, as run_method calls it (run_method's evaluation would cost seconds more)
    data = prepared.data
    model = prepared.model()
    stats = get_method("ssd").unlearn(model, UnlearnData(data.retain, data.forget, data.train, data.num_classes), hp,
                                      context(prepared.runtime))
    by_part = dict(computed)  # I_D on all of D, I_f on D_f, in either order
    assert len(computed) == 2 and set(by_part) == {data.train.name, data.forget.name} and data.train.name != data.forget.name
    whole, forget = by_part[data.train.name], by_part[data.forget.name]
    original = prepared.refs.original_state
    selected_total = changed = 0
    for name, p in model.named_parameters():
        before, after = original[name], p.detach().cpu()
        selected = (forget[name] > 10.0 * whole[name]).cpu()
        factor = (whole[name] / forget[name]).clamp(max=1.0).cpu()
        assert torch.equal(after[~selected], before[~selected]), name
        assert torch.allclose(after[selected], before[selected] * factor[selected], rtol=1e-5, atol=1e-12), name
        assert bool((after.abs() <= before.abs()).all()), name
        selected_total += int(selected.sum())
        changed += int((after != before).sum())
    assert 0 < changed <= selected_total  # some were dampened, so the comparison means something
    assert stats["dampened_share"] == pytest.approx(selected_total / sum(p.numel() for p in model.parameters()))
    # the BatchNorm statistics are buffers, not parameters: untouched
    state = model.state_dict()
    assert all(torch.equal(state[k].cpu(), original[k]) for k in original if k.endswith("running_var"))


# ---------------------------------------------------------------------------------------------
# Kookmin (NeurIPS 2023 competition, DeepUnlearn's kgltop2)
# ---------------------------------------------------------------------------------------------


class TwoConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, bias=False)  # 144 weights, fan_out 144
        self.conv2 = nn.Conv2d(16, 32, 3, bias=False)  # 4608 weights, fan_out 288, fan_in 144
        self.fc = nn.Linear(32, 2)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def hand_gradients(model):
    """|grad| known per element, with random signs: conv1 tiny (1e-6 .. 1.44e-4), conv2 large
    (1 .. 4608), so a global choice of the smallest 30% would take all of conv1."""
    gen = torch.Generator().manual_seed(1)
    grads = {}
    for name, scale in (("conv1", 1e-6), ("conv2", 1.0)):
        w = getattr(model, name).weight
        magnitude = (torch.randperm(w.numel(), generator=gen) + 1).float() * scale
        sign = torch.where(torch.rand(w.numel(), generator=gen) < 0.5, -1.0, 1.0)
        grads[name] = (magnitude * sign).view_as(w)
    return grads


def run_kookmin(monkeypatch, runtime, hp):
    """Kookmin.unlearn on TwoConvs with hand-made gradients; the fine-tuning is recorded, not run."""
    torch.manual_seed(0)
    model = TwoConvs()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    grads = hand_gradients(model)
    forget, retain, _ = two_parts(4, 16)
    seen = {}

    def fake_gradients(model_, terms, runtime_, batch_size):
        seen["terms"] = list(terms)
        model_.zero_grad(set_to_none=True)
        for name, g in grads.items():
            getattr(model_, name).weight.grad = g.clone()
        model_.fc.weight.grad = torch.zeros_like(model_.fc.weight)

    def fake_train(model_, part, runtime_, **kw):
        seen["after_reinit"] = {k: v.clone() for k, v in model_.state_dict().items()}
        seen["train"] = (part, kw)

    monkeypatch.setattr(training, "accumulate_gradients", fake_gradients)
    monkeypatch.setattr(training, "train_epochs", fake_train)
    data = UnlearnData(retain, forget, None, 2)
    epoch_ends = []
    stats = get_method("kookmin").unlearn(model, data, get_method("kookmin").resolve(hp), context(runtime, epoch_ends))
    return model, original, grads, seen, stats, epoch_ends


def smallest(grad, fraction):
    """The mask of the round(fraction * n) elements of smallest |grad|."""
    k = round(fraction * grad.numel())
    mask = torch.zeros(grad.numel(), dtype=torch.bool)
    mask[grad.abs().flatten().argsort()[:k]] = True
    return mask.view_as(grad)


def test_kookmin_gradients_are_plus_ce_on_a_retain_subset_of_forget_size_and_minus_ce_on_forget(monkeypatch, runtime):
    """Step 1: the saliency gradients are +CE on a random retain subset as large as D_f and
    -CE on D_f."""
    _, _, _, seen, _, _ = run_kookmin(monkeypatch, runtime, {"epochs": 1})
    (subset, plus), (forget, minus) = seen["terms"]
    retain = seen["train"][0]
    assert (plus, minus) == (1.0, -1.0)
    assert forget.name == "forget" and len(subset) == len(forget) == 4
    assert set(subset.indices.tolist()) <= set(retain.indices.tolist())
    assert len(set(subset.indices.tolist())) == 4  # without repeats


def test_kookmin_reinitialises_the_smallest_gradient_share_of_each_conv_layer(monkeypatch, runtime):
    """Step 2: in every conv layer on its own, the round(30%) weights of smallest |gradient|
    are re-initialised and every other weight (and every non-conv parameter) is kept bit for
    bit. A global choice would re-initialise all of conv1 (its gradients are all tiny)."""
    model, original, grads, seen, stats, _ = run_kookmin(monkeypatch, runtime, {"epochs": 1, "reinit_fraction": 0.3})
    after = seen["after_reinit"]
    for name, k in (("conv1", 43), ("conv2", 1382)):  # round(0.3 * 144), round(0.3 * 4608)
        key = f"{name}.weight"
        expected = smallest(grads[name], 0.3)
        changed = after[key] != original[key]
        assert int(expected.sum()) == k
        assert torch.equal(changed, expected), name
    assert torch.equal(after["fc.weight"], original["fc.weight"]) and torch.equal(after["fc.bias"], original["fc.bias"])
    assert stats["reinitialised_weights"] == 43 + 1382


def test_kookmin_reinitialisation_is_kaiming_normal_fan_out(monkeypatch, runtime):
    """Step 2: the fresh weights are Kaiming normal with fan_out (std sqrt(2 / (32 * 9)) =
    0.083 in conv2; fan_in would give 0.118, PyTorch's default init 0.048)."""
    _, original, grads, seen, _, _ = run_kookmin(monkeypatch, runtime, {"epochs": 1})
    fresh = seen["after_reinit"]["conv2.weight"][smallest(grads["conv2"], 0.3)]
    assert fresh.std().item() == pytest.approx(math.sqrt(2 / 288), rel=0.1)
    assert abs(fresh.mean().item()) < 0.01


def test_kookmin_scales_kept_conv_gradients_by_other_grad_scale_and_reinitialised_by_one(monkeypatch, runtime):
    """Step 3: before every optimizer step, conv weight gradients are multiplied by 1 where
    re-initialised and by `other_grad_scale` (0.1) elsewhere; other parameters keep theirs.
    SGD momentum 0.9, weight decay 5e-4 (applied by the optimizer, so unscaled), lr `lr`."""
    model, _, grads, seen, _, _ = run_kookmin(monkeypatch, runtime, {"epochs": 1})
    part, kw = seen["train"]
    assert part.name == "retain" and kw["epochs"] == 1 and kw["batch_size"] == 64
    group = kw["optimizer"].param_groups[0]
    assert (group["momentum"], group["weight_decay"]) == (0.9, 5e-4)
    for p in model.parameters():
        p.grad = torch.full_like(p, 2.0)
    kw["before_step"]()
    for name in ("conv1", "conv2"):
        mask = smallest(grads[name], 0.3)
        expected = torch.where(mask, 2.0, 2.0 * 0.1)
        assert torch.allclose(getattr(model, name).weight.grad, expected, rtol=1e-6, atol=0), name
    assert torch.equal(model.fc.weight.grad, torch.full_like(model.fc.weight, 2.0))
    assert torch.equal(model.fc.bias.grad, torch.full_like(model.fc.bias, 2.0))
    # another scale is honoured
    model, _, grads, seen, _, _ = run_kookmin(monkeypatch, runtime, {"epochs": 1, "other_grad_scale": 0.5})
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    seen["train"][1]["before_step"]()
    assert torch.allclose(model.conv2.weight.grad, torch.where(smallest(grads["conv2"], 0.3), 1.0, 0.5))


def test_kookmin_warmup_then_decay_factors():
    """Step 3's schedule, DeepUnlearn's LinearAnnealingLR: warm up linearly over (epochs + 1)
    // 2 epochs, then decay linearly towards 0 at epoch epochs + 1."""
    def factors(epochs):
        f = warmup_then_decay(epochs)
        return [f(e) for e in range(epochs)]

    assert factors(5) == pytest.approx([1 / 3, 2 / 3, 1, 2 / 3, 1 / 3])
    assert factors(4) == pytest.approx([1 / 2, 1, 2 / 3, 1 / 3])
    assert factors(2) == pytest.approx([1, 1 / 2])
    assert factors(1) == pytest.approx([1])
    assert factors(8) == pytest.approx([1 / 4, 2 / 4, 3 / 4, 1, 4 / 5, 3 / 5, 2 / 5, 1 / 5])


def test_kookmin_learning_rate_moves_per_epoch_along_the_warmup(monkeypatch, runtime):
    """Step 3 for real: the learning rate of every optimizer step is `lr` times the epoch's
    factor (1/3, 2/3, 1, 2/3, 1/3 at 5 epochs), constant within an epoch (stepped per epoch,
    not per batch); each epoch is reported."""
    used = []
    real_train = training.train_epochs

    def recording_train(model, part, runtime_, **kw):
        scale, optimizer = kw["before_step"], kw["optimizer"]

        def before_step():
            used.append(optimizer.param_groups[0]["lr"])
            scale()

        real_train(model, part, runtime_, **{**kw, "before_step": before_step})

    monkeypatch.setattr(training, "train_epochs", recording_train)
    torch.manual_seed(0)
    forget, retain, _ = two_parts(4, 16)
    epoch_ends = []
    hp = get_method("kookmin").resolve({"epochs": 5, "lr": 3e-3, "batch_size": 8})
    get_method("kookmin").unlearn(TwoConvs(), UnlearnData(retain, forget, None, 2), hp, context(runtime, epoch_ends))
    per_epoch = [f * 3e-3 for f in (1 / 3, 2 / 3, 1, 2 / 3, 1 / 3)]
    assert used == pytest.approx([lr for lr in per_epoch for _ in range(2)])  # 16 samples, batch 8: 2 steps
    assert [(phase, epoch) for phase, epoch, _, _ in epoch_ends] == [("kookmin", e) for e in range(5)]


# ---------------------------------------------------------------------------------------------
# Fanchuan (NeurIPS 2023 competition, DeepUnlearn's kgltop1)
# ---------------------------------------------------------------------------------------------


class Recorder(nn.Module):
    """A tiny network that logs which set each batch it sees comes from (forget images are
    positive, retain images negative, also after augmentation: the centre pixel survives the
    crop) and whether it is in train mode."""

    def __init__(self, log):
        super().__init__()
        self.log = log
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        centre = x[:, 0, 4, 4]
        self.log.append("F" if bool((centre > 0).all()) else "R" if bool((centre < 0).all()) else "mixed")
        assert self.training, "fanchuan trains in train mode throughout"
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_fanchuan_stages_run_in_order_on_their_data(monkeypatch, runtime):
    """Step 1 then step 2: one uniform-KL pass over D_f (KL(uniform || softmax), batchmean);
    then per round a contrastive pass (each forget batch against a retain batch, forget side
    first) followed by one cross-entropy epoch on D_r. Three SGD optimisers made once (so their
    momentum carries over rounds): the KL one at `kl_lr`, the contrastive one from
    `contrast_lr` along a cosine to 1e-6 over the contrastive steps only, the retain one at
    `retain_lr` * batch / 64; weight decay 0, 0, 1e-2."""
    import torch.nn.functional as F

    log = []
    made = []
    real_sgd = training.sgd

    def recording_sgd(params, lr, momentum=0.9, weight_decay=5e-4, nesterov=False):
        opt = real_sgd(params, lr, momentum, weight_decay, nesterov)
        index = len(made)
        made.append((lr, momentum, weight_decay))
        opt.register_step_pre_hook(lambda o, a, k: log.append(("step", index, o.param_groups[0]["lr"])))
        return opt

    real_kl, real_ce, real_sim = F.kl_div, F.cross_entropy, fanchuan.logit_similarity
    kl_targets = []

    def kl(input, target, *a, **k):
        log.append("kl")
        kl_targets.append((target.clone(), k.get("reduction"), torch.allclose(input.exp().sum(1), torch.ones(len(input)))))
        return real_kl(input, target, *a, **k)

    def ce(*a, **k):
        log.append("ce")
        return real_ce(*a, **k)

    def sim(forget_logits, retain_logits, temperature):
        log.append(("contrast", temperature))
        return real_sim(forget_logits, retain_logits, temperature)

    monkeypatch.setattr(training, "sgd", recording_sgd)
    monkeypatch.setattr(F, "kl_div", kl)
    monkeypatch.setattr(F, "cross_entropy", ce)
    monkeypatch.setattr(fanchuan, "logit_similarity", sim)
    torch.manual_seed(0)
    forget, retain, whole = two_parts(8, 16, crop_padding=2, flip=True)
    hp = get_method("fanchuan").resolve({"epochs": 2, "batch_size": 4, "kl_lr": 0.01, "contrast_lr": 0.002,
                                         "retain_lr": 0.0032, "temperature": 1.5})
    epoch_ends = []
    get_method("fanchuan").unlearn(Recorder(log), UnlearnData(retain, forget, whole, 3), hp, context(runtime, epoch_ends))

    def cosine(t):  # CosineAnnealingLR over 2 rounds x 2 forget batches
        return 1e-6 + (0.002 - 1e-6) * (1 + math.cos(math.pi * t / 4)) / 2

    retain_lr = 0.0032 * 4 / 64
    kl_stage = ["F", "kl", ("step", 0, 0.01)] * 2
    rounds = []
    for r in range(2):
        rounds += [x for t in (2 * r, 2 * r + 1) for x in ("F", "R", ("contrast", 1.5), ("step", 1, cosine(t)))]
        rounds += ["R", "ce", ("step", 2, retain_lr)] * 4
    expected = kl_stage + rounds
    assert len(log) == len(expected), (log, expected)
    for got, want in zip(log, expected):
        if isinstance(want, tuple) and want[0] == "step":
            assert got[:2] == want[:2] and got[2] == pytest.approx(want[2], rel=1e-6), (got, want)
        else:
            assert got == want, (log, expected)
    assert made == [(0.01, 0.9, 0.0), (0.002, 0.9, 0.0), (retain_lr, 0.9, 1e-2)]
    # the KL target is the uniform distribution over the 3 classes, against log-probabilities
    assert len(kl_targets) == 2
    for target, reduction, log_probabilities in kl_targets:
        assert torch.allclose(target, torch.full_like(target, 1 / 3)) and reduction == "batchmean"
        assert log_probabilities
    assert [(phase, epoch) for phase, epoch, _, _ in epoch_ends] == [("fanchuan", 0), ("fanchuan", 1)]


def test_fanchuan_uniform_kl_pass_flattens_the_forget_predictions(runtime):
    """Step 1 alone (one KL step at a high rate; step 2's learning rates are zero): a pass of
    KL(uniform || softmax) raises the entropy of the predictions on D_f towards log(classes).
    (The images are constant, so the Recorder's output is its fc bias.)"""
    torch.manual_seed(0)
    forget, retain, whole = two_parts(8, 8)
    model = Recorder([])
    with torch.no_grad():
        model.fc.bias.copy_(torch.tensor([4.0, -2.0, 0.0]))  # confident before

    def entropy():
        model.train()
        with torch.no_grad():
            p = torch.softmax(model(next(forget.batches(8))[0]), 1)
        return float(-(p * p.log()).sum(1).mean())

    before = entropy()
    hp = get_method("fanchuan").resolve({"epochs": 1, "batch_size": 8, "kl_lr": 2.0, "contrast_lr": 0.0,
                                         "retain_lr": 0.0})
    get_method("fanchuan").unlearn(model, UnlearnData(retain, forget, whole, 3), hp, context(runtime))
    after = entropy()
    assert before < 0.5 and after > before + 0.3 and after <= math.log(3) + 1e-6


def test_fanchuan_contrastive_similarity_detaches_the_retain_side():
    """Step 2's contrastive loss -mean(log_softmax(z_f z_r^T / T)): only the forget side gets a
    gradient; the similarity is z_f z_r^T / T."""
    forget = torch.tensor([[1.0, 2.0], [0.0, -1.0]], requires_grad=True)
    retain = torch.tensor([[3.0, 1.0], [1.0, 1.0], [-2.0, 0.5]], requires_grad=True)
    sim = logit_similarity(forget, retain, 2.0)
    assert torch.allclose(sim, torch.tensor([[2.5, 1.5, -0.5], [-0.5, -0.5, -0.25]]))
    loss = -torch.log_softmax(sim, dim=-1).mean()
    loss.backward()
    assert retain.grad is None and forget.grad is not None and bool((forget.grad != 0).any())
