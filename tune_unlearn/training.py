"""Training and inference loops shared by the references and the unlearning methods."""

from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .data.parts import Part, batch_count
from .data.experiment import TrainSpec
from .runtime import Runtime

EpochCallback = Callable[[int, dict], None]  # (epoch index from 0, {"loss": ...})


from .errors import Diverged  # noqa: E402,F401  (defined without torch: the command line catches it)


def check_finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise Diverged(f"{what} is {value}")
    return value


def sgd(params, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4, nesterov: bool = False) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, eta_min: float = 0.0):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps), eta_min=eta_min)


def run_epochs(
    model: nn.Module,
    runtime: Runtime,
    *,
    epochs: int,
    batches: Callable[[], Iterable],
    loss_fn: Callable[[object], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler=None,
    on_epoch: EpochCallback | None = None,
    what: str = "training loss",
    before_step: Callable[[], None] | None = None,
    after_step: Callable[[], None] | None = None,
    train_mode: bool = True,
    frozen: Sequence[nn.Module] = (),
) -> None:
    """The training loop every method shares: `epochs` passes over `batches()` (called once per
    epoch), minimising `loss_fn(batch)` under autocast; the scheduler steps per batch. The loss
    is synchronised once per epoch, not per step, and checked for divergence. `before_step`
    runs between backward and the optimizer step (gradient masks and scaling), `after_step`
    after it (weights put back where they must not move). With
    `train_mode=False` the model trains in eval mode: BatchNorm uses and keeps its running
    statistics; the `frozen` sub-modules stay in eval mode either way."""
    for epoch in range(epochs):
        model.train(train_mode)
        for module in frozen:
            module.eval()
        total = torch.zeros((), device=runtime.device)
        steps = 0
        for batch in batches():
            with runtime.autocast():
                loss = loss_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if before_step is not None:
                before_step()
            optimizer.step()
            if after_step is not None:
                after_step()
            if scheduler is not None:
                scheduler.step()
            total += loss.detach().float()
            steps += 1
        mean = check_finite(total.item() / max(steps, 1), f"{what} in epoch {epoch + 1}")
        if on_epoch is not None:
            on_epoch(epoch, {"loss": mean})


def cross_entropy(model: nn.Module, label_smoothing: float = 0.0) -> Callable[[tuple], torch.Tensor]:
    """loss_fn for (x, y) batches."""
    return lambda batch: F.cross_entropy(model(batch[0]), batch[1], label_smoothing=label_smoothing)


def train_epochs(model: nn.Module, part: Part, runtime: Runtime, *, epochs: int, batch_size: int,
                 optimizer: torch.optim.Optimizer, scheduler=None, augment: bool = True,
                 label_smoothing: float = 0.0, on_epoch: EpochCallback | None = None,
                 what: str = "training loss", before_step: Callable[[], None] | None = None,
                 after_step: Callable[[], None] | None = None, frozen: Sequence[nn.Module] = ()) -> None:
    """Cross-entropy training on `part` (shuffled, augmented)."""
    run_epochs(model, runtime, epochs=epochs, batches=lambda: part.batches(batch_size, shuffle=True, augment=augment),
               loss_fn=cross_entropy(model, label_smoothing), optimizer=optimizer, scheduler=scheduler,
               on_epoch=on_epoch, what=what, before_step=before_step, after_step=after_step, frozen=frozen)


def endless(part: Part, batch_size: int, augment: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled batches of `part` forever (reshuffled at every pass): the partner stream when a
    method pairs every batch of one set with a batch of another."""
    while True:
        yield from part.batches(batch_size, shuffle=True, augment=augment)


def train_recipe(model: nn.Module, part: Part, recipe: TrainSpec, runtime: Runtime,
                 on_epoch: EpochCallback | None = None) -> None:
    """The reference recipe: SGD (Nesterov) with a one-cycle schedule peaking at `recipe.lr`."""
    optimizer = sgd(model.parameters(), recipe.lr, recipe.momentum, recipe.weight_decay, recipe.nesterov)
    steps = recipe.epochs * batch_count(len(part), recipe.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=steps)
    train_epochs(model, part, runtime, epochs=recipe.epochs, batch_size=recipe.batch_size, optimizer=optimizer,
                 scheduler=scheduler, label_smoothing=recipe.label_smoothing, on_epoch=on_epoch)


def finetune(model: nn.Module, part: Part, runtime: Runtime, *, epochs: int, lr: float, batch_size: int,
             momentum: float = 0.9, weight_decay: float = 5e-4, on_epoch: EpochCallback | None = None,
             before_step: Callable[[], None] | None = None, params=None, frozen: Sequence[nn.Module] = ()) -> None:
    """SGD with a cosine decay to zero over `epochs` passes over `part` (augmented). The
    `frozen` sub-modules are neither trained nor put in train mode: their parameters get no
    gradient, so backward stops where they end."""
    if epochs <= 0:
        return
    frozen_params = {id(p) for m in frozen for p in m.parameters()}
    if params is None:
        params = [p for p in model.parameters() if id(p) not in frozen_params]
    requires = [(p, p.requires_grad) for m in frozen for p in m.parameters()]
    for p, _ in requires:
        p.requires_grad_(False)
    try:
        optimizer = sgd(params, lr, momentum, weight_decay)
        scheduler = cosine_schedule(optimizer, epochs * batch_count(len(part), batch_size))
        train_epochs(model, part, runtime, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                     scheduler=scheduler, on_epoch=on_epoch, what="fine-tuning loss", before_step=before_step,
                     frozen=frozen)
    finally:
        for p, r in requires:
            p.requires_grad_(r)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, part: Part, batch_size: int) -> None:
    """Re-estimate every BatchNorm's running statistics on `part` (one forward pass in train
    mode, no gradients, cumulative average; torch.optim.swa_utils.update_bn)."""
    was_training = model.training
    torch.optim.swa_utils.update_bn((x for x, _ in part.batches(batch_size)), model)
    model.train(was_training)


def accumulate_gradients(model: nn.Module, terms: Iterable[tuple[Part, float]], runtime: Runtime,
                         batch_size: int) -> None:
    """Fresh .grad of the sum over (part, sign) terms of sign * the batch cross-entropies, in
    eval mode so that BatchNorm statistics do not move (the saliency passes of SalUn and
    Kookmin)."""
    model.eval()
    model.zero_grad(set_to_none=True)
    for part, sign in terms:
        for x, y in part.batches(batch_size):
            with runtime.autocast():
                loss = sign * F.cross_entropy(model(x), y)
            loss.backward()


@torch.no_grad()
def predict(model: nn.Module, part: Part, runtime: Runtime, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 logits and labels of every sample of `part`, in order, in eval mode."""
    model.eval()
    logits, labels = [], []
    for x, y in part.batches(batch_size):
        with runtime.autocast():
            out = model(x)
        logits.append(out.float())
        labels.append(y)
    return torch.cat(logits), torch.cat(labels)
