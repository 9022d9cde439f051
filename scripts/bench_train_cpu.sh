#!/usr/bin/env bash
# Training steps at 224 px (forward in train mode, cross-entropy, backward, SGD momentum):
# committee flex against PyTorch eager fp32 on this CPU, side by side, the two alternated per
# model and the whole set repeated ROUNDS times (this kind of host's speed drifts by tens of
# percent within minutes; the table gives each one's median). BASE=another committee binary
# adds a column (an earlier build, for a change's own effect); BF16=1 adds committee
# `--dtype bf16` and PyTorch's best (bf16 autocast + channels_last). Needs a venv with torch + timm.
#   scripts/bench_train_cpu.sh OUT_DIR [MODELS] [BATCH] [THREADS] [ROUNDS]
set -euo pipefail
OUT=${1:?out dir}; MODELS=${2:-efficientnet_b0,resnet50,mobilenetv2_100,vit_base_patch16_224}
BATCH=${3:-8}; THREADS=${4:-2}; ROUNDS=${5:-3}; PY=${PYTHON:-venv/bin/python}
BIN=${COMMITTEE:-target/release/committee}
mkdir -p "$OUT"
lscpu > "$OUT/lscpu.txt"
args=(--train --img-size 224 --batch "$BATCH" --warmup 1 --iters 3 --threads "$THREADS")
for r in $(seq 1 "$ROUNDS"); do
  for m in ${MODELS//,/ }; do
    "$BIN" bench --model "$m" --backend flex "${args[@]}" --json > "$OUT/ours-$m-$r.json" 2> /dev/null
    if [ -n "${BASE:-}" ]; then
      "$BASE" bench --model "$m" --backend flex "${args[@]}" --json > "$OUT/base-$m-$r.json" 2> /dev/null
    fi
    "$PY" scripts/bench_pytorch.py --model "$m" "${args[@]}" --json > "$OUT/torch-$m-$r.json"
    if [ -n "${BF16:-}" ]; then
      "$BIN" bench --model "$m" --backend flex "${args[@]}" --dtype bf16 --json \
        > "$OUT/oursbf16-$m-$r.json" 2> /dev/null
      "$PY" scripts/bench_pytorch.py --model "$m" "${args[@]}" --bf16 --channels-last --json \
        > "$OUT/torchbest-$m-$r.json"
    fi
  done
done
"$PY" - "$OUT" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
runs = {}
for f in sorted(glob.glob(f"{out}/*-*-*.json")):
    who, rest = os.path.basename(f).split("-", 1)
    for r in json.load(open(f)):
        runs.setdefault(r["model"], {}).setdefault(who, []).append(r["img_per_s"])
cols = [c for c in ("base", "ours", "oursbf16", "torch", "torchbest")
        if any(c in v for v in runs.values())]
ratios = [("ours", "torch")] + [(a, b) for a, b in (("oursbf16", "torch"), ("oursbf16", "torchbest"))
                                if a in cols and b in cols]
lines = ["| model | " + " | ".join(f"{c} img/s (runs)" for c in cols) + " | "
         + " | ".join(f"{a} / {b}" for a, b in ratios) + " |",
         "|---" * (len(cols) + len(ratios) + 1) + "|"]
for m, v in sorted(runs.items()):
    med = {c: statistics.median(v[c]) for c in cols if c in v}
    cells = [f"**{med[c]:.2f}** ({', '.join(f'{x:.2f}' for x in v[c])})" for c in cols]
    cells += [f"{med[a] / med[b]:.2f}x" for a, b in ratios]
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
open(f"{out}/table.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
