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
# Members trained here with configs/fashion-mnist.toml (docs/fashion-mnist.md): NAME:MODEL.
# Widths 0.35 and 0.5 of one family, so that a cascade can start small and end large.
members=(${DEMO_MEMBERS:-035-56-s0:mobilenetv2_035 035-56-s1:mobilenetv2_035 050-56-s2:mobilenetv2_050})
echo "== single members on holdout/ and test/ (logits cached in $OUT) =="
for m in "${members[@]}"; do
  name=${m%%:*}; model=${m##*:}
  for split in holdout test; do
    "$BIN" eval --backend flex --model "$model" --weights "$WT/$name.safetensors" --name "$name" \
      --data "$DATA/$split" --save-logits "$OUT/$split-$name.safetensors" --json 2>/dev/null \
      > "$OUT/$split-$name.json"
    python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print("%s: %s top-1 %.2f %% on %d images (%.5f GMACs/img)" % (sys.argv[2], sys.argv[3], r["top1"], r["images"], r["gmacs"]))' \
      "$OUT/$split-$name.json" "$split" "$name"
  done
done
echo
echo "== ensemble of the members (test) =="
"$BIN" ensemble --logits "$OUT"/test-*.safetensors --json > "$OUT/ensemble.json"
"$BIN" ensemble --logits "$OUT"/test-*.safetensors
echo
# The objective (the search's default, Wang et al.'s question): the most accurate member's
# holdout top-1 at the fewest GMACs.
echo "== search: singles, ensembles and cascades; thresholds fitted on holdout, reported on test =="
echo "   (objective: the most accurate member's holdout top-1 at the fewest GMACs)"
"$BIN" search --max-models 3 \
  --fit "$OUT"/holdout-*.safetensors --eval "$OUT"/test-*.safetensors \
  --plot "$OUT/fashion_mnist_demo.svg" --spec-out "$OUT/cascade.toml"
echo
echo "== the chosen committee, run live on the test images =="
"$BIN" cascade --backend flex --spec "$OUT/cascade.toml" --data "$DATA/test" --json 2>/dev/null \
  > "$OUT/live.json" || "$BIN" ensemble --backend flex --spec "$OUT/cascade.toml" \
  --data "$DATA/test" --json > "$OUT/live.json"
echo
echo "== what the members reach, and what the committee buys (test, 10,000 images) =="
python3 - "$OUT" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
load = lambda split: {os.path.basename(f)[len(split) + 1:-5]: json.load(open(f))
                      for f in sorted(glob.glob(f"{out}/{split}-*.json"))}
singles, fit = load("test"), load("holdout")
# The member the search's objective names: the most accurate on holdout (nothing chosen on test).
best_name = max(fit, key=lambda n: fit[n]["top1"])
best = singles[best_name]
g1 = best["gmacs"]
print("members alone: " + ", ".join(f"{n} {r['top1']:.2f} % ({r['gmacs']:.4f} GMACs)" for n, r in singles.items()))
e = json.load(open(f"{out}/ensemble.json"))
print(f"ensemble of all {len(singles)}: {e['top1']:.2f} % ({e['top1'] - best['top1']:+.2f} points against {best_name}, "
      f"the most accurate member on holdout) at {e['gmacs'] / g1:.2f}x its GMACs")
c = json.load(open(f"{out}/live.json"))
if "stages" in c:
    import tomllib
    names = [m["name"] for m in tomllib.load(open(f"{out}/cascade.toml", "rb"))["member"]]
    line = (f"searched cascade {' -> '.join(names)} (thresholds {c['thresholds']}, fitted on holdout): "
            f"{c['top1']:.2f} % ({c['top1'] - best['top1']:+.2f} points against {best_name}) at "
            f"{c['avg_gmacs'] / g1:.2f}x its GMACs ({100 * c['exit_fractions'][0]:.1f} % of "
            f"the images stop after the first stage)")
    if c.get("speedup_vs_largest"):
        line += f"; measured live, {c['speedup_vs_largest']:.2f}x the speed of its largest stage alone"
    print(line)
else:
    print(f"searched committee ({c.get('kind', 'ensemble')}): {c['top1']:.2f} % at {c['gmacs'] / g1:.2f}x the GMACs of {best_name}")
PY
echo
echo "plot: $OUT/fashion_mnist_demo.svg"
