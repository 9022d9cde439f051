#!/usr/bin/env bash
# The Fashion-MNIST study (docs/fashion-mnist.md): train 3 members of two sizes from scratch on
# this CPU, cache their logits on holdout/ and test/, then compare singles, ensembles and
# searched cascades. Usage: scripts/fashion_mnist_study.sh [WORK_DIR]   (resumable: rerun it)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/committee-target}"
BIN="${BIN:-$CARGO_TARGET_DIR/release/committee}"
W="${1:-/tmp/fashion-study}"
PER_CLASS="${PER_CLASS:-2000}"   # training images per class (of 5,500)
EPOCHS="${EPOCHS:-3}"
LR="${LR:-0.02}"                 # peak lr at batch 64 (0.05 was unstable: see docs/fashion-mnist.md)
WARMUP="${WARMUP:-0.3}"          # warmup epochs
# RE: random-erasing probability (0 = off, as the 2026-11-24 study); IMG: training/eval size
# (default: the images' 28 px; 56 keeps MobileNetV2's last stage at 2x2).
mkdir -p "$W"
# Provenance, appended per session (the study spans sessions): commit, host, and per command
# its start, wall seconds and exit status (RUN/record.tsv).
{ echo "# session $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)";
  lscpu | grep -E "Model name|^CPU\(s\)|Flags" | sed 's/^/# /' | cut -c1-300; } >> "$W/record.tsv"
record() {  # record CMD...: run it, then append start, wall s, status and the command
  local t0 s=0; t0=$(date +%s)
  "$@" || s=$?
  printf '%s\t%s\t%s\t%s\n' "$(date -u -d @"$t0" +%FT%TZ)" "$(( $(date +%s) - t0 ))" "$s" "$*" >> "$W/record.tsv"
  return $s
}
[ -d "$W/fm/test" ] || "$BIN" data fashion-mnist --out "$W/fm"
# A class-balanced training subset: the first $PER_CLASS files of each class, by name.
if [ "$PER_CLASS" -ge 5500 ]; then
  [ -e "$W/train-$PER_CLASS" ] || ln -s "$W/fm/train" "$W/train-$PER_CLASS"
elif [ ! -d "$W/train-$PER_CLASS" ]; then
  for c in "$W"/fm/train/*/; do
    c=$(basename "$c"); mkdir -p "$W/train-$PER_CLASS.tmp/$c"
    ls "$W/fm/train/$c" | sort | head -n "$PER_CLASS" | while read -r f; do
      ln -s "$W/fm/train/$c/$f" "$W/train-$PER_CLASS.tmp/$c/$f"; done
  done
  mv "$W/train-$PER_CLASS.tmp" "$W/train-$PER_CLASS"
fi
# JOBS members train side by side (default 1). A flex training step at 28 px keeps little more
# than one core busy (docs/training.md), so on a 2-core machine JOBS=2 with one rayon thread
# each trains 1.6-2x the images per second of one member alone. Each member then logs to
# RUN/train.log.
JOBS="${JOBS:-1}"
train_member() {
  local m=$1 s=$2 out="$W/runs/$1/seed-$2" resume=()
  if [ -f "$out/metrics.csv" ] && [ "$(wc -l < "$out/metrics.csv")" -gt "$EPOCHS" ]; then return; fi
  [ -f "$out/checkpoint.safetensors" ] && resume=(--resume)
  local cmd=("$BIN" train --backend flex --model "$m" --data "$W/train-$PER_CLASS" --val "$W/fm/holdout"
    --out "$out" --epochs "$EPOCHS" --batch 64 --lr "$LR" --seed "$s" --warmup-epochs "$WARMUP"
    --random-erasing "${RE:-0}" ${IMG:+--img-size "$IMG"} "${resume[@]}")
  if [ "$JOBS" -gt 1 ]; then
    mkdir -p "$out"
    RAYON_NUM_THREADS="${THREADS:-1}" record "${cmd[@]}" > "$out/train.log" 2>&1
  else
    record "${cmd[@]}"
  fi
}
# Largest members first, so that the last to finish are small ones.
for m in mobilenetv2_100 mobilenetv2_050; do
  for s in 0 1 2; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
    train_member $m $s &
  done
done
for p in $(jobs -p); do wait "$p"; done

# Logits caches of every member's best (holdout-selected) epoch on holdout/ and test/.
mkdir -p "$W/caches/holdout" "$W/caches/test" "$W/live"
for m in mobilenetv2_050 mobilenetv2_100; do
  for s in 0 1 2; do
    name="${m#mobilenetv2_}-s$s"
    for split in holdout test; do
      c="$W/caches/$split/$name.safetensors"
      [ -f "$c" ] || "$BIN" eval --backend flex --model $m --weights "$W/runs/$m/seed-$s/best.safetensors" \
        --data "$W/fm/$split" --name "$name" --save-logits "$c" --json > "$W/caches/$split/$name.json"
    done
  done
done
# Search: thresholds fitted on holdout/, everything reported on test/.
"$BIN" search --fit "$W"/caches/holdout/*.safetensors --eval "$W"/caches/test/*.safetensors \
  --max-models 3 --plot docs/plots/fashion_mnist.svg --spec-out "$W/cascade.toml" --json > "$W/search.json"
"$BIN" search --fit "$W"/caches/holdout/*.safetensors --eval "$W"/caches/test/*.safetensors \
  --max-models 3 > "$W/search.txt"
# Live runs on test/ (measured wall time): ensembles of 2 and 3, and the searched cascade.
R="$W/runs"
"$BIN" ensemble --backend flex --data "$W/fm/test" --json \
  --member mobilenetv2_050:$R/mobilenetv2_050/seed-0/best.safetensors \
  --member mobilenetv2_050:$R/mobilenetv2_050/seed-1/best.safetensors > "$W/live/ens_050x2.json"
"$BIN" ensemble --backend flex --data "$W/fm/test" --json \
  --member mobilenetv2_050:$R/mobilenetv2_050/seed-0/best.safetensors \
  --member mobilenetv2_050:$R/mobilenetv2_050/seed-1/best.safetensors \
  --member mobilenetv2_050:$R/mobilenetv2_050/seed-2/best.safetensors > "$W/live/ens_050x3.json"
"$BIN" ensemble --backend flex --data "$W/fm/test" --json \
  --member mobilenetv2_100:$R/mobilenetv2_100/seed-0/best.safetensors \
  --member mobilenetv2_100:$R/mobilenetv2_100/seed-1/best.safetensors > "$W/live/ens_100x2.json"
"$BIN" cascade --backend flex --data "$W/fm/test" --json --spec "$W/cascade.toml" > "$W/live/cascade.json"
python3 - "$W" <<'PY'
import json, sys, glob, os
w = sys.argv[1]
print("| committee | top-1 (test) | GMACs/img | measured ms/img (flex, live) |")
print("|---|---|---|---|")
for f in sorted(glob.glob(f"{w}/caches/test/*.json")):
    r = json.load(open(f))
    name = os.path.basename(f)[:-5]
    print(f"| {r['model']} {name} | {r['top1']:.2f} | {r['gmacs']:.5f} | {1000 / r['img_per_s']:.3f} |")
for f in ["ens_050x2", "ens_050x3", "ens_100x2", "cascade"]:
    r = json.load(open(f"{w}/live/{f}.json"))
    g = r.get("avg_gmacs", r.get("gmacs"))
    n = r.get("images") or 10000
    print(f"| {f} | {r['top1']:.2f} | {g:.5f} | {1000 * r['wall_s'] / n:.3f} |")
PY
