#!/usr/bin/env bash
# Search quality and speed on synthetic pools (docs/committees.md, "Large pools"): for each
# pool, the exact search (proven optimum), the beam, the old greedy and Streeter's greedy at
# --max-models K,
# target = the most accurate model's top-1, in-sample (--holdout-fraction 0).
#   scripts/bench_search_pools.sh OUT_DIR [K]     (needs numpy + safetensors: scripts/setup.sh's venv)
set -euo pipefail
out=${1:?out dir}; k=${2:-4}
py=${PYTHON:-python3}
bin=${COMMITTEE:-target/release/committee}
mkdir -p "$out"
echo "host: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(date -u +%F)" | tee "$out/host.txt"
for spec in ladder:1 varied:1 varied:2 clusters:1 clusters:2 diverse:1 diverse:2 ladder:2; do
  kind=${spec%:*}; seed=${spec#*:}; pool="$out/pool-$kind-$seed"
  [ -d "$pool" ] || "$py" scripts/make_synthetic_caches.py --out "$pool" --models 16 --images 8000 \
      --classes 50 --seed "$seed" --kind "$kind" > "$pool.models.txt"
  for s in exact beam greedy streeter; do
    # A strategy already measured in OUT is kept (delete its .json to measure it again).
    [ -s "$out/$kind-$seed-$s.json" ] && continue
    /usr/bin/time -f "%e %M" -o "$out/$kind-$seed-$s.time" "$bin" search --logits "$pool"/*.safetensors \
      --holdout-fraction 0 --max-models "$k" --strategy "$s" --json > "$out/$kind-$seed-$s.json" 2> "$out/$kind-$seed-$s.log"
  done
  "$py" - "$out" "$kind-$seed" <<'PY'
import json, sys
out, name = sys.argv[1], sys.argv[2]
r = {s: json.load(open(f"{out}/{name}-{s}.json")) for s in ("exact", "beam", "greedy", "streeter")}
t = {s: open(f"{out}/{name}-{s}.time").read().split() for s in r}
opt = r["exact"]["chosen"]["in_sample"]["avg_gmacs"]
row = [name, "%.3f" % r["exact"]["objective"]["target_accuracy"], "%.4f" % opt,
       "proven" if r["exact"]["proven_optimal"] else "NOT proven", t["exact"][0]]
for s in ("beam", "greedy", "streeter"):
    g = r[s]["chosen"]["in_sample"]["avg_gmacs"]
    row += ["%.4f" % g, "%.3f" % (g / opt), t[s][0]]
print("| " + " | ".join(row) + " |")
PY
done | tee "$out/table.md"
