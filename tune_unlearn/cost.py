"""What an unlearning costs: counted work (multiply-accumulates, layer calls, optimiser steps)
and the device's price for each, so that cost means the time a user waits, not arithmetic alone.

Counting. While a meter runs (`counting()`), one global module hook charges every conv and
linear layer run with
- its multiply-accumulates (MACs): output elements x MACs per output element, and
- one *layer call*,
each once for the forward pass and, when autograd records the layer, once more for the gradient
of its weight (if it requires one) and once more for the gradient of its input (if that requires
one): the usual 1 : 2 forward : backward accounting. A global optimiser hook counts optimiser
steps. Passes through part of a network cost only what they run; evaluation is never charged.

Pricing (CostModel). Time is not proportional to MACs: every layer call also pays a fixed price
(kernel launches, autograd bookkeeping, BatchNorm and activation calls beside it, the
optimiser's per-tensor work), whatever the batch. On a 2-core CPU a width-16 ResNet-18 step on
8x8 images costs several times its arithmetic in that overhead, and on a GPU a small batch costs
nearly what a large one does. So cost is a time estimate

    cost_s = mac_s * MACs + call_s * layer calls

with both prices measured once per device, thread count and network (`calibrate`: training
steps at three batch sizes, least squares) and cached. A search scored on it cannot make
recovery cheaper by taking more, smaller steps. The estimate, unlike a stopwatch, does not move
with what else runs on the machine, so a trial's cost replays exactly; wall time is measured
and reported beside it (`time_s`). docs/results.md has the calibration's spread and how well
the estimate follows measured time.
"""

from __future__ import annotations

import contextlib
import json
import platform
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

CALIBRATION_VERSION = 2  # bump when calibrate measures differently (2: the fastest of the repeats)
CALIBRATION_BATCHES = (8, 32, 128)


def _layer_work(module: nn.Module, inputs: tuple, output) -> tuple[int, int]:
    """(MACs, layer calls) of one conv/linear run, its backward products included."""
    if isinstance(module, nn.Conv2d):
        per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
    elif isinstance(module, nn.Linear):
        per_output = module.in_features
    else:
        return 0, 0
    passes = 1
    if torch.is_grad_enabled():
        input_grad = bool(inputs) and isinstance(inputs[0], torch.Tensor) and inputs[0].requires_grad
        passes += int(module.weight.requires_grad) + int(input_grad)
    return output.numel() * per_output * passes, passes


class CostMeter:
    """Counts MACs, layer calls (conv/linear) and optimiser steps while `counting()` is active
    (any model, any optimiser, any thread of the process; one meter counts at a time)."""

    def __init__(self) -> None:
        self.macs = 0
        self.calls = 0
        self.steps = 0
        self._handles: list = []

    def _layer(self, module: nn.Module, inputs: tuple, output) -> None:
        macs, calls = _layer_work(module, inputs, output)
        self.macs += macs
        self.calls += calls

    def _step(self, optimizer, args, kwargs) -> None:
        self.steps += 1

    @property
    def running(self) -> bool:
        return bool(self._handles)

    def start(self) -> None:
        if not self._handles:
            self._handles = [nn.modules.module.register_module_forward_hook(self._layer),
                             register_optimizer_step_post_hook(self._step)]

    def stop(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @contextlib.contextmanager
    def counting(self):
        running = self.running
        self.start()
        try:
            yield self
        finally:
            if not running:
                self.stop()

    def counts(self) -> dict:
        return {"macs": self.macs, "calls": self.calls, "steps": self.steps}


@dataclass(frozen=True)
class CostModel:
    """The price of counted work on one device: seconds per MAC and per layer call."""

    mac_s: float
    call_s: float
    device: str = ""  # where it was measured (device, threads, processor)

    def seconds(self, macs: float, calls: float) -> float:
        return self.mac_s * macs + self.call_s * calls

    def priced(self, counts: dict) -> dict:
        """The counts with their cost (`cost`, estimated seconds) beside them."""
        return {**counts, "cost": self.seconds(counts.get("macs") or 0, counts.get("calls") or 0)}

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "CostModel":
        return cls(float(data["mac_s"]), float(data["call_s"]), str(data.get("device", "")))


def processor() -> str:
    """The CPU's model name (Linux), else what platform knows: prices differ between CPUs."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op threads set to `threads` for the block (None: unchanged)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_training_steps(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], sync: Callable[[], None],
                        seconds: float = 0.2, warmup: int = 2) -> tuple[float, dict]:
    """(seconds per step, counts per step) of SGD steps on one batch: cross-entropy, backward,
    optimiser step, in train mode; run for about `seconds` after `warmup` steps."""
    x, y = batch
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    model.train()

    def step() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    meter = CostMeter()
    sync()
    start = time.perf_counter()
    steps = 0
    with meter.counting():
        while True:
            step()
            steps += 1
            sync()
            if time.perf_counter() - start >= seconds and steps >= 3:
                break
    elapsed = time.perf_counter() - start
    return elapsed / steps, {k: v / steps for k, v in meter.counts().items()}


def fit_prices(points: list[tuple[float, dict]]) -> tuple[float, float]:
    """(mac_s, call_s) >= 0 by least squares over (seconds per step, counts per step) points."""
    import numpy as np
    from scipy.optimize import nnls

    a = np.array([[c["macs"], c["calls"]] for _, c in points], dtype=np.float64)
    b = np.array([s for s, _ in points], dtype=np.float64)
    scale = a.max(axis=0)  # columns of similar size for the solver
    scale[scale == 0] = 1.0
    solution, _ = nnls(a / scale, b)
    mac_s, call_s = solution / scale
    return float(mac_s), float(call_s)


def calibrate(make_model: Callable[[], nn.Module], input_shape: tuple[int, ...], num_classes: int,
              device: torch.device, sync: Callable[[], None], describe: str,
              batch_sizes: tuple[int, ...] = CALIBRATION_BATCHES, repeats: int = 3) -> CostModel:
    """Prices measured from training steps of `make_model()` at each batch size (the fastest of
    `repeats` timings each), fitted by least squares: the per-call price is what a step costs
    beyond its arithmetic."""
    generator = torch.Generator().manual_seed(0)
    points = []
    for size in batch_sizes:
        x = torch.randn(size, *input_shape, generator=generator).to(device)
        y = torch.randint(0, num_classes, (size,), generator=generator).to(device)
        model = make_model()
        timings = [time_training_steps(model, (x, y), sync) for _ in range(repeats)]
        # the fastest timing: whatever else runs on the machine only ever adds time
        points.append((min(t for t, _ in timings), timings[0][1]))
    mac_s, call_s = fit_prices(points)
    return CostModel(mac_s, call_s, describe)


def calibration_key(describe: str, model_spec: dict, input_shape: tuple[int, ...], num_classes: int) -> dict:
    """What a calibration depends on: the device (with its threads), the processor, torch, the
    network and its input."""
    return {"version": CALIBRATION_VERSION, "device": describe, "processor": processor(), "torch": torch.__version__,
            "model": model_spec, "input": list(input_shape), "classes": num_classes,
            "batches": list(CALIBRATION_BATCHES)}


def dumps(model: CostModel, key: dict) -> str:
    return json.dumps({"key": key, "prices": model.to_json()}, indent=1, sort_keys=True)
