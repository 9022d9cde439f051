#!/usr/bin/env bash
# committee f32 with its tap-offset convolution off and on (COMMITTEE_F32_TAPS=0/1) against
# PyTorch fp32 channels_last, alternated round by round on this CPU (a shared host drifts
# by minutes; each round runs the three one after another). Prints each cell's median and
# best over the rounds. Needs a venv with torch + timm (README "References").
#   [ROUNDS=n] scripts/bench_f32_taps.sh OUT_DIR [MODELS] [BATCHES] [THREADS]
set -euo pipefail
OUT=${1:?out dir}; MODELS=${2:-resnet50,efficientnet_b0}
BATCH=${3:-1,8}; THREADS=${4:-2}; PY=${PYTHON:-venv/bin/python}
BIN=${COMMITTEE:-target/release/committee}
ROUNDS=${ROUNDS:-4}
mkdir -p "$OUT"
lscpu > "$OUT/lscpu.txt"
for r in $(seq "$ROUNDS"); do
  for m in ${MODELS//,/ }; do
    for taps in 0 1; do
      COMMITTEE_F32_TAPS=$taps "$BIN" bench --model "$m" --batch "$BATCH" --threads "$THREADS" \
        --json > "$OUT/committee-taps$taps-$m-r$r.json" 2> "$OUT/committee-taps$taps-$m-r$r.log"
    done
    "$PY" scripts/bench_pytorch.py --model "$m" --batch "$BATCH" --threads "$THREADS" \
      --channels-last --json > "$OUT/torch-cl-$m-r$r.json"
  done
done
"$PY" - "$OUT" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
cells = {}
for f in sorted(glob.glob(f"{out}/*.json")):
    who = os.path.basename(f).split("-")[0] + "-" + os.path.basename(f).split("-")[1]
    who = {"committee-taps0": "unfolded", "committee-taps1": "taps", "torch-cl": "torch fp32 cl"}[who]
    for r in json.load(open(f)):
        cells.setdefault((r["model"], r["batch"]), {}).setdefault(who, []).append(r["img_per_s"])
print(f"{'model':24} {'b':>3} {'unfolded':>15} {'taps':>15} {'torch fp32 cl':>15}  taps/unf  taps/torch (img/s: median best)")
for (m, b), v in sorted(cells.items()):
    med = {k: statistics.median(x) for k, x in v.items()}
    best = {k: max(x) for k, x in v.items()}
    row = " ".join(f"{med[k]:7.1f} {best[k]:7.1f}" for k in ["unfolded", "taps", "torch fp32 cl"])
    print(f"{m:24} {b:>3} {row}  {med['taps']/med['unfolded']:.2f}x  {med['taps']/med['torch fp32 cl']:.2f}x")
PY
