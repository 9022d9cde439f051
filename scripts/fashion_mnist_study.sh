#!/usr/bin/env bash
# The Fashion-MNIST study (docs/fashion-mnist.md): train 3 members of two sizes from scratch on
# this CPU, cache their logits on holdout/ and test/, then compare singles, ensembles and
# searched cascades. Usage: scripts/fashion_mnist_study.sh [WORK_DIR]   (resumable: rerun it)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/committee-target}"
BIN="$CARGO_TARGET_DIR/release/committee"
W="${1:-/tmp/fashion-study}"
PER_CLASS="${PER_CLASS:-2000}"   # training images per class (of 5,500)
EPOCHS="${EPOCHS:-3}"
mkdir -p "$W"
[ -d "$W/fm/test" ] || "$BIN" data fashion-mnist --out "$W/fm"
# A class-balanced training subset: the first $PER_CLASS files of each class, by name.
if [ ! -d "$W/train-$PER_CLASS" ]; then
  for c in "$W"/fm/train/*/; do
    c=$(basename "$c"); mkdir -p "$W/train-$PER_CLASS.tmp/$c"
    ls "$W/fm/train/$c" | sort | head -n "$PER_CLASS" | while read -r f; do
      ln -s "$W/fm/train/$c/$f" "$W/train-$PER_CLASS.tmp/$c/$f"; done
  done
  mv "$W/train-$PER_CLASS.tmp" "$W/train-$PER_CLASS"
fi
for m in mobilenetv2_050 mobilenetv2_100; do
  for s in 0 1 2; do
    out="$W/runs/$m/seed-$s"
    if [ -f "$out/metrics.csv" ] && [ "$(wc -l < "$out/metrics.csv")" -gt "$EPOCHS" ]; then continue; fi
    resume=(); [ -f "$out/checkpoint.safetensors" ] && resume=(--resume)
    "$BIN" train --backend flex --model $m --data "$W/train-$PER_CLASS" --val "$W/fm/holdout" \
      --out "$out" --epochs "$EPOCHS" --batch 64 --seed $s --warmup-epochs 0.5 "${resume[@]}"
  done
done
