"""One unlearning run without Ray.

    python -m tune_unlearn run --experiment digits --method selective [--set lam=1e-7 ...]
                               [--config FILE.yaml] [--json PATH] [--save-model PATH]
    python -m tune_unlearn run --list

Trains (once, then cached) the original and the retrained reference, runs the method, and
prints one JSON object: method, experiment, hparams, metrics, reference, original, objective,
components (and the method's stats and per-epoch history). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .arguments import add_experiment_args, experiment_overrides, main_guard, parse_assignments, parse_weights, prog
from ..errors import UserError
from ..data.experiment import DEFAULT_EXPERIMENT, available_experiments, load_experiment
from ..files import atomic_write, default_cache_dir, log_stderr, write_json
from ..methods import get_method, method_names
from ..evaluation.objective import Weights
from ..run_config import load_run_config, resolve_run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog("run"), description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="list the experiments and the registered methods, then exit")
    p.add_argument("--method", help="registered method (default: selective, or the config's)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="set a hyperparameter (repeatable)")
    p.add_argument("--config", help="YAML with hyperparameters, or a run config such as a search's best_config.yaml")
    p.add_argument("--weight", action="append", default=[], metavar="NAME=VALUE",
                   help=f"objective weight ({', '.join(Weights.names())}; repeatable)")
    p.add_argument("--seed", type=int, help="seed of the unlearning run (default 0)")
    p.add_argument("--leakage", action="store_true",
                   help="also measure leakage: forget accuracy a Piggyback mask recovers (pl_forget_acc)")
    p.add_argument("--json", metavar="PATH", help="also write the JSON object to PATH")
    p.add_argument("--save-model", metavar="PATH", help="save the unlearned weights (a state dict) to PATH")
    add_experiment_args(p, default_experiment=None)
    return p


def listing() -> str:
    lines = ["experiments:"]
    for name in available_experiments():
        try:
            exp = load_experiment(name)
            lines.append(f"  {name:14s} {exp.description}")
        except UserError as exc:
            lines.append(f"  {name:14s} (invalid: {exc})")
    lines.append("methods (installed ones from their packages; any other as --method package.module:Class):")
    for name in method_names():
        try:
            method = get_method(name)
        except UserError as exc:  # an installed method that breaks the contract
            lines.append(f"  {name:14s} (invalid: {exc})")
            continue
        lines.append(f"  {name}")
        for h in method.hparams:
            searched = "searched" if h.searched else "fixed   "
            lines.append(f"    {h.name:16s} default {h.default!s:10s} {searched} {h.range_text():28s} {h.help}")
    return "\n".join(lines)


def replayed(cfg, args: argparse.Namespace) -> dict:
    """The config's replay block (a search's best_config.yaml) when the run repeats that trial
    as it is: nothing on the command line changes what it computes."""
    changed = (args.method, args.experiment, args.seed, args.original, args.set, args.weight,
               experiment_overrides(args), args.leakage)
    return cfg.replay if cfg and cfg.replay and not any(changed) else {}


def compare_with_search(replay: dict, objective: float, here: str) -> dict:
    """The run's objective against the trial's on the same request, said on stderr."""
    theirs = replay["objective"]
    same = abs(objective - theirs) <= 1e-9 * max(1.0, abs(theirs))
    where = f" on request {replay['request']}" if replay.get("request") else ""
    if same:
        log_stderr(f"replay: objective {objective:.6f}{where}, the search's trial gave the same")
    else:
        log_stderr(f"replay: objective {objective:.6f}{where}, the search's trial gave {theirs:.6f} (difference "
                   f"{objective - theirs:+.3g}); it ran on {replay.get('device')} with {replay.get('threads')} "
                   f"thread(s), this run on {here}: another device, processor or torch build changes the arithmetic")
    return {"request": replay.get("request"), "search_objective": theirs, "objective": objective, "same": same,
            "threads": replay.get("threads"), "device": here}


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        print(listing())
        return 0
    cfg = load_run_config(args.config) if args.config else None
    overrides = {**(cfg.experiment_overrides if cfg else {}), **experiment_overrides(args)}
    run = resolve_run(
        args.method or (cfg and cfg.method) or "selective",
        args.experiment or (cfg and cfg.experiment) or DEFAULT_EXPERIMENT,
        overrides,
        cfg.hparams if cfg else {},
        parse_assignments(args.set, "--set"),
        weights=parse_weights(args.weight, Weights().updated(cfg.weights if cfg else {}, args.config or "")),
        seed=args.seed if args.seed is not None else (cfg.seed if cfg and cfg.seed is not None else 0),
    )
    # Everything above validated the arguments without torch; now the work starts.
    import torch

    from ..cost import torch_threads
    from ..pipeline import prepare, run_method
    from ..runtime import make_runtime

    runtime = make_runtime(args.device)
    leakage = args.leakage or run.weights.leak > 0
    replay = replayed(cfg, args)
    threads = replay.get("threads") if not runtime.cuda else None
    prepared = prepare(run.experiment, runtime, args.cache_dir or default_cache_dir(), args.original, args.download,
                       leakage=leakage, threads=threads)
    with torch_threads(threads):  # the trial's threads: the same arithmetic, to the last digit
        log_stderr(f"running {run.method.name} on {run.experiment.name} ({runtime.describe()})")
        result = run_method(prepared, run.method, run.hparams, run.weights, run.seed, leakage=leakage)
        here = runtime.describe()
    out = result.to_json()
    if replay.get("objective") is not None:
        out["replay"] = compare_with_search(replay, result.objective, here)
    out["experiment_overrides"] = overrides
    out["cache"] = {role: {"status": prepared.refs.status[role], "path": prepared.refs.paths[role]}
                    for role in prepared.refs.status}
    if args.save_model:
        state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
        atomic_write(Path(args.save_model).resolve(), lambda tmp: torch.save(state, tmp))
        log_stderr(f"saved the unlearned weights to {args.save_model}")
    if args.json:
        write_json(args.json, out)
    json.dump(out, sys.stdout, indent=2, default=str)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
