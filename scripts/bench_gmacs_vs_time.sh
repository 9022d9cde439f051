#!/usr/bin/env bash
# The same search on GMACs and on measured time (`--costs`), over the Fashion-MNIST members of
# the demo (weights/fashion-mnist), thresholds fitted on holdout/, both choices then run live
# on test/ with the cost table, so their measured times can be compared.
#
#   bash scripts/bench_gmacs_vs_time.sh [OUT_DIR]    # run it on an idle machine
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/committee-target}"
cargo build --release --locked -q
BIN="$CARGO_TARGET_DIR/release/committee"
OUT="${1:-$(mktemp -d)}"
mkdir -p "$OUT"
DATA="${DATA:-$HOME/.cache/committee-data/fashion-mnist}"
[ -d "$DATA/test" ] || "$BIN" data fashion-mnist --out "$DATA"
WT=weights/fashion-mnist
BATCH=${BATCH:-32}
members=(050-s0:mobilenetv2_050 050-s1:mobilenetv2_050 100-s1:mobilenetv2_100)
fit=(); test=()
for m in "${members[@]}"; do
  name=${m%%:*}; model=${m##*:}
  for split in holdout test; do
    p="$OUT/$split-$name.safetensors"
    [ -f "$p" ] || "$BIN" eval --backend flex --model "$model" --weights "$WT/$name.safetensors" \
      --name "$name" --data "$DATA/$split" --batch $BATCH --save-logits "$p" >/dev/null 2>&1
  done
  fit+=("$OUT/holdout-$name.safetensors"); test+=("$OUT/test-$name.safetensors")
done
"$BIN" bench --backend flex --model mobilenetv2_050,mobilenetv2_100 --img-size 28 --in-chans 1 \
  --num-classes 10 --batch 1,2,4,8,16,32 --warmup 3 --iters 20 --json > "$OUT/costs.json"
jq -r '.[] | "\(.model)@\(.img_size) b=\(.batch): \(.p50_ms) ms"' "$OUT/costs.json"

for how in gmacs ms; do
  extra=(); [ $how = ms ] && extra=(--costs "$OUT/costs.json" --batch $BATCH)
  "$BIN" search --fit "${fit[@]}" --eval "${test[@]}" --max-models 3 "${extra[@]}" \
    --spec-out "$OUT/chosen-$how.toml" --json > "$OUT/search-$how.json"
  jq -r --arg h "$how" '"search on \($h): \(.chosen.kind) \(.chosen.members | join(" -> ")) t=\(.chosen.thresholds) top1 \(.chosen.top1) avg GMACs \(.chosen.avg_gmacs) predicted ms \(.chosen.avg_ms)"' "$OUT/search-$how.json"
done
for how in gmacs ms; do
  kind=$(sed -n 's/^kind = "\(.*\)"/\1/p' "$OUT/chosen-$how.toml")
  if [ "$kind" = cascade ]; then
    "$BIN" cascade --spec "$OUT/chosen-$how.toml" --backend flex --batch $BATCH --data "$DATA/test" \
      --costs "$OUT/costs.json" --json > "$OUT/live-$how.json"
  else
    "$BIN" ensemble --spec "$OUT/chosen-$how.toml" --backend flex --batch $BATCH --data "$DATA/test" \
      --json > "$OUT/live-$how.json"
  fi
  jq -r --arg h "$how" '"live, chosen on \($h): top1 \(.top1) wall \(.wall_s) s, \(.ms_per_img) ms/img (models \(.model_ms_per_img), predicted \(.predicted_ms_per_img))"' "$OUT/live-$how.json"
done
echo "host: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(date -u +%F)"
