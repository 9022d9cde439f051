#!/usr/bin/env bash
# Main job: set up a fresh machine, build, show the zoo and run a checkpoint written by timm.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/committee-target}"
bash scripts/setup.sh
cargo build --release --locked
BIN="$CARGO_TARGET_DIR/release/committee"
"$BIN" models
echo
echo "== mobilenetv2_035 checkpoint written by timm, run on a tensor PyTorch also ran =="
OUT="$(mktemp -d)"
F=tests/fixtures/parity
"$BIN" predict --backend flex --model mobilenetv2_035 --weights $F/mobilenetv2_035.safetensors \
  --tensor-in $F/mobilenetv2_035.io.safetensors --tensor-out "$OUT/out.safetensors"
echo
echo "== the same checkpoint on an image =="
python3 - "$OUT/img.ppm" <<'PY'
import sys
w, h = 160, 120
with open(sys.argv[1], "wb") as f:
    f.write(b"P6 %d %d 255\n" % (w, h))
    f.write(bytes(v for y in range(h) for x in range(w) for v in (x * 255 // w, y * 255 // h, 128)))
PY
"$BIN" predict --backend flex --model mobilenetv2_035 --weights $F/mobilenetv2_035.safetensors --top 3 "$OUT/img.ppm"
