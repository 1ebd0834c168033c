#!/usr/bin/env bash
# Tune selective forgetting and the competition's two winners with the same trial budget on one
# forget set (seed 0), then compare the tuned configurations, beside every other method at its
# defaults, on held-out forget sets (seeds 1 2 3).
#
#   bash experiments/tune_and_compare.sh                                  # digits, CPU (minutes)
#   EXPERIMENT=fmnist FRACTION=0.02 SAMPLES=32 bash experiments/tune_and_compare.sh   # the GPU setting
set -euo pipefail
EXPERIMENT=${EXPERIMENT:-digits}
FRACTION=${FRACTION:-0.1}
SAMPLES=${SAMPLES:-20}
OUT=${OUT:-runs/tune-and-compare-$EXPERIMENT-$FRACTION}
COMMON=(--experiment "$EXPERIMENT" --forget-fraction "$FRACTION" --forget-seed 0 --num-samples "$SAMPLES" --storage-path "$OUT")
python -m tune_unlearn.search --space default --name selective "${COMMON[@]}"
python -m tune_unlearn.search --method fanchuan --name fanchuan "${COMMON[@]}"
python -m tune_unlearn.search --method kookmin --name kookmin "${COMMON[@]}"
python -m tune_unlearn.compare --experiment "$EXPERIMENT" --forget-fraction "$FRACTION" --seeds 1 2 3 \
    --configs "$OUT"/selective/best_config.yaml "$OUT"/fanchuan/best_config.yaml "$OUT"/kookmin/best_config.yaml \
    --out "$OUT/compare"
