"""How long a user waits for the default search from nothing: `python -m tune_unlearn.search
--space default` with an empty cache, run `--runs` times one after another, each as its own
process in a fresh temporary folder.

    python experiments/cold_search.py --runs 3

Prints each run's wall time and the median and range of the whole process and of each phase the
search records (timings.json: references, trials, held-out runs, ...), then each run's best
trial and its held-out objective beside the retrained models'.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} s ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--space", default="default")
    args = p.parse_args()
    walls, phases, best = [], {}, []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "TUNE_UNLEARN_CACHE": str(Path(tmp) / "cache")}
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "tune_unlearn.search", "--space", args.space,
                                   "--storage-path", str(Path(tmp) / "runs"), "--name", "cold"],
                                  cwd=tmp, env=env, capture_output=True, text=True)
            walls.append(time.perf_counter() - started)
            if done.returncode != 0:
                sys.exit(f"run {i + 1} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            run = Path(tmp) / "runs" / "cold"
            for name, seconds in json.loads((run / "timings.json").read_text())["wall_s"].items():
                phases.setdefault(name, []).append(seconds)
            holdout = json.loads((run / "holdout.json").read_text())
            top = next(c for c in holdout["configs"] if c.get("rank") == 1)
            retrained = [v for b in holdout["baselines"].values() for v in b["retrained"]]
            best.append((top["trial_id"], top["tuning"]["objective"], top["holdout_objective"],
                         statistics.fmean(retrained), statistics.stdev(retrained)))
        print(f"run {i + 1}: {walls[-1]:.1f} s", flush=True)
    print(f"\n{args.space} search from an empty cache, {args.runs} runs: whole process {spread(walls)}")
    for name, values in phases.items():
        print(f"  {name}: {spread(values)}")
    for trial, tuning, held, mean, sd in best:
        print(f"  best {trial}: tuning {tuning:.3f}, held-out {held:.3f} (retrained {mean:.3f} ± {sd:.3f})")


if __name__ == "__main__":
    main()
