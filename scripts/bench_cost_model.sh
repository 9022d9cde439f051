#!/usr/bin/env bash
# The time cost model checked live: a cost table from `committee bench --json`, then live
# cascades at batch 32 whose measured model time per image is compared with what the table
# predicts for the exits they saw (issue "Search on measured time").
#
#   bash scripts/bench_cost_model.sh [OUT_DIR]     # ~8 min on 2 cores; run it on an idle machine
#
# Random-weight members (`models --init`: speed does not depend on the values), 256 photos
# (the test fixtures, copied) in 8 classes; each cascade's thresholds are set offline, from
# eval caches, so that about half the images exit at the first stage (and, for the 3-stage
# cascade, about half of the rest at the second).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/committee-target}"
cargo build --release --locked -q
BIN="$CARGO_TARGET_DIR/release/committee"
OUT="${1:-$(mktemp -d)}"
mkdir -p "$OUT/images"
BATCH=32

imgs=(tests/fixtures/images/*/*)
for i in $(seq 0 255); do
  src=${imgs[$((i % ${#imgs[@]}))]}
  d="$OUT/images/c$((i % 8))"; mkdir -p "$d"
  cp "$src" "$d/$i.${src##*.}"
done
for m in resnet18 resnet50 mobilenetv2_100; do
  [ -f "$OUT/$m.safetensors" ] || "$BIN" models --init "$m" --out "$OUT/$m.safetensors" 2>/dev/null
done

# Each cascade's table is measured right before it runs (side by side: this host's speed drifts
# by up to 25 % over minutes), with the same 2 threads.
table() { # out model:size...
  local out=$1; shift
  : > "$out.parts"
  for spec in "$@"; do
    "$BIN" bench --backend flex --model "${spec%%:*}" --img-size "${spec##*:}" --batch 1,2,4,8,16,32 \
      --warmup 2 --iters 5 --json >> "$out.parts" 2>/dev/null
  done
  jq -s 'add' "$out.parts" > "$out"
}
echo "== eval caches (to set thresholds) =="
cache() { # model size -> cache path
  local p="$OUT/cache-$1-$2.safetensors"
  [ -f "$p" ] || "$BIN" eval --backend flex --model "$1" --weights "$OUT/$1.safetensors" \
    --img-size "$2" --data "$OUT/images" --batch $BATCH --save-logits "$p" >/dev/null 2>&1
  echo "$p"
}
# Thresholds at which about `want` of the images exit at stage 1 (one threshold for every
# stage), or, given `want1,want2` for 3 stages, `want1` at stage 1 and then `want2` of the
# images at stage 2 (bisection offline, stage by stage).
fit() { # want[,want2] caches...
  local want=$1; shift
  python3 - "$want" "$BIN" "$@" <<'EOF'
import json, subprocess, sys
wants, binary, caches = [float(w) for w in sys.argv[1].split(",")], sys.argv[2], sys.argv[3:]
def exits(ts):
    out = subprocess.run([binary, "cascade", "--json", "--thresholds", ",".join(map(str, ts)),
                          "--logits", *caches], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["exit_fractions"]
def bisect(make, stage, want):
    lo, hi = 0.0, 1.0
    for _ in range(40):
        t = (lo + hi) / 2
        lo, hi = (t, hi) if exits(make(t))[stage] > want else (lo, t)
    return (lo + hi) / 2
stages = len(caches) - 1
if len(wants) == 1:
    t = bisect(lambda t: [t] * stages, 0, wants[0])
    print(",".join([f"{t:.9f}"] * stages))
else:
    t1 = bisect(lambda t: [t, 1.0], 0, wants[0])
    t2 = bisect(lambda t: [t1, t], 1, wants[1])
    print(f"{t1:.9f},{t2:.9f}")
EOF
}

echo "== live cascades at batch $BATCH =="
printf "| cascade | exits | predicted model ms/img (table) | measured model ms/img | measured / predicted | speed-up vs largest: GMACs predict, measured (wall) |\n|---|---|---|---|---|---|\n" > "$OUT/table.md"
live() { # label thresholds table-entries stage...
  local label=$1 th=$2 entries=$3; shift 3
  local args=()
  for s in "$@"; do args+=(--stage "$s"); done
  table "$OUT/costs-$label.json" $entries
  "$BIN" cascade --backend flex --batch $BATCH "${args[@]}" --thresholds "$th" \
    --data "$OUT/images" --costs "$OUT/costs-$label.json" --json > "$OUT/live-$label.json"
  jq -r --arg l "$label" '"| \($l) | \(.exit_fractions | map(. * 1000 | round / 1000)) | \(.predicted_ms_per_img * 1000 | round / 1000) | \(.model_ms_per_img * 1000 | round / 1000) | \(.measured_over_predicted * 1000 | round / 1000) | \(.predicted_speedup * 1000 | round / 1000)x, \(.speedup_vs_largest * 1000 | round / 1000)x |"' \
    "$OUT/live-$label.json" | tee -a "$OUT/table.md"
}
W="$OUT"
# Members drawn as timm draws them (`models --init`'s default): a random MobileNetV2's
# confidence varies from image to image, so thresholds split mixed-family cascades too.
t=$(fit 0.5 "$(cache mobilenetv2_100 224)" "$(cache resnet50 224)")
live "mobilenetv2_100 -> resnet50" "$t" "mobilenetv2_100:224 resnet50:224" "mobilenetv2_100:$W/mobilenetv2_100.safetensors" "resnet50:$W/resnet50.safetensors"
t=$(fit 0.35,0.3 "$(cache mobilenetv2_100 224)" "$(cache resnet18 224)" "$(cache resnet50 224)")
live "mobilenetv2_100 -> resnet18 -> resnet50" "$t" "mobilenetv2_100:224 resnet18:224 resnet50:224" \
  "mobilenetv2_100:$W/mobilenetv2_100.safetensors" "resnet18:$W/resnet18.safetensors" "resnet50:$W/resnet50.safetensors"
t=$(fit 0.5 "$(cache resnet18 224)" "$(cache resnet50 224)")
live "resnet18 -> resnet50" "$t" "resnet18:224 resnet50:224" "resnet18:$W/resnet18.safetensors" "resnet50:$W/resnet50.safetensors"
t=$(fit 0.5 "$(cache resnet50 160)" "$(cache resnet50 224)")
live "resnet50@160 -> resnet50@224" "$t" "resnet50:160 resnet50:224" "resnet50:$W/resnet50.safetensors@160" "resnet50:$W/resnet50.safetensors@224"
t=$(fit 0.35,0.3 "$(cache resnet18 224)" "$(cache resnet50 160)" "$(cache resnet50 224)")
live "resnet18 -> resnet50@160 -> resnet50@224" "$t" "resnet18:224 resnet50:160 resnet50:224" \
  "resnet18:$W/resnet18.safetensors" "resnet50:$W/resnet50.safetensors@160" "resnet50:$W/resnet50.safetensors@224"
t=$(fit 0.8 "$(cache resnet18 224)" "$(cache resnet50 224)")
live "resnet18 -> resnet50 (80 % exit)" "$t" "resnet18:224 resnet50:224" "resnet18:$W/resnet18.safetensors" "resnet50:$W/resnet50.safetensors"
echo "table: $OUT/table.md (host: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(date -u +%F))"
