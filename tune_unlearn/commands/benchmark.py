"""Every method tuned at the same budget, judged on the same held-out requests, in one leaderboard.

    tune-unlearn benchmark --experiment digits_mislabeled --methods all --trials 20
    tune-unlearn benchmark --experiment digits_backdoor --methods selective salun scrub --out runs/bench-backdoor
    tune-unlearn benchmark --methods all --side-by-side --address auto      # on a Ray cluster

For each method: one search (its declared space, --trials trials), whose held-out phase runs its
best configuration and its defaults on the held-out requests; then the best configurations per
example on the first held-out request (F and LiRA, --per-example N models per ensemble); then
the leaderboard (reporting/leaderboard.py).

Every option the benchmark does not define goes to each search unchanged (--experiment,
--exp-set, --requests, --holdout, --weight, --seed, --cpus-per-trial, --cache-dir, ...), so all
methods get the same tuning and held-out requests, objective, sampler seed and trial count. A
method whose own space would change the requests, the held-out requests or the weights is
refused before any work; pass --requests / --holdout / --weight to make them equal.

Writes in --out (default runs/benchmark-<experiment>): benchmark.json (what was asked), one
search folder per method (`tune-unlearn report <out>/<method>` draws it), per_example/, and
leaderboard.csv, leaderboard.md, leaderboard.html. Rerunning the same command resumes: a
finished search is not run again, an interrupted one resumes, per-example models are cached.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from ..errors import UserError
from ..files import atomic_write_text, log_stderr
from ..methods import get_method, method_names
from .arguments import main_guard, prog
from . import search as search_command

STATE_FILE = "benchmark.json"
MIN_PER_EXAMPLE = 6  # F needs 3 models per side (commands/per_example.py)
# Flags the benchmark sets for every search itself
OWN_SEARCH_FLAGS = ("method", "space", "num_samples", "name", "resume", "original")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog("benchmark"), description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Any other option is a search option (tune-unlearn search --help), given to "
                                       "every search alike.")
    p.add_argument("--methods", nargs="+", default=["all"],
                   help="methods to tune, or 'all': every registered method but retrain, which is the reference "
                        "(default: all)")
    p.add_argument("--trials", type=int, default=20, help="trials per method (default: 20)")
    p.add_argument("--per-example", type=int, default=12, metavar="N",
                   help="models per ensemble for F and LiRA on the first held-out request, N // 2 per side of F "
                        "(0: skip; default: 12, 6 per side)")
    p.add_argument("--out", help="the benchmark's folder (default: runs/benchmark-<experiment>)")
    p.add_argument("--side-by-side", action="store_true",
                   help="run the searches at once, one process each, on the Ray cluster of --address or $RAY_ADDRESS "
                        "(default: one after another)")
    return p


def run_name(method: str) -> str:
    """A search folder's name for a method (an outside method's module:Class made a file name)."""
    return method.replace(":", "-").replace("/", "-")


def choose_methods(asked: list[str]) -> list[str]:
    methods = [m for m in method_names() if m != "retrain"] if asked == ["all"] else asked
    for method in methods:
        get_method(method)  # an unknown name is refused here, in one line
    if len(set(methods)) != len(methods):
        raise UserError(f"--methods names a method twice: {' '.join(methods)}")
    return methods


def search_argv(method: str, trials: int, out: Path, passthrough: list[str]) -> list[str]:
    return [*passthrough, "--method", method, "--num-samples", str(trials), "--name", run_name(method),
            "--storage-path", str(out)]


def check_passthrough(passthrough: list[str]) -> argparse.Namespace:
    """The search options given to every search (argparse refuses unknown ones, status 2)."""
    args = search_command.build_parser().parse_args(passthrough)
    taken = [flag for flag in OWN_SEARCH_FLAGS if getattr(args, flag)]
    if args.storage_path != "runs":
        taken.append("storage_path")
    if taken:
        flag = "--" + taken[0].replace("_", "-")
        why = ("the per-example evaluation trains its own original models" if flag == "--original" else
               "the benchmark sets it for each search (use --methods, --trials, --out)")
        raise UserError(f"{flag}: {why}")
    return args


def with_common_settings(passthrough: list[str], args: argparse.Namespace, method: str, out: Path) -> list[str]:
    """The search options with the requests, the held-out requests and the objective made
    explicit, the same for every method: without them each method's own space could choose its
    own (selective's tunes on two requests, gc's weighs leakage instead of MIA). By default: the
    experiment's own request; held out, the search's default (the next two forget seeds or
    classes and another original model); the default objective with the user's --weight."""
    from ..data.requests import base_request, default_holdout
    from ..evaluation.objective import Weights
    from ..search.plan import make_plan
    from .arguments import parse_weights

    extra = []
    if not (args.requests and args.holdout is not None):
        probe = [*passthrough, *(["--holdout", "none"] if args.holdout is None else [])]
        plan = make_plan(search_command.parse_options(search_argv(method, 1, out, probe)))
        tuning = plan.requests if args.requests else [base_request(plan.experiment)]
        extra += [] if args.requests else ["--requests", *(r.spec for r in tuning)]
        if args.holdout is None:
            extra += ["--holdout", *(r.spec for r in default_holdout(tuning, plan.experiment))]
    weights = parse_weights(args.weight)
    for name in Weights.names():  # given after the user's, so that a space's own weights give way too
        extra += ["--weight", f"{name}={getattr(weights, name):g}"]
    return [*passthrough, *extra]


