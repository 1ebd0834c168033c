#!/usr/bin/env bash
# Tune selective forgetting and the competition's two winners with the same trial budget on one
# forget set (seed 0), then compare the tuned configurations, beside every other method at its
# defaults, on held-out seeds (1 2 3). Searches score on the validation split; the comparison
# reports the test split.
#
#   bash experiments/tune_and_compare.sh                                   # digits_class, CPU (minutes)
#   EXPERIMENT=digits FRACTION=0.1 bash experiments/tune_and_compare.sh    # random 10% of digits
#   EXPERIMENT=fmnist FRACTION=0.02 SAMPLES=32 bash experiments/tune_and_compare.sh   # the GPU setting
#
# With a random forget set (FRACTION), the seed chooses the forget set, so seeds 1 2 3 are
# forget sets the searches never saw; with whole classes forgotten it seeds the runs only.
set -euo pipefail
EXPERIMENT=${EXPERIMENT:-digits_class}
FRACTION=${FRACTION:-}
SAMPLES=${SAMPLES:-20}
OUT=${OUT:-runs/tune-and-compare-$EXPERIMENT${FRACTION:+-$FRACTION}}
FORGET=(--experiment "$EXPERIMENT" ${FRACTION:+--forget-fraction "$FRACTION"})
COMMON=("${FORGET[@]}" --forget-seed 0 --num-samples "$SAMPLES" --storage-path "$OUT")
python -m tune_unlearn.search --space default --name selective "${COMMON[@]}"
python -m tune_unlearn.search --method fanchuan --name fanchuan "${COMMON[@]}"
python -m tune_unlearn.search --method kookmin --name kookmin "${COMMON[@]}"
python -m tune_unlearn.compare "${FORGET[@]}" --seeds 1 2 3 \
    --configs "$OUT"/selective/best_config.yaml "$OUT"/fanchuan/best_config.yaml "$OUT"/kookmin/best_config.yaml \
    --out "$OUT/compare"
