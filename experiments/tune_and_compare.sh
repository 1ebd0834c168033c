#!/usr/bin/env bash
# Tune selective forgetting and four comparison methods (the competition's two winners, SalUn,
# SCRUB) with the same trial budget on one forget set (seed 0), then compare the tuned
# configurations, beside every other method at its defaults, on forget sets the searches never
# saw (seeds 1 2 3). Searches score on the validation split; the comparison reports the test
# split.
#
#   bash experiments/tune_and_compare.sh                                     # digits_mislabeled, CPU
#   EXPERIMENT=digits_backdoor bash experiments/tune_and_compare.sh          # a backdoor, CPU
#   EXPERIMENT=digits_class bash experiments/tune_and_compare.sh             # one whole class, CPU
#   EXPERIMENT=fmnist_mislabeled SAMPLES=32 bash experiments/tune_and_compare.sh   # the GPU setting
#   EXPERIMENT=fmnist FRACTION=0.02 SAMPLES=32 bash experiments/tune_and_compare.sh
#   WEIGHTS="example=0" bash experiments/tune_and_compare.sh                 # the objective before example_gap
#
# The forget seed chooses the forget set of a random or corrective rule (and, under a
# corrective rule, the original model too: it trained on that forget set), so seeds 1 2 3 are
# requests the searches never saw; with whole classes forgotten it seeds the runs only.
set -euo pipefail
EXPERIMENT=${EXPERIMENT:-digits_mislabeled}
FRACTION=${FRACTION:-}
SAMPLES=${SAMPLES:-20}
WEIGHTS=${WEIGHTS:-}        # objective weights NAME=VALUE, space-separated, for the searches and the comparison
TUNED=${TUNED:-selective fanchuan kookmin salun scrub}
OUT=${OUT:-runs/tune-and-compare-$EXPERIMENT${FRACTION:+-$FRACTION}}
FORGET=(--experiment "$EXPERIMENT" ${FRACTION:+--forget-fraction "$FRACTION"})
WEIGHT_ARGS=()
for w in $WEIGHTS; do WEIGHT_ARGS+=(--weight "$w"); done
# One request (forget seed 0), nothing held out by the searches: the comparison below is the held-out test.
COMMON=("${FORGET[@]}" --forget-seed 0 --num-samples "$SAMPLES" --storage-path "$OUT" --holdout none "${WEIGHT_ARGS[@]}")
CONFIGS=()
for method in $TUNED; do
  python -m tune_unlearn.search --method "$method" --name "$method" "${COMMON[@]}"
  CONFIGS+=("$OUT/$method/best_config.yaml")
done
python -m tune_unlearn compare "${FORGET[@]}" --seeds 1 2 3 --configs "${CONFIGS[@]}" --out "$OUT/compare" "${WEIGHT_ARGS[@]}"
