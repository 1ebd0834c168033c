"""Hardware-independent cost: multiply-accumulates (MACs) of every conv and linear layer run.

Wall time depends on the machine and on how many trials share it (a trial on a quarter GPU is
slower than the references trained on a whole one), so the objective compares costs instead:
the unlearning's MACs over the retrained models' training MACs, counted the same way.

A forward pass of a layer costs output elements x MACs per output element. When autograd
records the layer, the backward pass is charged at the same moment: once more for the
gradient of its weight (if it requires one) and once more for the gradient of its input (if
that requires one), the usual 1 : 2 forward : backward accounting. Passes through part of a
network (a sub-module called alone) cost only what they run. Counting is one global module
hook, active only while a meter runs (`counting()`), so evaluation is never charged.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def _layer_macs(module: nn.Module, inputs: tuple, output) -> int:
    if isinstance(module, nn.Conv2d):
        per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
    elif isinstance(module, nn.Linear):
        per_output = module.in_features
    else:
        return 0
    forward = output.numel() * per_output
    if not torch.is_grad_enabled():
        return forward
    weight_grad = module.weight.requires_grad
    input_grad = bool(inputs) and isinstance(inputs[0], torch.Tensor) and inputs[0].requires_grad
    return forward * (1 + int(weight_grad) + int(input_grad))


class CostMeter:
    """Counts MACs of conv/linear layers while `counting()` is active (any model, any process
    thread; one meter counts at a time)."""

    def __init__(self) -> None:
        self.macs = 0
        self._handle = None

    def _hook(self, module: nn.Module, inputs: tuple, output) -> None:
        self.macs += _layer_macs(module, inputs, output)

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self) -> None:
        if self._handle is None:
            self._handle = nn.modules.module.register_module_forward_hook(self._hook)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @contextlib.contextmanager
    def counting(self):
        running = self.running
        self.start()
        try:
            yield self
        finally:
            if not running:
                self.stop()
