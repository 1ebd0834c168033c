"""Training the reference models: the original (the recipe on D, or by transfer) and the
retrained ones (the recipe on D_r), timed and counted, with a forecast of the time they take."""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass, replace
from typing import Callable

import torch

from ...cost import CostMeter
from ...data.experiment import Experiment
from ...data.load import ExperimentData
from ...files import log_stderr
from ...progress_bar import Progress
from ...runtime import Runtime, Stopwatch, seed_everything
from ...training import batch_count, train_recipe


@dataclass
class Forecast:
    """What a preparation will train: said as its first model starts (`announce`), then the
    time of all `untrained` models forecast from that model's first two epochs."""

    untrained: int = 0
    announce: str = ""
    epochs_seen: int = 0
    first_epoch_s: float = 0.0


def network(exp: Experiment, data: ExperimentData, device: str | None = None) -> torch.nn.Module:
    """A fresh network of the experiment, for every caller that builds one (references, runs),
    its tensors made on `device` (default: torch's). torchvision is imported here, about 2 s, so
    that loading cached references, as the search's own process does, never imports it."""
    from ...network.resnet import build_model  # before the device is on: tensors made on import stay real

    with torch.device(device) if device else contextlib.nullcontext():
        return build_model(exp.model, data.num_classes, data.in_channels)


def empty_network(exp: Experiment, data: ExperimentData, runtime: Runtime) -> torch.nn.Module:
    """A network of the experiment on the device with its weights left uninitialised, for a
    caller that loads a state into it at once. Built on the meta device: torchvision initialises
    a full-width ResNet-18 (narrow ones are made from it), about 0.1 s of a CPU per network, and
    that would also draw from the global random state for nothing."""
    return runtime.prepare(network(exp, data, device="meta").to_empty(device=runtime.device))


def loaded(exp: Experiment, data: ExperimentData, runtime: Runtime, state: dict) -> torch.nn.Module:
    """A network of the experiment on the device, holding `state` (a cached model, to evaluate)."""
    model = empty_network(exp, data, runtime)
    model.load_state_dict(state)
    return model


def training_stages(exp: Experiment, data: ExperimentData, role: str) -> list[tuple[str, object, object]]:
    """(what, data part, recipe) of each stage that trains the original or a retrained model."""
    recipe = exp.train
    if role == "retrain":
        return [("", data.retain, recipe)]
    if recipe.original == "transfer":
        return [(" (source task: forget classes)", data.forget, recipe),
                (" (transfer to the target task)", data.retain,
                 replace(recipe, epochs=recipe.transfer_epochs, lr=recipe.transfer_lr))]
    return [("", data.train, recipe)]


def work_per_image_and_step(exp: Experiment, data: ExperimentData, runtime: Runtime) -> tuple[float, int]:
    """(training MACs per image, layer calls per step) of the experiment's network, as
    cost.CostMeter counts them, from one forward pass of a network on two images (its weights
    do not matter: the counts are shapes): a step's MACs grow with its batch, its layer calls do not."""
    model = empty_network(exp, data, runtime).train()
    images = next(iter(data.train.batches(2)))[0]
    with CostMeter().counting() as meter:
        model(images)
    return meter.macs / len(images), meter.calls


def training_counts(exp: Experiment, data: ExperimentData, role: str, work: tuple[float, int]) -> dict:
    """The work (MACs, layer calls, steps) that training the original or a retrained model will
    count, from its network's `work` per image and per step (work_per_image_and_step)."""
    stages = training_stages(exp, data, role)
    steps = sum(stage.epochs * batch_count(len(part), stage.batch_size) for _, part, stage in stages)
    images = sum(stage.epochs * len(part) for _, part, stage in stages)
    return {"macs": work[0] * images, "calls": work[1] * steps, "steps": steps}


def train_reference(exp: Experiment, data: ExperimentData, runtime: Runtime, role: str,
                    log: Callable[[str], None] = log_stderr, forecast: Forecast | None = None) -> tuple[dict, dict]:
    """The original (joint: the recipe on D; transfer: the recipe on D_f, then a shorter
    recipe on D_r) or the retrained reference (the recipe on D_r)."""
    recipe = exp.train
    stages = training_stages(exp, data, role)
    forecast = forecast or Forecast()
    if forecast.announce:
        log(forecast.announce)
        forecast.announce = ""
    seed_everything(recipe.seed)
    model = runtime.prepare(network(exp, data))
    clock = Stopwatch(runtime).start()
    images = 0
    for what, part, stage in stages:
        log(f"training the {role} model (seed {recipe.seed}){what}: {stage.epochs} epochs on {len(part)} samples ({runtime.describe()})")
        # A bar on a terminal, else a line every fifth of the epochs (through log)
        with Progress(f"{role} (seed {recipe.seed})", stage.epochs, "epoch",
                      log=None if log is log_stderr else log) as bar:
            def on_epoch(epoch: int, logs: dict) -> None:
                bar.update(text=f"loss {logs['loss']:.4f}")
                if not forecast.untrained:
                    return
                # A forecast from this preparation's second epoch: the first also pays for CUDA's
                # and cuDNN's warm-up, several epochs' worth on a GPU (docs/results-gpu.md).
                total = sum(s.epochs for _, _, s in stages)
                forecast.epochs_seen += 1
                if forecast.epochs_seen == 1:
                    forecast.first_epoch_s = clock.elapsed
                if forecast.epochs_seen == 2 or total == 1:
                    per_model = forecast.first_epoch_s + (clock.elapsed - forecast.first_epoch_s) * (total - 1)
                    log(f"first epochs in {clock.elapsed:.2f} s: about {per_model:.0f} s per model, "
                        f"{per_model * forecast.untrained:.0f} s for the {forecast.untrained} model(s) to train here")
                    forecast.untrained = 0

            train_recipe(model, part, stage, runtime, on_epoch=on_epoch)
        images += stage.epochs * len(part)
    seconds = clock.stop()
    counts = clock.counts()
    meta = {"role": role, "experiment": exp.name, "train_time_s": seconds, "train_macs": counts["macs"],
            "train_calls": counts["calls"], "train_steps": counts["steps"],
            "seed": recipe.seed, "device": runtime.describe(),
            "host": socket.gethostname(), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "train_images_per_s": images / seconds}
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return state, meta
