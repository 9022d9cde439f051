#!/usr/bin/env bash
# Screening on pools of 100 models (docs/committees.md, "Large pools"): the default beam, which
# ranks cascades on about 2,500 rows and fits its finalists on all, against the beam on every
# row (--screen-rows 0), at --max-models K, target = the most accurate model's top-1,
# in-sample. Pools of 100 models x 8,000 images x 50 classes; with BIG=1 also 100 x 50,000 x
# 1,000 (19 GB on disk, about 5 minutes to make).
#   scripts/bench_search_large.sh OUT_DIR [K]    (needs numpy + safetensors: scripts/setup.sh's venv)
set -euo pipefail
out=${1:?out dir}; k=${2:-4}
py=${PYTHON:-python3}
bin=${COMMITTEE:-target/release/committee}
mkdir -p "$out"
echo "host: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(date -u +%F)" | tee "$out/host.txt"
specs="diverse:7:8000:50 varied:8:8000:50 clusters:9:8000:50 ladder:10:8000:50"
[ "${BIG:-0}" = 1 ] && specs="$specs diverse:7:50000:1000"
{
  echo "| pool | target % | screened on | cascade (screened) | avg GMACs | s | MB anon / peak RSS | cascade (all rows) | avg GMACs | s | MB anon / peak RSS | screened ÷ all rows |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
} | tee "$out/table.md"
for spec in $specs; do
  IFS=: read -r kind seed images classes <<< "$spec"
  name="$kind-$seed-$images"; pool="$out/pool-$name"
  [ -d "$pool" ] || "$py" scripts/make_synthetic_caches.py --out "$pool" --models 100 \
      --images "$images" --classes "$classes" --seed "$seed" --kind "$kind" > "$pool.models.txt"
  for rows in 2500 0; do
    # A run already measured in OUT is kept (delete its .json to measure it again).
    [ -s "$out/$name-screen$rows.json" ] && continue
    /usr/bin/time -f "%e %M" -o "$out/$name-screen$rows.time" "$bin" search --logits "$pool"/*.safetensors \
      --holdout-fraction 0 --max-models "$k" --screen-rows "$rows" --json \
      > "$out/$name-screen$rows.json" 2> "$out/$name-screen$rows.log" &
    # Peak RSS (time's %M) counts the page cache of the memory-mapped logits too; the search's
    # own memory is its anonymous RSS, sampled here.
    tpid=$!; anon=0
    while kill -0 "$tpid" 2> /dev/null; do
      for p in $(pgrep -P "$tpid"); do
        a=$(awk '/^RssAnon/ {print $2}' "/proc/$p/status" 2> /dev/null || echo 0)
        [ "${a:-0}" -gt "$anon" ] && anon=$a
      done
      sleep 0.2
    done
    wait "$tpid"
    echo "$anon" > "$out/$name-screen$rows.anon"
  done
  "$py" - "$out" "$name" <<'PY'
import json, sys
out, name = sys.argv[1], sys.argv[2]
row = [name]
cost = {}
for rows in ("2500", "0"):
    r = json.load(open(f"{out}/{name}-screen{rows}.json"))
    sec, kb = open(f"{out}/{name}-screen{rows}.time").read().split()
    anon = int(open(f"{out}/{name}-screen{rows}.anon").read())
    c = r["chosen"]
    cost[rows] = c["in_sample"]["avg_gmacs"]
    if rows == "2500":
        sc = r["screen"]
        row += ["%.3f" % r["objective"]["target_accuracy"],
                "all (target too close to 100 %)" if sc is None else
                "%d%s" % (sc["rows"], "" if sc["trusted"] else ", misled: all rows")]
    row += [" -> ".join(m.replace("synth_", "") for m in c["members"]), "%.4f" % cost[rows],
            sec, "%.0f / %.0f" % (anon / 1024, int(kb) / 1024)]
row.append("%.3f" % (cost["2500"] / cost["0"]))
print("| " + " | ".join(row) + " |")
PY
done | tee -a "$out/table.md"
