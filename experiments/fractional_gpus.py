"""Trials per hour with a whole GPU per trial against GPU shares, on the same trials.

    python experiments/fractional_gpus.py --json fractional.json -- --space paper_2pct --num-samples 8
    python experiments/fractional_gpus.py --shares 1 0.5 0.25 -- --space paper_2pct --num-samples 8

Runs the search once per `--shares` value (`--gpus-per-trial`), each from the same cached
references, with a random sampler of the same seed (the same configurations in the same
order) and no held-out runs; anything after `--` goes to every search. Per share it prints and
writes: trials, trials at a time, the trial phase's wall time (timings.json: Tuner.fit, from
the trial actors' start to the last result), trials per hour over it, and Ray's overhead share:
the part of the trial slots' time (trials at a time x trial phase) not spent inside a trial
function (the trials' own `trial_time_s`), i.e. actor start-up, scheduling and reporting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tune_unlearn.files import write_json  # noqa: E402
from search_overhead import timed  # noqa: E402  (beside this script: runs and times one search)
from tune_unlearn.search.results import TIMINGS_FILE, load_run  # noqa: E402


def one_search(share: float, extra: list[str], storage: Path) -> dict:
    name = f"gpus-{share:g}"
    command = [sys.executable, "-m", "tune_unlearn.search", "--gpus-per-trial", f"{share:g}", "--sampler", "random",
               "--seed", "0", "--holdout", "none", "--storage-path", str(storage), "--name", name, *extra]
    wall, _ = timed(command, dict(os.environ))
    run_dir = storage / name
    phases = json.loads((run_dir / TIMINGS_FILE).read_text())["wall_s"]
    record = load_run(run_dir)
    own = [t.result["trial_time_s"] for t in record.trials if "trial_time_s" in t.result]
    at_a_time = json.loads((run_dir / "search.json").read_text())["max_concurrent"]
    trials_s = phases["trials"]
    return {"gpus_per_trial": share, "trials": len(own), "at_a_time": at_a_time, "search_wall_s": wall,
            "trials_phase_s": trials_s, "trials_per_hour": 3600 * len(own) / trials_s,
            "mean_trial_s": sum(own) / max(len(own), 1),
            "ray_overhead_share": 1 - sum(own) / (min(at_a_time, len(own)) * trials_s),
            "configs": [t.config for t in sorted(record.trials, key=lambda t: t.trial_id)]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shares", type=float, nargs="+", default=[1.0, 0.25], help="GPU shares to compare (default 1 0.25)")
    p.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    args, extra = p.parse_known_args()
    extra = [a for a in extra if a != "--"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="fractional-") as storage:
        for share in args.shares:
            rows.append(one_search(share, extra, Path(storage)))
            r = rows[-1]
            print(f"--gpus-per-trial {share:g}: {r['trials']} trials, {r['at_a_time']} at a time, trial phase "
                  f"{r['trials_phase_s']:.1f} s, {r['trials_per_hour']:.0f} trials/h, mean trial {r['mean_trial_s']:.1f} s, "
                  f"Ray overhead {100 * r['ray_overhead_share']:.0f}%", flush=True)
            if args.json:
                write_json(args.json, {"search": extra, "runs": rows})
    def as_set(configs: list[dict]) -> list[str]:  # trial ids are random: compare the configurations, not their order
        return sorted(json.dumps(c, sort_keys=True) for c in configs)

    same = all(as_set(r["configs"]) == as_set(rows[0]["configs"]) for r in rows)
    print(f"same configurations in every search: {same}")
    if len(rows) > 1:
        print(f"speed-up of --gpus-per-trial {rows[-1]['gpus_per_trial']:g} over {rows[0]['gpus_per_trial']:g}: "
              f"{rows[-1]['trials_per_hour'] / rows[0]['trials_per_hour']:.2f}x")
    if args.json:
        write_json(args.json, {"search": extra, "runs": rows, "same_configs": same})


if __name__ == "__main__":
    main()
