"""Piggyback binary masks (Mallya et al., ECCV 2018) over a frozen network.

Every conv and linear weight W gets a real-valued mask X of its shape. The forward pass uses
W * Y with Y = [X >= threshold]; the backward pass is the straight-through estimator
dL/dX := dL/dY = dL/dW_eff * W. BatchNorm and biases are neither masked nor trained, and the
network stays in eval mode, so BatchNorm statistics are the original model's.

Used by the selective-forgetting method (with an L1 term that sinks the masks the data does
not need) and by the leakage metric (without it).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..data.parts import Part, batch_count
from ..runtime import Runtime
from ..training import check_finite

_SCOPE_PARTS = ("conv1", "layer1", "layer2", "layer3", "layer4", "fc")


class _MaskedWeight(torch.autograd.Function):
    """W * [X >= t] forward; straight-through backward to X (no gradient to W or t)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, real: torch.Tensor, threshold: float) -> torch.Tensor:
        ctx.save_for_backward(weight)
        return weight * (real >= threshold).to(weight.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (weight,) = ctx.saved_tensors
        return None, grad_out * weight, None


def maskable_names(model: nn.Module) -> list[str]:
    """Names of the conv and linear weights (what Piggyback masks), in model order."""
    return [f"{name}.weight" for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def scope_names(names: list[str], scope: str) -> list[str]:
    """The weights inside a layer scope: 'all', or stage names joined by '+' (layer3+layer4)."""
    if scope == "all":
        return list(names)
    parts = scope.split("+")
    unknown = [p for p in parts if p not in _SCOPE_PARTS]
    if unknown:
        raise ValueError(f"unknown layer scope part {unknown[0]!r}; allowed: all, or {'+'.join(_SCOPE_PARTS)} parts")
    return [n for n in names if n.split(".")[0] in parts]


class CachedInputs:
    """The activations a frozen prefix of the network gives for a part, computed once (eval
    mode, no augmentation), with the part's `batches` interface: mask learning over the last
    stages then runs forward and backward through those stages alone."""

    def __init__(self, model: nn.Module, part: Part, runtime: Runtime, start: str, batch_size: int):
        was_training = model.training
        model.eval()
        inputs, labels = [], []
        with torch.no_grad(), runtime.autocast():
            for x, y in part.batches(batch_size):
                inputs.append(model(x, stop=start))
                labels.append(y)
        model.train(was_training)
        self.inputs, self._labels = torch.cat(inputs), torch.cat(labels)

    def __len__(self) -> int:
        return len(self._labels)

    def batches(self, batch_size: int, shuffle: bool = False, augment: bool = False):
        order = torch.arange(len(self), device=self._labels.device)
        if shuffle:  # the same draws as TensorPart.batches, so both give the same batch order
            order = order[torch.randperm(len(order), device=order.device)]
        for chunk in order.tensor_split(batch_count(len(order), batch_size)):
            yield self.inputs[chunk], self._labels[chunk]


class PiggybackMask:
    """Real-valued masks over a frozen model's conv/linear weights (or the subset `names`),
    applied by `forward`, which runs the model from stage `start` (models.STAGES) on."""

    def __init__(self, model: nn.Module, x_init: float, threshold: float, names: list[str] | None = None,
                 start: str = "stem"):
        self.model = model
        self.start = start
        self.threshold = threshold
        params = dict(model.named_parameters())
        self.names = maskable_names(model) if names is None else list(names)
        self.weights = {n: params[n].detach() for n in self.names}
        self.real = {n: torch.full_like(w, x_init, dtype=torch.float32, requires_grad=True)
                     for n, w in self.weights.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        masked = {n: _MaskedWeight.apply(self.weights[n], self.real[n], self.threshold) for n in self.names}
        if self.start == "stem":
            return functional_call(self.model, masked, (x,))
        return functional_call(self.model, masked, (x,), {"start": self.start})

    @torch.no_grad()
    def selected(self) -> dict[str, torch.Tensor]:
        """The binary mask Y (True = weight kept / relied on by the mask's data)."""
        return {n: x >= self.threshold for n, x in self.real.items()}

    @torch.no_grad()
    def zero_share(self, names: list[str] | None = None) -> float:
        """Share of mask entries at zero (X < threshold) among `names` (default: all)."""
        names = self.names if names is None else names
        if not names:
            return 0.0
        zeros = sum((self.real[n] < self.threshold).sum() for n in names)
        total = sum(self.real[n].numel() for n in names)
        return float(zeros) / total


def learn_mask(
    model: nn.Module,
    part: Part,
    runtime: Runtime,
    *,
    x_init: float,
    threshold: float,
    lam: float,
    lr: float,
    epochs: int,
    batch_size: int,
    on_epoch: Callable[[int, dict], None] | None = None,
    names: list[str] | None = None,
    trainable: list[nn.Parameter] | None = None,
    trainable_lr: float | None = None,
    start: str = "stem",
    stop_delta: float = 0.0,
) -> PiggybackMask:
    """Learn a Piggyback mask on `part` with loss CE + lam * ||X||_1 (Adam on X only).

    `names` restricts the mask to some weights (default: every conv and linear weight);
    `trainable` are parameters trained alongside the mask (Piggyback's new classifier head for
    a new task), with Adam at `trainable_lr` (default: `lr`); every other parameter stays frozen.
    With `start` (a stage of models.STAGES), `part` holds the activations entering that stage
    (CachedInputs) and every masked weight must lie at or after it. With `stop_delta` > 0,
    learning stops after the first epoch in which the zero share, once above 0, grew by less
    than `stop_delta` (it has levelled off).

    The L1 gradient lam * sign(X) is added to X.grad directly (two fused foreach kernels)
    instead of back-propagating through a sum of |X| over every weight tensor: the same
    gradient, a fraction of the cost on an 11M-entry mask.
    """
    trainable = list(trainable or [])
    was_training = model.training
    requires = [p.requires_grad for p in model.parameters()]
    model.eval()  # BatchNorm keeps the original statistics
    for p in model.parameters():
        p.requires_grad_(any(p is t for t in trainable))
    mask = PiggybackMask(model, x_init, threshold, names, start)
    reals = list(mask.real.values())
    groups = [{"params": reals, "lr": lr}]
    if trainable:
        groups.append({"params": trainable, "lr": trainable_lr or lr})
    optimizer = torch.optim.Adam(groups)
    previous = 0.0
    try:
        for epoch in range(epochs):
            total = torch.zeros((), device=runtime.device)
            seen = 0
            for x, y in part.batches(batch_size, shuffle=True):
                with runtime.autocast():
                    loss = F.cross_entropy(mask.forward(x), y)
                optimizer.zero_grad(set_to_none=False)
                loss.backward()
                if lam:
                    grads = [x_.grad for x_ in reals]
                    torch._foreach_add_(grads, torch._foreach_sign(reals), alpha=lam)
                optimizer.step()
                total += loss.detach().float() * len(y)
                seen += len(y)
            ce = check_finite(total.item() / max(seen, 1), f"mask-learning loss in epoch {epoch + 1}")
            share = mask.zero_share()
            if on_epoch is not None:
                on_epoch(epoch, {"mask_ce": ce, "mask_zero_share": share})
            if stop_delta > 0 and 0 < share < previous + stop_delta:
                break
            previous = share
    finally:
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
        model.train(was_training)
    return mask


@torch.no_grad()
def masked_accuracy(mask: PiggybackMask, part: Part, runtime: Runtime, batch_size: int) -> float:
    """Accuracy (%) of the masked network on `part`."""
    mask.model.eval()
    correct = torch.zeros((), device=runtime.device)
    for x, y in part.batches(batch_size):
        with runtime.autocast():
            correct += (mask.forward(x).argmax(1) == y).sum()
    return 100.0 * float(correct) / max(len(part), 1)
