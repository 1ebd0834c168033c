#!/usr/bin/env bash
# The GPU issue's measurements on a lent GPU machine (offline, Python 3.12 with torch but no Ray,
# Optuna or data; at most 64 MiB per transfer; ~15 minutes of device time in all, start-up
# included), in two calls on one warm machine:
#
#   bash experiments/gpu_suite.sh pack        # here, after ../shared/gpu/prepare.sh: repack .gpu-a/.gpu-b
#   bash experiments/gpu_suite.sh a           # device call 1, carrying .gpu-a: no Ray needed
#   bash experiments/gpu_suite.sh b           # device call 2, carrying .gpu-b, at once after call 1
#
# `pack` moves the data set into .gpu-a and Ray's wheel tail and the other wheels into .gpu-b,
# so that call 1 already measures (throughput, the paper's setting, every method on CUDA)
# while call 2 stages Ray and Optuna and runs the searches (GPU shares, a forced out-of-memory
# trial) and the corrective recipes. Each part writes logs and JSON under $OUT, runs its steps
# in order of value, skips a step that no longer fits and stops itself $SUITE_SECONDS after it
# started (default 480). The references are cached in /tmp/tu-cache, which call 2 reuses
# while the machine stays warm. experiments/results/gpu-*.json is assembled from $OUT here.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-out}
SUITE_SECONDS=${SUITE_SECONDS:-480}
START=$(date +%s)
DATA=/tmp/gpu/fashion-mnist
export TUNE_UNLEARN_CACHE=/tmp/tu-cache PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
mkdir -p "$OUT" /tmp/gpu "$DATA"

left() { echo $((START + SUITE_SECONDS - $(date +%s))); }

# step NAME NEEDED_SECONDS COMMAND...: run COMMAND with what is left of the time, its output in
# $OUT/NAME.log; skip it when less than NEEDED_SECONDS are left.
step() {
  local name=$1 needed=$2; shift 2
  local budget; budget=$(left)
  if [ "$budget" -lt "$needed" ]; then echo "skip $name: ${budget}s left, needs ${needed}s" | tee -a "$OUT/suite.log"; return; fi
  local t0; t0=$(date +%s)
  timeout --signal=INT --kill-after=15 "$budget" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc in $(( $(date +%s) - t0 ))s" | tee -a "$OUT/suite.log"
  tail -n 8 "$OUT/$name.log"
}

case "${1:-}" in
pack)
  [ -f .gpu-a/ray.part-aa ] && [ -f .gpu-b/ray.part-ab ] || { echo "run ../shared/gpu/prepare.sh first" >&2; exit 1; }
  cat .gpu-a/ray.part-aa .gpu-b/ray.part-ab > /tmp/ray.whl && rm .gpu-a/ray.part-aa .gpu-b/ray.part-ab
  split -b 30000000 /tmp/ray.whl /tmp/ray.part- && rm /tmp/ray.whl
  mv /tmp/ray.part-aa .gpu-a/ && mv /tmp/ray.part-a? .gpu-b/
  mv .gpu-b/train-* .gpu-a/ && mv .gpu-a/*.whl .gpu-b/
  mkdir -p .gpu-a/fallback
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .gpu-a/fallback pyyaml tqdm
  du -sh .gpu-a .gpu-b ;;
a)
  cp .gpu-a/t10k-* .gpu-a/train-* "$DATA"/ && cp .gpu-a/ray.part-aa /tmp/gpu/
  # PyYAML and tqdm only where the machine lacks them (the tune_unlearn imports need both)
  python3 -c "import yaml, tqdm" 2>/dev/null ||
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu-a/fallback/*.whl
  { nvidia-smi -L; python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"; nproc; } > "$OUT/env.txt" 2>&1
  cat "$OUT/env.txt"
  fm=(--experiment fmnist --forget-fraction 0.02 --data-dir "$DATA")
  # The first GPU session (docs/results-gpu.md) measured the paper's setting and reached 5 of the
  # methods; the methods come first now.
  # 1 every registered method once on CUDA (trains the paper setting's references first)
  step methods 200 python3 experiments/gpu_methods.py "${fm[@]}" --json "$OUT/methods.json"
  # 2 the paper's setting (2% random forget set): training throughput, the references timed, selective's time and cost against retraining
  step bench_fmnist2 60 python3 experiments/bench_trial.py "${fm[@]}" --repeats 3 --train-epochs 3 --json "$OUT/bench_fmnist2.json"
  # 3 the corrective recipe's references (continued in part b if cut: each finished model is cached)
  step sep_mislabeled 60 python3 experiments/recipe_separation.py --experiment fmnist_mislabeled --data-dir "$DATA" --json "$OUT/sep_mislabeled.json"
  ;;
b)
  [ -f /tmp/gpu/ray.part-aa ] || { echo "part a is gone: the machine was released between the calls" | tee "$OUT/suite.log"; exit 1; }
  cat /tmp/gpu/ray.part-aa .gpu-b/ray.part-a? > "/tmp/gpu/$(cat .gpu-b/ray.name)"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/gpu/*.whl .gpu-b/*.whl
  python3 -c "import ray, optuna; print('ray', ray.__version__, 'optuna', optuna.__version__)" | tee -a "$OUT/env.txt"
  fm=(--experiment fmnist --forget-fraction 0.02 --data-dir "$DATA")
  # 4 the corrective recipes (not yet measured): separation, then selective at its defaults on the mislabeled one
  step sep_mislabeled_b 60 python3 experiments/recipe_separation.py --experiment fmnist_mislabeled --data-dir "$DATA" --json "$OUT/sep_mislabeled.json"
  step bench_mislabeled 40 python3 experiments/bench_trial.py --experiment fmnist_mislabeled --data-dir "$DATA" --repeats 1 --train-epochs 0 --json "$OUT/bench_mislabeled.json"
  step sep_backdoor 100 python3 experiments/recipe_separation.py --experiment fmnist_backdoor --data-dir "$DATA" --json "$OUT/sep_backdoor.json"
  # 5 whole GPUs against quarter GPUs on the same 8 trials of the paper's space
  step fractional 120 python3 experiments/fractional_gpus.py --json "$OUT/fractional.json" -- \
    --space paper_2pct --num-samples 8 --data-dir "$DATA"
  # 6 a trial that runs out of GPU memory fails with its reason; the others finish
  step oom 60 python3 -m tune_unlearn.search --method experiments.gpu_memory_hog:MemoryHog "${fm[@]}" \
    --sampler random --seed 0 --num-samples 4 --holdout none --storage-path /tmp/gpu-runs --name oom
  python3 - "$OUT/oom.json" <<'EOF' 2>&1 | tee -a "$OUT/suite.log"
import sys
from tune_unlearn.files import write_json
from tune_unlearn.search.results import load_run
try:
    trials = load_run("/tmp/gpu-runs/oom").trials
except Exception as exc:
    sys.exit(f"oom run unreadable: {exc}")
rows = [{"hog_gib": t.config.get("hog_gib"), "status": t.status, "error": t.error,
         "objective": t.result.get("objective")} for t in trials]
write_json(sys.argv[1], rows)
print(*rows, sep="\n")
EOF
  ;;
*) echo "usage: gpu_suite.sh pack|a|b" >&2; exit 2 ;;
esac
echo "part ${1} done in $(( $(date +%s) - START ))s" | tee -a "$OUT/suite.log"
