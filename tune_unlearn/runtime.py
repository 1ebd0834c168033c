"""Where and how tensors run: device choice, bf16 autocast, seeding, and a synchronised clock."""

from __future__ import annotations

import contextlib
import os
import random
import time
from dataclasses import dataclass

import numpy as np
import torch

from .cost import CostMeter
from .errors import UserError, one_of


@dataclass(frozen=True)
class Runtime:
    device: torch.device

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        """bf16 autocast on CUDA (no loss scaling needed); plain fp32 on the CPU."""
        if self.cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        # channels_last on the CPU too: oneDNN's convolutions train a ResNet-18 faster in it
        # (docs/results.md, reference training, has the measurement)
        model = model.to(self.device).to(memory_format=torch.channels_last)
        if not self.cuda:
            _narrow_strided_1x1_in_nchw(model)
        return model

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def describe(self) -> str:
        if self.cuda:
            return torch.cuda.get_device_name(self.device)
        return f"cpu ({torch.get_num_threads()} threads)"


# oneDNN's backward (weights) of a strided 1x1 convolution writes past its workspace when the
# input is channels_last and has fewer channels than the kernel's block (8 with AVX2, 16 with
# AVX-512): uxlfoundation/oneDNN issue 6035, in the oneDNN of PyTorch 2.14. The heap corrupts
# and training aborts ("corrupted double-linked list") on networks of width under 16, such as
# the test suite's. Those convolutions run in NCHW instead; every other one stays channels_last.
_ONEDNN_CHANNEL_BLOCK = 16


def _nchw_input(module: torch.nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:])


def _narrow_strided_1x1_in_nchw(model: torch.nn.Module) -> None:
    for module in model.modules():
        if (isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1) and module.stride != (1, 1)
                and module.in_channels < _ONEDNN_CHANNEL_BLOCK):
            module.to(memory_format=torch.contiguous_format)
            module.register_forward_pre_hook(_nchw_input)


def make_runtime(device: str = "auto") -> Runtime:
    """'auto' takes CUDA when visible (inside a Ray trial: the GPU Ray assigned)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise one_of("device", device, ["auto", "cpu", "cuda", "cuda:N"])
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but no CUDA device is visible")
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(torch.device(device))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def limit_threads(cpus: float | int | None) -> None:
    """Keep a trial's intra-op threads within the CPUs Ray gave it (oversubscription on a
    shared machine costs far more than it gains)."""
    if cpus:
        torch.set_num_threads(max(1, int(cpus)))
    elif "OMP_NUM_THREADS" in os.environ:
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))


class Stopwatch:
    """Wall time and counted work (MACs, layer calls, steps: cost.py) of the unlearning procedure alone: synchronises
    the device at every start and stop, and `paused()` excludes evaluation done in callbacks
    from both."""

    def __init__(self, runtime: Runtime):
        self._runtime = runtime
        self._elapsed = 0.0
        self._started: float | None = None
        self.meter = CostMeter()

    @property
    def macs(self) -> int:
        return self.meter.macs

    def counts(self) -> dict:
        """MACs, layer calls and optimiser steps so far (cost.py)."""
        return self.meter.counts()

    def start(self) -> "Stopwatch":
        self._runtime.sync()
        self.meter.start()
        self._started = time.perf_counter()
        return self

    def stop(self) -> float:
        if self._started is not None:
            self._runtime.sync()
            self._elapsed += time.perf_counter() - self._started
            self._started = None
            self.meter.stop()
        return self._elapsed

    @property
    def elapsed(self) -> float:
        if self._started is None:
            return self._elapsed
        self._runtime.sync()
        return self._elapsed + time.perf_counter() - self._started

    @contextlib.contextmanager
    def paused(self):
        running = self._started is not None
        self.stop()
        try:
            yield
        finally:
            if running:
                self.start()
