"""Command-line pieces the commands share: experiment options, KEY=VALUE lists, the usage
line's name, and the error wrapper. Argparse is imported under commands/ only."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from ..config import parse_scalar
from ..errors import Diverged, UserError
from ..data.experiment import DEFAULT_EXPERIMENT
from ..evaluation.objective import Weights


# How the running command is called in usage lines: what tune_unlearn/__main__.py was started
# as (`tune-unlearn run`, `python -m tune_unlearn run`), which sets it; unset, the search is
# `python -m tune_unlearn.search` (search/__main__.py) and the others `tune-unlearn <command>`.
PROG: str | None = None


def prog(command: str) -> str:
    return PROG or ("python -m tune_unlearn.search" if command == "search" else f"tune-unlearn {command}")


def add_experiment_args(parser: argparse.ArgumentParser, default_experiment: str | None = DEFAULT_EXPERIMENT) -> None:
    g = parser.add_argument_group("experiment")
    g.add_argument("--experiment", default=default_experiment,
                   help="experiment name (a YAML file in experiments/) or path (default: %(default)s)")
    g.add_argument("--data-dir", help="where the data set lives (overrides the experiment's dataset.root)")
    g.add_argument("--download", action="store_true", help="download the data set if missing (cifar10/100, fmnist)")
    g.add_argument("--forget-fraction", type=float, help="forget a random fraction of D (the paper: 0.02, 0.04)")
    g.add_argument("--forget-classes", type=int, nargs="+", metavar="C", help="forget every sample of these classes")
    g.add_argument("--forget-seed", type=int, help="seed of the forget-set choice")
    g.add_argument("--retrained-models", type=int, metavar="K",
                   help="how many retrained models (training seeds) make the target (default: the experiment's, 3)")
    g.add_argument("--exp-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any experiment setting, e.g. train.epochs=5 (repeatable)")
    g.add_argument("--cache-dir", help="where cached models live (default: $TUNE_UNLEARN_CACHE or ~/.cache/tune_unlearn)")
    g.add_argument("--original", metavar="CKPT", help="use this trained checkpoint as the original model")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


def experiment_overrides(args: argparse.Namespace) -> dict:
    """The experiment overrides the flags ask for, as dotted keys (what configs record)."""
    overrides = parse_assignments(args.exp_set, "--exp-set")
    if args.data_dir:
        overrides["dataset.root"] = str(Path(args.data_dir).expanduser().resolve())
    if args.forget_fraction is not None:
        overrides["forget.fraction"] = args.forget_fraction
    if args.forget_classes:
        overrides["forget.classes"] = list(args.forget_classes)
    if args.forget_seed is not None:
        overrides["forget.seed"] = args.forget_seed
    if args.retrained_models is not None:
        overrides["retrained_models"] = args.retrained_models
    return overrides


def parse_assignments(items: list[str], flag: str) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{flag} takes KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_scalar(value.strip())
    return out


def parse_weights(items: list[str], base: Weights | None = None) -> Weights:
    """--weight NAME=VALUE on top of `base` (default weights)."""
    return (base or Weights()).updated(parse_assignments(items, "--weight"), "--weight")


def main_guard(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Turn UserError into one line on stderr and exit status 2; divergence into status 1."""

    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except Diverged as exc:
            print(f"error: the run diverged: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapped
