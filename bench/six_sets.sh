#!/usr/bin/env bash
# The six shared sets, zero-label rows + 10 labels (5 repeats), for one embedder: RouterDC (all
# models / without its best model on average) and MMLU-Pro (14 categories; 91 sources: all,
# at most 13B, without its best model on average). The data live outside the repository.
# Usage: bash bench/six_sets.sh ROUTERDC_STORE MMLU_STORE EMBEDDER OUT_DIR [EVALUATE OPTIONS...]
#   (stores made as in bench/routerdc_results.sh and bench/mmlu_pro_results.sh; further
#   options go to every evaluate, e.g. --config old.yaml; LABELS=10,20 for more label counts,
#   LABELS=0 for the zero-label rows alone, about 4 minutes)
# Compare two embedders: python bench/compare_evaluations.py A/SET.json B/SET.json --rows s1,s3,stack
set -euo pipefail
RDC=${1:?usage: six_sets.sh ROUTERDC_STORE MMLU_STORE EMBEDDER OUT_DIR}; MMLU=${2:?}; EMB=${3:?}
OUT=${4:?}
shift 4
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
D="$(dirname "$0")/../../shared/data/mmlu_pro"
if [ "${LABELS:-10}" = 0 ]; then  # LABELS=0: the zero-label rows only, one repeat
  sw=(--alpha 0 --repeats 1 --embedder "$EMB" --json -q "$@")
else
  sw=(--alpha 0 --labels "${LABELS:-10}" --repeats 5 --embedder "$EMB" --json -q "$@")
fi
src=(--tasks-by src --tasks-file "$D/instances.tsv.gz")
notop() { python - "$1" <<'PY'
import sys
from lm_router_plugin import Store
t = Store(sys.argv[1]).read_table()
acc = t.groupby(["task", "model"])["correct"].mean().groupby("model").mean()  # as BMA
print(",".join(m for m in acc.index if m != acc.idxmax()))
PY
}
lm-router evaluate --store "$RDC" "${sw[@]}" > "$OUT/routerdc.json"
lm-router evaluate --store "$RDC" "${sw[@]}" --candidates "$(notop "$RDC")" > "$OUT/routerdc_notop.json"
lm-router evaluate --store "$MMLU" "${sw[@]}" > "$OUT/cat14.json"
lm-router evaluate --store "$MMLU" "${sw[@]}" "${src[@]}" > "$OUT/src91.json"
lm-router evaluate --store "$MMLU" "${sw[@]}" "${src[@]}" --max-params 13B > "$OUT/src91_small.json"
lm-router evaluate --store "$MMLU" "${sw[@]}" "${src[@]}" --candidates "$(notop "$MMLU")" \
    > "$OUT/src91_notop.json"
