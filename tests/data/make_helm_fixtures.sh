#!/usr/bin/env bash
# Regenerate the real HELM run folders under tests/data/helm/ with helm-run, offline.
#
#   bash tests/data/make_helm_fixtures.sh            # from the repository root
#
# Needs crfm-helm 0.5.16 (installed with --no-deps plus its light dependencies, see
# ../shared/FORMATS.md section 3.5). HELM's basic metrics import `calibration`
# (PyPI: uncertainty-calibration); it is installed into a scratch folder if missing.
#
# Models: simple/model1 (HELM's built-in SimpleClient) and two extra deployments declared in
# a local prod_env/, mock/model-b and mock/model-c, also served by SimpleClient. SimpleClient
# answers do not depend on the model (it echoes the prompt's last word), so every model would
# score 0. To get models that differ, the script runs helm-run twice: the first pass fills
# HELM's request cache (prod_env/cache/mock.sqlite), the script then rewrites the cached
# answers of the mock models ("recorded answers"), and the second pass re-runs everything
# from the cache. All stats are computed by HELM itself in the second pass.
#   mock/model-b  answers correctly when sha256(prompt) is even (so train trials differ)
#   mock/model-c  always answers the first choice ("A" / "Even")
#
# Only the five files an adapter needs are kept per run (run_spec.json, scenario.json,
# scenario_state.json, stats.json, per_instance_stats.json); eval_cache/ and the caches go.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$REPO/tests/data/helm"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

if ! python -c "import calibration" 2>/dev/null; then
    pip install --quiet --no-deps --target "$WORK/deps" uncertainty-calibration==0.1.4
    export PYTHONPATH="$WORK/deps${PYTHONPATH:+:$PYTHONPATH}"
fi

mkdir -p prod_env
cat > prod_env/model_deployments.yaml <<'EOF'
model_deployments:
  - name: mock/model-b
    model_name: mock/model-b
    tokenizer_name: simple/tokenizer1
    max_sequence_length: 2048
    client_spec:
      class_name: "helm.clients.simple_client.SimpleClient"
  - name: mock/model-c
    model_name: mock/model-c
    tokenizer_name: simple/tokenizer1
    max_sequence_length: 2048
    client_spec:
      class_name: "helm.clients.simple_client.SimpleClient"
EOF
cat > prod_env/model_metadata.yaml <<'EOF'
models:
  - name: mock/model-b
    display_name: Mock Model B
    description: Fake model for tests (SimpleClient with recorded answers).
    creator_organization_name: Mock
    access: open
    num_parameters: 7000000000
    release_date: 2024-01-01
    tags: [TEXT_MODEL_TAG, FULL_FUNCTIONALITY_TEXT_MODEL_TAG]
  - name: mock/model-c
    display_name: Mock Model C
    description: Fake model for tests (SimpleClient with recorded answers).
    creator_organization_name: Mock
    access: open
    num_parameters: 1000000000
    release_date: 2024-01-01
    tags: [TEXT_MODEL_TAG, FULL_FUNCTIONALITY_TEXT_MODEL_TAG]
EOF

ENTRIES=(
    simple_mcqa:model=simple/model1
    simple_mcqa:model=mock/model-b
    simple_mcqa:model=mock/model-c
    simple_classification:model=simple/model1
    simple_classification:model=mock/model-b
    simple_classification:model=mock/model-c
    # three train trials (different few-shot examples): the adapter averages them
    simple_mcqa:num_train_trials=3,model=mock/model-b
    # perturbed copies of each instance (lowercased): the adapter ignores them by default
    simple_mcqa:data_augmentation=lower,model=mock/model-b
)

run_helm() {
    rm -rf benchmark_output
    helm-run --run-entries "${ENTRIES[@]}" --suite fixture-suite --max-eval-instances 5 \
        --local-path prod_env > "helm-run-$1.log" 2>&1 || {
        tail -40 "helm-run-$1.log"; exit 1; }
}

run_helm 1

python - <<'EOF'
import hashlib
import re

from helm.common.cache import get_all_from_sqlite
from helm.common.key_value_store import SqliteKeyValueStore

path = "prod_env/cache/mock.sqlite"
pairs = list(get_all_from_sqlite(path))
with SqliteKeyValueStore(path) as store:
    for key, value in pairs:
        prompt = key["prompt"]
        mcqa = prompt.rstrip().endswith("Answer:")
        number = int(re.findall(r"\d+", prompt)[-1])
        right = ("A" if number % 2 == 0 else "B") if mcqa else ("Even" if number % 2 == 0 else "Odd")
        first = "A" if mcqa else "Even"
        wrong = "B" if right == "A" else "A" if mcqa else ("Odd" if right == "Even" else "Even")
        if key["engine"] == "model-b":
            ok = int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 2 == 0
            answer = right if ok else wrong
        else:
            answer = first
        value["completions"] = [answer] * key["num_completions"]
        store.put(key, value)
print(f"recorded answers for {len(pairs)} cached requests of the mock models")
EOF

run_helm 2

rm -rf "$DEST/fixture-suite"
mkdir -p "$DEST/fixture-suite"
for run in benchmark_output/runs/fixture-suite/*/; do
    name="$(basename "$run")"
    [ "$name" = eval_cache ] && continue
    mkdir -p "$DEST/fixture-suite/$name"
    for f in run_spec.json scenario.json scenario_state.json stats.json per_instance_stats.json; do
        cp "$run/$f" "$DEST/fixture-suite/$name/$f"
    done
done
du -sh "$DEST"