def plan_searches(methods: list[str], trials: int, out: Path, passthrough: list[str]) -> dict:
    """method -> the search's Plan, every one validated and all alike in what makes the
    comparison fair, before any work."""
    from ..search.plan import make_plan

    plans = {}
    for method in methods:
        options = search_command.parse_options(search_argv(method, trials, out, passthrough))
        options.check()
        plans[method] = make_plan(options)
    first_method, first = next(iter(plans.items()))
    if not first.holdout:
        raise UserError("--holdout none: a benchmark judges every method on held-out requests; name some, or leave the "
                        "default")

    def fairness(plan) -> dict:
        return {"experiment": plan.experiment.name, "tuning requests": [label for label, _ in plan.tuning_experiments()],
                "held-out requests": [r.label for r in plan.holdout], "weights": plan.weights,
                "aggregate": plan.aggregate}

    for method, plan in plans.items():
        for what, value in fairness(plan).items():
            if value != fairness(first)[what]:
                raise UserError(f"method {method!r}'s space gives other {what} ({value}) than {first_method!r}'s "
                                f"({fairness(first)[what]}); set them for all (--experiment, --aggregate)")
    return plans


def load_state(out: Path, passthrough: list[str], trials: int, per_example: int) -> dict:
    """benchmark.json: what this benchmark was started with; a rerun must ask the same."""
    path = out / STATE_FILE
    asked = {"search_args": passthrough, "trials": trials, "per_example": per_example}  # as the user typed them
    if not path.exists():
        return {**asked, "searched_s": {}}
    state = json.loads(path.read_text())
    for key, value in asked.items():
        if state.get(key) != value:
            raise UserError(f"{out} is a benchmark started with {key} {_as_typed(state.get(key))}, not "
                            f"{_as_typed(value)}; rerun it as it was started, or choose another --out")
    return state


def _as_typed(value) -> str:
    """A setting of benchmark.json as the command line showed it."""
    return (" ".join(value) or "(none)") if isinstance(value, list) else str(value)


def finished(run_dir: Path) -> bool:
    """A search that ran to its end (timings.json is its last file) with its held-out results."""
    from ..search.results import HOLDOUT_FILE, TIMINGS_FILE

    return (run_dir / TIMINGS_FILE).exists() and (run_dir / HOLDOUT_FILE).exists()


def run_one_after_another(todo: list[str], trials: int, out: Path, passthrough: list[str], state: dict) -> None:
    from ..search.driver import run_search

    for i, method in enumerate(todo, 1):
        log_stderr(f"benchmark: search {i}/{len(todo)}: {method}, {trials} trials")
        started = time.perf_counter()
        run_search(search_command.parse_options(search_argv(method, trials, out, passthrough)))
        state["searched_s"][method] = round(state["searched_s"].get(method, 0.0) + time.perf_counter() - started, 1)
        atomic_write_text(out / STATE_FILE, json.dumps(state, indent=1))


def run_side_by_side(todo: list[str], trials: int, out: Path, passthrough: list[str], args: argparse.Namespace,
                     state: dict) -> None:
    """One search process per method, all joining the cluster; logs in <out>/<method>.log."""
    from ..search.options import cluster_address

    if not cluster_address(args.address):
        raise UserError("--side-by-side runs the searches on a Ray cluster: give --address (or set RAY_ADDRESS); "
                        "on one machine, run them one after another")
    started, processes = time.perf_counter(), {}
    for method in todo:
        log = open(out / f"{run_name(method)}.log", "a")
        command = [sys.executable, "-m", "tune_unlearn.search", *search_argv(method, trials, out, passthrough)]
        processes[method] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log)
    log_stderr(f"benchmark: {len(todo)} searches side by side ({', '.join(todo)}); logs in {out}/<method>.log")
    failed = []
    for method, (process, log) in processes.items():
        if process.wait() != 0:
            failed.append(method)
        log.close()
        state["searched_s"][method] = round(time.perf_counter() - started, 1)
    atomic_write_text(out / STATE_FILE, json.dumps(state, indent=1))
    if failed:
        raise UserError(f"the searches of {', '.join(failed)} failed: see {out}/<method>.log; rerun to resume them")


