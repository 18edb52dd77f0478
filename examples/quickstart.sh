#!/usr/bin/env bash
# The README quick start, on the shipped example (fake models, not real results).
# Usage: bash examples/quickstart.sh [STORE_DIR]   (default /tmp/lm-router-quickstart; recreated)
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${1:-/tmp/lm-router-quickstart}
rm -rf "$STORE"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
set -x
lm-router ingest lm-eval examples/runs --models examples/models.yaml --store "$STORE"
lm-router info --store "$STORE"
lm-router recommend --task toy_percent --include-path task_configs --store "$STORE"
lm-router recommend --task toy_percent --include-path task_configs --max-params 10B --json --store "$STORE"
lm-router route --prompts examples/prompts.txt --store "$STORE"
lm-router evaluate --alpha 0,0.2 --repeats 3 --store "$STORE"
