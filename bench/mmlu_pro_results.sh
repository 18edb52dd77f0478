#!/usr/bin/env bash
# The README's results on real data: MMLU-Pro (../shared/data/mmlu_pro, 29 models), with the
# 14 categories and with the 91 `src` sources as tasks, for one embedder.
# Usage: bash bench/mmlu_pro_results.sh STORE_DIR [EMBEDDER] [OUT_DIR]
#   EMBEDDER: omitted = all-MiniLM-L6-v2 (packaged); or a folder such as the one made by
#   ../shared/tools/get-mpnet.sh DIR  (DIR/all-mpnet-base-v2)
# Writes OUT_DIR/{cat14,src91,src91_small}.json and figures; render with
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
[ -f "$STORE/table.parquet" ] || lm-router ingest table "$DATA/table.tsv.gz" --models bench/mmlu_pro_models.yaml --store "$STORE"
sweep=(--alpha 0,0.02,0.05,0.1,0.2,0.3 --labels 5,10,20,30 --repeats 10)
lm-router evaluate --store "$STORE" "${emb_args[@]}" "${sweep[@]}" --json > "$OUT/cat14.json"
lm-router evaluate --store "$STORE" "${emb_args[@]}" "${sweep[@]}" --tasks-by src \
    --tasks-file "$DATA/instances.tsv.gz" --plot "$OUT/figures" --json > "$OUT/src91.json"
lm-router evaluate --store "$STORE" "${emb_args[@]}" "${sweep[@]}" --tasks-by src \
    --tasks-file "$DATA/instances.tsv.gz" --max-params 13B \
    --compare-to Meta-Llama-3_1-70B-Instruct --json > "$OUT/src91_small.json"
