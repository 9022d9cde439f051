#!/usr/bin/env bash
# committee --dtype bf16 against PyTorch bf16 autocast + channels_last (each one's best on a
# CPU with bf16), or with DTYPE=f32 committee f32 against PyTorch fp32 channels_last, one
# call of each per round, back to back, ROUNDS rounds: on a host whose speed drifts minute
# by minute, the per-round ratio compares the same minute; the table gives its median and
# range beside each side's median.
#   [ROUNDS=n] [DTYPE=bf16|f32] scripts/bench_best_alternated.sh OUT_DIR [MODELS] [BATCH] [THREADS]
set -euo pipefail
OUT=${1:?out dir}; MODELS=${2:-resnet50,vit_base_patch16_224}
BATCH=${3:-8}; THREADS=${4:-2}; PY=${PYTHON:-venv/bin/python}
BIN=${COMMITTEE:-target/release/committee}
ROUNDS=${ROUNDS:-6}
DTYPE=${DTYPE:-bf16}
case $DTYPE in
  bf16) TORCH_FLAGS="--channels-last --bf16"; TORCH_NAME="torch bf16+cl" ;;
  f32) TORCH_FLAGS="--channels-last"; TORCH_NAME="torch fp32 cl" ;;
  *) echo "DTYPE must be bf16 or f32" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
lscpu > "$OUT/lscpu.txt"
for r in $(seq "$ROUNDS"); do
  for m in ${MODELS//,/ }; do
    "$BIN" bench --model "$m" --batch "$BATCH" --threads "$THREADS" --dtype "$DTYPE" --iters 6 \
      --json > "$OUT/committee-$m-r$r.json" 2> "$OUT/committee-$m-r$r.log"
    "$PY" scripts/bench_pytorch.py --model "$m" --batch "$BATCH" --threads "$THREADS" \
      $TORCH_FLAGS --iters 6 --json > "$OUT/torch-$m-r$r.json"
  done
done
"$PY" - "$OUT" "$MODELS" "$ROUNDS" "$DTYPE" "$TORCH_NAME" <<'PY'
import json, statistics, sys
out, models, rounds, dtype, torch_name = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4], sys.argv[5]
lines = [f"| model | batch | committee {dtype} (median, range) | {torch_name} (median, range) | per-round ratio: median (range) |",
         "|---|---|---|---|---|"]
for m in models:
    for b in sorted({r["batch"] for r in json.load(open(f"{out}/committee-{m}-r1.json"))}):
        ours = [next(r["img_per_s"] for r in json.load(open(f"{out}/committee-{m}-r{i}.json")) if r["batch"] == b) for i in range(1, rounds + 1)]
        torch = [next(r["img_per_s"] for r in json.load(open(f"{out}/torch-{m}-r{i}.json")) if r["batch"] == b) for i in range(1, rounds + 1)]
        ratio = [o / t for o, t in zip(ours, torch)]
        f = lambda v: f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})"
        lines.append(f"| {m} | {b} | {f(ours)} | {f(torch)} | **{statistics.median(ratio):.2f}x** ({min(ratio):.2f}-{max(ratio):.2f}) |")
open(f"{out}/table.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
