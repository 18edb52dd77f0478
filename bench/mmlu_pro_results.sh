#!/usr/bin/env bash
# The README's results on real data: MMLU-Pro (../shared/data/mmlu_pro, 29 models), with the
# 14 categories and with the 91 `src` sources as tasks, for one embedder.
# Usage: bash bench/mmlu_pro_results.sh STORE_DIR [EMBEDDER] [OUT_DIR]
#   EMBEDDER: omitted or `minilm` = all-MiniLM-L6-v2 (the default, packaged); `static`; or a
#   folder such as the one made by ../shared/tools/get-mpnet.sh DIR (DIR/all-mpnet-base-v2)
# Writes OUT_DIR/{cat14,src91,src91_small,src91_notop}.json; render with
#   python bench/render_results.py OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${1:?usage: mmlu_pro_results.sh STORE_DIR [EMBEDDER] [OUT_DIR]}
EMB=${2:-}
OUT=${3:-bench/out/mmlu_pro}
DATA=../shared/data/mmlu_pro
mkdir -p "$OUT"
emb_args=()
[ -n "$EMB" ] && emb_args=(--embedder "$EMB")
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
[ -e "$STORE/CURRENT" ] || lm-router ingest table "$DATA/table.tsv.gz" --models bench/mmlu_pro_models.yaml --store "$STORE"
sweep=(--alpha 0,0.05 --labels 5,10,20,30 --repeats 10)
src=(--tasks-by src --tasks-file "$DATA/instances.tsv.gz")
lm-router evaluate --store "$STORE" "${emb_args[@]}" "${sweep[@]}" --json > "$OUT/cat14.json"
lm-router evaluate --store "$STORE" "${emb_args[@]}" "${sweep[@]}" "${src[@]}" \
    --plot "$OUT/figures" --json > "$OUT/src91.json"
lm-router evaluate --store "$STORE" "${emb_args[@]}" "${sweep[@]}" "${src[@]}" --max-params 13B \
    --compare-to Meta-Llama-3_1-70B-Instruct --json > "$OUT/src91_small.json"
# A field without a dominant model: every candidate but the best model on average over all
# tasks (mean of the task accuracies, gemini-1.5-pro-002; the same for every held-out task).
notop=$(python - "$STORE" <<'PY'
import sys
from lm_router_plugin import Store
t = Store(sys.argv[1]).read_table()
acc = t.groupby(["task", "model"])["correct"].mean().groupby("model").mean()  # as BMA
print(",".join(m for m in acc.index if m != acc.idxmax()))
PY
)
lm-router evaluate --store "$STORE" "${emb_args[@]}" "${sweep[@]}" "${src[@]}" \
    --candidates "$notop" --json > "$OUT/src91_notop.json"
