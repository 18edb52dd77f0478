#!/usr/bin/env bash
# The README's results on RouterDC (../shared/data/routerdc: 7 open LLMs x 10 tasks), for the
# static embedder and all-MiniLM-L6-v2, all candidates and without the best model on average
# over all tasks (mean of the task accuracies, chosen once; then there is no dominant model).
# Usage: bash bench/routerdc_results.sh STORE_DIR [OUT_DIR]; render with
#   python bench/render_results.py OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${1:?usage: routerdc_results.sh STORE_DIR [OUT_DIR]}
OUT=${2:-bench/out/routerdc}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
if [ ! -e "$STORE/CURRENT" ]; then
    python bench/routerdc_table.py --out /tmp/routerdc/table.tsv.gz   # not committed
    lm-router ingest table /tmp/routerdc/table.tsv.gz --store "$STORE"
fi
sweep=(--alpha 0,0.05 --labels 5,10,20,30 --repeats 10)
notop=$(python - "$STORE" <<'PY'
import sys
from lm_router_plugin import Store
t = Store(sys.argv[1]).read_table()
acc = t.groupby(["task", "model"])["correct"].mean().groupby("model").mean()  # as BMA
print(",".join(m for m in acc.index if m != acc.idxmax()))
PY
)
for emb in static sentence-transformers/all-MiniLM-L6-v2; do
    tag=${emb##*/}; tag=${tag%%-L6-v2}
    lm-router evaluate --store "$STORE" --embedder "$emb" "${sweep[@]}" --json \
        > "$OUT/routerdc_${tag}.json"
    lm-router evaluate --store "$STORE" --embedder "$emb" "${sweep[@]}" --candidates "$notop" \
        --json > "$OUT/routerdc_${tag}_notop.json"
done
