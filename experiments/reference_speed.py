"""How long one reference model of the default experiment takes to train, with the recipe and
memory format of today's code against the earlier ones (40 epochs, NCHW tensors), side by side
in one process, alternating, on one thread (as the search's reference tasks train on two cores).

    python experiments/reference_speed.py --rounds 3

Prints, per form, the median and range of the seconds per model over the rounds, their ratio
pair by pair, and what the original memorised: its accuracy on the forget set against the wrong
labels it was trained on (100: every wrong label learnt, what the benchmark needs).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch


class Contiguous:
    """A part whose batches come in the default (NCHW) memory format."""

    def __init__(self, part):
        self.part = part

    def __len__(self) -> int:
        return len(self.part)

    def batches(self, *args, **kwargs):
        for x, y in self.part.batches(*args, **kwargs):
            yield x.contiguous(), y


def train_once(exp, data, runtime, channels_last: bool) -> tuple[float, float]:
    """(seconds, forget accuracy on the trained labels) of the original model of `exp`."""
    from tune_unlearn.evaluation.references import network
    from tune_unlearn.runtime import seed_everything
    from tune_unlearn.training import predict, train_recipe

    seed_everything(exp.train.seed)
    model = network(exp, data).to(runtime.device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    parts = {name: part if channels_last else Contiguous(part) for name, part in
             (("train", data.train), ("forget", data.forget))}
    started = time.perf_counter()
    train_recipe(model, parts["train"], exp.train, runtime)
    seconds = time.perf_counter() - started
    logits, labels = predict(model, parts["forget"], runtime, exp.eval.batch_size)
    return seconds, 100.0 * (logits.argmax(1) == labels).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", default="digits_mislabeled")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from tune_unlearn.data.experiment import load_experiment
    from tune_unlearn.data.load import load_data
    from tune_unlearn.runtime import make_runtime

    runtime = make_runtime("cpu")
    now = load_experiment(args.experiment)
    before = replace(now, train=replace(now.train, epochs=40))
    data = load_data(now, runtime.device)
    forms = {"before (40 epochs, NCHW)": (before, False), f"now ({now.train.epochs} epochs, channels_last)": (now, True)}
    times = {name: [] for name in forms}
    memorised = {name: [] for name in forms}
    for _ in range(args.rounds):
        for name, (exp, channels_last) in forms.items():
            seconds, forget_acc = train_once(exp, data, runtime, channels_last)
            times[name].append(seconds)
            memorised[name].append(forget_acc)
    print(f"{args.experiment}, original model, {args.threads} thread(s), {args.rounds} rounds, {torch.__version__}")
    for name in forms:
        t = times[name]
        print(f"  {name}: {statistics.median(t):.2f} s per model (min {min(t):.2f}, max {max(t):.2f}); "
              f"forget accuracy on the trained labels {statistics.fmean(memorised[name]):.1f}%")
    a, b = times.values()
    ratios = [x / y for x, y in zip(a, b)]
    print(f"  speed-up, pair by pair: median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
