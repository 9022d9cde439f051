#!/usr/bin/env bash
# Main job: set up a fresh machine, build, import Fashion-MNIST, and compare single models,
# an ensemble and a searched cascade of members trained here (weights/fashion-mnist, f16)
# on the 10,000 test images. Thresholds are fitted on the 5,000 holdout images.
# Writes the Pareto plot to $OUT/fashion_mnist_demo.svg (OUT defaults to a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/committee-target}"
bash scripts/setup.sh
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] && \
   [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
cargo build --release --locked
BIN="$CARGO_TARGET_DIR/release/committee"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
DATA="${DATA:-$HOME/.cache/committee-data/fashion-mnist}"
[ -d "$DATA/test" ] || "$BIN" data fashion-mnist --out "$DATA"
WT=weights/fashion-mnist
members=(050-s0:mobilenetv2_050 050-s1:mobilenetv2_050 100-s1:mobilenetv2_100)
echo "== single members on holdout/ and test/ (logits cached in $OUT) =="
for m in "${members[@]}"; do
  name=${m%%:*}; model=${m##*:}
  for split in holdout test; do
    "$BIN" eval --backend flex --model "$model" --weights "$WT/$name.safetensors" --name "$name" \
      --data "$DATA/$split" --save-logits "$OUT/$split-$name.safetensors" 2>/dev/null | sed "s/^/$split: /"
  done
done
echo
echo "== ensemble of the two small members (test) =="
"$BIN" ensemble --logits "$OUT/test-050-s0.safetensors" "$OUT/test-050-s1.safetensors"
echo
echo "== search: singles, ensembles and cascades; thresholds fitted on holdout, reported on test =="
"$BIN" search --max-models 3 \
  --fit "$OUT"/holdout-*.safetensors --eval "$OUT"/test-*.safetensors \
  --plot "$OUT/fashion_mnist_demo.svg" --spec-out "$OUT/cascade.toml"
echo
echo "== the chosen committee, run live on the test images =="
"$BIN" cascade --backend flex --spec "$OUT/cascade.toml" --data "$DATA/test" 2>/dev/null || \
  "$BIN" ensemble --backend flex --spec "$OUT/cascade.toml" --data "$DATA/test"
echo
echo "plot: $OUT/fashion_mnist_demo.svg"
