#!/usr/bin/env bash
# committee (f32, bf16) against PyTorch (fp32, fp32 channels_last, bf16 autocast +
# channels_last) on this CPU, side by side in one run, each model's configurations run one
# after another. Needs a venv with torch + timm (README "References"). ROUNDS=n repeats the
# whole set n times (each round a file per program) and the table takes each cell's median:
# on a shared host one pass can land in a slow minute.
#   [ROUNDS=n] scripts/bench_cpu_bf16.sh OUT_DIR [MODELS] [BATCHES] [THREADS]
set -euo pipefail
OUT=${1:?out dir}; MODELS=${2:-efficientnet_b0,resnet50,mobilenetv2_100,vit_base_patch16_224}
BATCH=${3:-1,8}; THREADS=${4:-2}; PY=${PYTHON:-venv/bin/python}
BIN=${COMMITTEE:-target/release/committee}
ROUNDS=${ROUNDS:-1}
mkdir -p "$OUT"
lscpu > "$OUT/lscpu.txt"
for r in $(seq "$ROUNDS"); do
  sfx=$([ "$ROUNDS" = 1 ] && echo "" || echo "-r$r")
  for m in ${MODELS//,/ }; do
    "$BIN" bench --model "$m" --batch "$BATCH" --threads "$THREADS" --dtype f32,bf16 --json \
      > "$OUT/committee-$m$sfx.json" 2> "$OUT/committee-$m$sfx.log"
    for cfg in "" "--channels-last" "--channels-last --bf16"; do
      tag=$(echo "fp32 $cfg" | tr -d '-' | tr ' ' '_')
      # shellcheck disable=SC2086
      "$PY" scripts/bench_pytorch.py --model "$m" --batch "$BATCH" --threads "$THREADS" $cfg \
        --json > "$OUT/torch-$m-$tag$sfx.json"
    done
  done
done
"$PY" - "$OUT" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
runs = {}
for f in glob.glob(f"{out}/committee-*.json"):
    for r in json.load(open(f)):
        runs.setdefault((r["model"], r["batch"]), {}).setdefault("committee " + r["dtype"], []).append(r["img_per_s"])
for f in glob.glob(f"{out}/torch-*.json"):
    for r in json.load(open(f)):
        k = "torch " + ("bf16+cl" if r["bf16"] else "fp32 cl" if r["channels_last"] else "fp32")
        runs.setdefault((r["model"], r["batch"]), {}).setdefault(k, []).append(r["img_per_s"])
rows = {key: {c: statistics.median(v) for c, v in cols.items()} for key, cols in runs.items()}
cols = sorted({c for v in rows.values() for c in v})
lines = ["| model | batch | " + " | ".join(cols) + " | best ours / best torch |", "|---" * (len(cols) + 3) + "|"]
for (m, b), v in sorted(rows.items()):
    ours = max((x for c, x in v.items() if c.startswith("committee")), default=float("nan"))
    torch = max((x for c, x in v.items() if c.startswith("torch")), default=float("nan"))
    lines.append(f"| {m} | {b} | " + " | ".join(f"{v.get(c, float('nan')):.1f}" for c in cols) + f" | {ours / torch:.2f}x |")
open(f"{out}/table.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