def per_example_rows(plans: dict, records: dict, out: Path, n: int, args: argparse.Namespace) -> list[dict]:
    """F and LiRA of every method's best configuration (and the original's, retraining's) on the
    first held-out request; `records`: method -> its search's RunRecord."""
    from ..run_config import ResolvedRun
    from ..runtime import make_runtime
    from .per_example import run as per_example_run

    first = next(iter(plans.values()))
    label, exp = first.holdout_experiments()[0]
    runs = []
    for method, plan in plans.items():
        best = records[method].holdout_best()
        if best:
            runs.append((method, "tuned", ResolvedRun(exp, get_method(method), best["hparams"], plan.weights, 0)))
    log_stderr(f"benchmark: per example on held-out request {label}, {n} models per ensemble")
    folder = out / "per_example"
    folder.mkdir(exist_ok=True)
    return per_example_run(folder, runs, exp, make_runtime(args.device), first.cache_dir, n, args.download)


@main_guard
def main(argv: list[str] | None = None) -> int:
    args, passthrough = build_parser().parse_known_args(argv)
    if args.trials < 1:
        raise UserError(f"--trials must be >= 1, got {args.trials}")
    if args.per_example and args.per_example < MIN_PER_EXAMPLE:
        raise UserError(f"--per-example needs N >= {MIN_PER_EXAMPLE} models per ensemble, 3 per side of F (or 0 to skip), "
                        f"got {args.per_example}")
    search_args = check_passthrough(passthrough)
    methods = choose_methods(args.methods)
    out = Path(args.out or f"runs/benchmark-{Path(search_args.experiment or 'default').stem}").expanduser().resolve()
    state = load_state(out, passthrough, args.trials, args.per_example)
    passthrough = with_common_settings(passthrough, search_args, methods[0], out)
    plans = plan_searches(methods, args.trials, out, passthrough)
    out.mkdir(parents=True, exist_ok=True)
    state["methods"] = methods
    atomic_write_text(out / STATE_FILE, json.dumps(state, indent=1))
    todo = [m for m in methods if not finished(plans[m].run_dir)]
    if len(todo) < len(methods):
        log_stderr(f"benchmark: {len(methods) - len(todo)} searches already finished, not run again")
    if todo and args.side_by_side:
        run_side_by_side(todo, args.trials, out, passthrough, search_args, state)
    elif todo:
        run_one_after_another(todo, args.trials, out, passthrough, state)
    from ..search.results import load_run

    records = {method: load_run(plan.run_dir) for method, plan in plans.items()}
    rows = per_example_rows(plans, records, out, args.per_example, search_args) if args.per_example else []
    write_leaderboard(plans, list(records.values()), out, rows, args, state)
    return 0


def write_leaderboard(plans: dict, records: list, out: Path, per_example: list[dict], args: argparse.Namespace,
                      state: dict) -> None:
    from ..cost import processor
    from ..reporting import leaderboard

    first = next(iter(plans.values()))
    rows = leaderboard.leaderboard(records, per_example)
    title = f"Leaderboard: {first.experiment.name}, {len(plans)} methods, {args.trials} trials each"
    facts = [f"Tuning requests: {', '.join(label for label, _ in first.tuning_experiments())}; held-out "
             f"requests: {', '.join(r.label for r in first.holdout)}; forget rule: {first.experiment.forget.describe()}.",
             f"Machine: {processor()}. Search wall time per method (sessions that ended): "
             + ", ".join(f"{m} {s:.0f} s" for m, s in state.get("searched_s", {}).items()) + ".",
             f"Each search: {out}/<method>/ (tune-unlearn report {out}/<method> draws it)."]
    if args.per_example:
        facts.append(f"Per example: {args.per_example} models per ensemble ({args.per_example // 2} per side of F), on "
                     f"held-out request {first.holdout_experiments()[0][0]}; {out}/per_example/ holds the details.")
    paths = leaderboard.write(out, rows, title, facts)
    print((out / "leaderboard.md").read_text())
    print("leaderboard: " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    sys.exit(main())
