#!/usr/bin/env bash
# Eval pipeline vs model-only throughput, side by side in one run (flex, random weights).
#   python scripts/make_bench_data.py /tmp/benchdata          # 256 JPEGs + random resnet50
#   bash scripts/bench_eval_pipeline.sh /tmp/benchdata [model] [batch]
set -euo pipefail
DIR=${1:?data dir from make_bench_data.py}; MODEL=${2:-resnet50}; BATCH=${3:-32}
BIN="${CARGO_TARGET_DIR:-$HOME/.cache/committee-target}/release/committee"
model=$("$BIN" bench --model "$MODEL" --backend flex --batch "$BATCH" --warmup 1 --iters 5 --json 2>/dev/null \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["img_per_s"])')
eval=$("$BIN" eval --model "$MODEL" --weights "$DIR/$MODEL.safetensors" --data "$DIR/images" \
  --batch "$BATCH" --backend flex --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["img_per_s"])')
python3 -c "m,e=$model,$eval; print(f'$MODEL batch $BATCH flex: model-only {m:.2f} img/s, eval {e:.2f} img/s, ratio {e/m:.3f}')"
