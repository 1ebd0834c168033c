"""Why a search trains the references of several requests in parallel processes of one thread
each rather than one after the other on every thread: the two, timed.

    python experiments/parallel_references.py --parallel     # two requests at once, one thread each
    python experiments/parallel_references.py                # the same two, one after the other, all threads

Each request (forget seeds 100 and 101 of digits_mislabeled, so nothing comes from the usual
cache) trains its original and `--retrained` retrained models into a fresh temporary cache, as
the search's reference tasks do. Time the two forms as whole processes (e.g. /usr/bin/time).
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time


def train(seed: int, threads: int, retrained: int, cache: str) -> float:
    import torch

    torch.set_num_threads(threads)
    from tune_unlearn.data.experiment import load_experiment
    from tune_unlearn.pipeline import prepare
    from tune_unlearn.runtime import make_runtime

    exp = load_experiment("digits_mislabeled", {"forget.seed": 100 + seed, "retrained_models": retrained})
    started = time.perf_counter()
    prepare(exp, make_runtime("cpu"), cache, log=lambda message: None)
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parallel", action="store_true", help="one process per request, one thread each")
    p.add_argument("--retrained", type=int, default=1, help="retrained models per request (default 1)")
    args = p.parse_args()
    threads = multiprocessing.cpu_count()
    with tempfile.TemporaryDirectory() as cache:
        if args.parallel:
            with multiprocessing.get_context("spawn").Pool(2) as pool:
                times = pool.starmap(train, [(seed, 1, args.retrained, cache) for seed in (0, 1)])
        else:
            times = [train(seed, threads, args.retrained, cache) for seed in (0, 1)]
    form = "in parallel, 1 thread each" if args.parallel else f"one after the other, {threads} threads"
    print(f"2 requests x {1 + args.retrained} models {form}: " + ", ".join(f"{t:.1f} s" for t in times))


if __name__ == "__main__":
    main()
