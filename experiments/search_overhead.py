"""What running a search through Ray Tune costs, against the same trials in a plain loop.

    python experiments/search_overhead.py                      # the default search, 3 rounds
    python experiments/search_overhead.py --rounds 1 --num-samples 8 -- --scheduler asha

The search runs on one request (forget seed 0) without held-out runs, which is what the loop
replays. Each round, on this machine, with the references already cached (trained here first if missing):
1. the search, as a user runs it: `python -m tune_unlearn.search --space default ...` in its own
   process (extra arguments after `--` go to it);
2. the same trials in a plain loop, in its own process: the configurations the search sampled,
   in its order, from one `prepare` of the same cached references, each scored with the
   same objective, in as many processes forked from it as the search ran trials at a time. No
   Ray, no Optuna (its sampling takes milliseconds a trial). Each trial runs with the search's
   configuration and seed on one thread, so its objective must equal the search's: the table
   says the largest difference.

Prints per round and as median (min-max) over rounds: both wall times (whole processes, Python's
start and imports included), their ratio, where the search's time goes (its `timings.json`:
start-up and imports, Ray, references, trials, export; how long after Tuner.fit the first
trial starts, i.e. the trial actors' start-up; the gap between two trials in one reused actor)
and the trials' own time in both (the sum of the trials' `trial_time_s`, and Tune's cost per
trial: what the trial phase took beyond the trials' own time, shared over the trials).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


_LOOP: dict = {}  # what the loop's worker processes inherit from it (fork)


def _loop_trial(config: dict) -> tuple[float, float]:
    from tune_unlearn.pipeline import run_method

    t0 = time.perf_counter()
    prepared, method, defaults, plan = (_LOOP[k] for k in ("prepared", "method", "defaults", "plan"))
    result = run_method(prepared, method, method.resolve(defaults, plan.space.fixed, config), plan.weights)
    return time.perf_counter() - t0, result.objective


def replay(run_dir: Path) -> dict:
    """The plain loop over the trials of the search in `run_dir` (a child process of main)."""
    started = time.perf_counter()
    import multiprocessing

    from tune_unlearn.methods import get_method
    from tune_unlearn.pipeline import prepare
    from tune_unlearn.runtime import limit_threads, make_runtime
    from tune_unlearn.search.plan import Plan
    from tune_unlearn.search.results import SEARCH_FILE, load_run

    imported = time.perf_counter()
    saved = json.loads((run_dir / SEARCH_FILE).read_text())
    plan = Plan.from_json(saved, run_dir)
    trials = sorted(load_run(run_dir).trials, key=lambda t: t.trial_id)
    limit_threads(plan.cpus_per_trial)  # before any work: the forked workers keep one intra-op thread each
    prepared = prepare(plan.experiment, make_runtime("cpu"), plan.cache_dir, plan.original, allow_training=False,
                       log=lambda message: None)
    prepared.model()  # the template, built once before the workers fork
    _LOOP.update(prepared=prepared, method=get_method(plan.method), plan=plan,
                 defaults=plan.experiment.method_defaults.get(plan.method, {}))
    ready = time.perf_counter()
    # Worker processes forked from this one (as many as the search ran at a time), each trial
    # handed to the next free one: the plain loop's equivalent of the search's trial actors,
    # without their imports and data loading.
    with multiprocessing.get_context("fork").Pool(saved["max_concurrent"]) as pool:
        done = pool.map(_loop_trial, [t.config for t in trials], chunksize=1)
    end = time.perf_counter()
    return {"imports_s": imported - started, "prepare_s": ready - imported, "trials_s": end - ready,
            "trial_sum_s": sum(d for d, _ in done), "trials": len(done),
            # the same configuration and seed in one thread: the same arithmetic as the trial's
            "objective_differences": [abs(o - t.result["objective"]) for (_, o), t in zip(done, trials)
                                      if "objective" in t.result]}


def timed(command: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode:
        sys.exit(f"{' '.join(command)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return wall, out.stdout


def actor_timeline(record, fit_started: float) -> tuple[float, list[float]]:
    """When the first trial started its work after Tuner.fit began (trial actors starting: a
    process, imports, Tune's set-up), and every gap between one trial's end and the next one's
    start in the same (reused) actor. A trial's end is when it wrote final_result.json, its start
    that minus its trial_time_s."""
    from tune_unlearn.search.trial_files import FINAL_RESULT

    by_actor: dict[int, list[tuple[float, float]]] = {}
    for t in record.finished:
        end = (Path(t.path) / FINAL_RESULT).stat().st_mtime
        by_actor.setdefault(t.result["pid"], []).append((end - t.result["trial_time_s"], end))
    spans = [sorted(v) for v in by_actor.values()]
    gaps = [b[0] - a[1] for v in spans for a, b in zip(v, v[1:])]
    return min(v[0][0] for v in spans) - fit_started, gaps or [0.0]


def one_round(args, extra: list[str], storage: Path, i: int) -> dict:
    from tune_unlearn.search.results import TIMINGS_FILE, load_run

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    name = f"overhead-{i}"
    search = [sys.executable, "-m", "tune_unlearn.search", "--space", args.space, "--storage-path", str(storage),
              "--name", name, *(["--num-samples", str(args.num_samples)] if args.num_samples else []),
              *(["--cache-dir", args.cache_dir] if args.cache_dir else []), *extra]
    search_wall, _ = timed(search, env)
    run_dir = storage / name
    timings = json.loads((run_dir / TIMINGS_FILE).read_text())
    phases = timings["wall_s"]
    record = load_run(run_dir)
    trial_times = [t.result["trial_time_s"] for t in record.trials if "trial_time_s" in t.result]
    first_start, gaps = actor_timeline(record, timings["ended_at"]["tuner"])
    concurrent = json.loads((run_dir / "search.json").read_text())["max_concurrent"]
    loop_wall, out = timed([sys.executable, __file__, "--replay", str(run_dir)], env)
    loop = json.loads(out.strip().splitlines()[-1])
    n = len(trial_times)
    return {
        "tune wall s": search_wall, "loop wall s": loop_wall, "ratio": search_wall / loop_wall,
        "tune start-up+imports s": search_wall - sum(phases.values()), "tune plan s": phases["plan"],
        "tune ray start s": phases["ray_start"], "tune references s": phases["references"],
        "tune tuner s": phases["tuner"], "tune trials s": phases["trials"],
        "tune driver CPU during trials s": timings["driver_cpu_s"]["trials"],
        "tune first trial starts after s": first_start, "tune gap between trials on an actor s": statistics.fmean(gaps),
        "tune export+summary s": phases["export"] + phases["summary"], "tune ray stop s": phases["ray_stop"],
        "loop prepare s": loop["imports_s"] + loop["prepare_s"], "loop trials s": loop["trials_s"],
        "tune sum of trials s": sum(trial_times), "loop sum of trials s": loop["trial_sum_s"],
        # what the trial phase took beyond its trials' own time (at `concurrent` at a time), per trial
        "tune cost per trial s": (concurrent * phases["trials"] - sum(trial_times)) / max(n, 1),
        "trials": n, "at a time": concurrent,
        "largest objective difference": max(loop["objective_differences"], default=0.0),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="default")
    p.add_argument("--num-samples", type=int, help="trials (default: the space's)")
    p.add_argument("--rounds", type=int, default=3, help="search + loop pairs to run (default: 3)")
    p.add_argument("--cache-dir", help="references cache (default: the usual one)")
    p.add_argument("--replay", help=argparse.SUPPRESS)  # the loop's own process
    args, extra = p.parse_known_args()
    # One request and no held-out runs (the loop replays the trials of one request): the search's
    # throughput, as measured before searches had requests.
    extra = ["--requests", "seed=0", "--holdout", "none", *(a for a in extra if a != "--")]
    if args.replay:
        print(json.dumps(replay(Path(args.replay))))
        return
    from tune_unlearn.pipeline import prepare
    from tune_unlearn.runtime import make_runtime
    from tune_unlearn.commands.search import parse_options
    from tune_unlearn.search.plan import make_plan

    cache = ["--cache-dir", args.cache_dir] if args.cache_dir else []
    plan = make_plan(parse_options(["--space", args.space, *cache, *extra]))
    prepare(plan.experiment, make_runtime("cpu"), plan.cache_dir, plan.original)  # warm references: trained once if missing
    import torch

    print(f"machine: {make_runtime('cpu').describe()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}")
    print(f"search: python -m tune_unlearn.search --space {args.space} {' '.join(extra)}".rstrip())
    storage = Path(tempfile.mkdtemp(prefix="search-overhead-"))
    rows = []
    try:
        for i in range(args.rounds):
            rows.append(one_round(args, extra, storage, i))
            print(f"round {i + 1}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                                  for k, v in rows[-1].items()), flush=True)
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    print(f"\n| measure | median ({len(rows)} rounds) | min | max |\n|---|---|---|---|")
    for key in rows[0]:
        values = [r[key] for r in rows]
        print(f"| {key} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")


if __name__ == "__main__":
    main()
