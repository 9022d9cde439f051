#!/usr/bin/env bash
# The Fashion-MNIST study (docs/fashion-mnist.md, issue 21): MobileNetV2 at several widths,
# several seeds each, trained from scratch on this CPU with the recipe configs/fashion-mnist.toml;
# then logits caches on holdout/ and test/, the search, and live runs.
#
#   scripts/fashion_mnist_study.sh train   # train (or resume) every member in $MEMBERS
#   scripts/fashion_mnist_study.sh eval    # caches, scaling and search of the finished members
#   scripts/fashion_mnist_study.sh live    # the searched committee and the best member, timed live
#
# `eval` measures accuracy only and may run beside training; `live` measures wall time, so run it
# with nothing else on the machine (no training).
#
# The runs span sessions, and a session's machine keeps nothing outside the repository: the run
# folder defaults to runs/fashion-mnist/ in the repository (config, metrics, checkpoint and best
# weights are committed at each stop; rerunning `train` resumes each member from its last
# finished epoch). The data folder has a fixed absolute path, because a checkpoint stores the
# paths it was trained on and a resume checks that the files are the same.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/committee-target}"
BIN="${BIN:-$CARGO_TARGET_DIR/release/committee}"
MODE="${1:-train}"
W="${2:-runs/fashion-mnist}"
DATA="${DATA:-$HOME/.cache/committee-data/fashion-mnist}"
CONFIG="${CONFIG:-configs/fashion-mnist.toml}"
# model:seed, in training order. Two at a time (JOBS) with one thread each: a flex training
# step keeps little more than one core busy, so side by side doubles the images per second.
MEMBERS="${MEMBERS:-mobilenetv2_050:0 mobilenetv2_050:1 mobilenetv2_035:0 mobilenetv2_035:1
  mobilenetv2_050:2 mobilenetv2_035:2 mobilenetv2_100:0 mobilenetv2_100:1 mobilenetv2_075:0
  mobilenetv2_075:1}"
JOBS="${JOBS:-2}"
mkdir -p "$W"
[ -d "$DATA/test" ] || "$BIN" data fashion-mnist --out "$DATA"
# Provenance, appended per session: commit, host, and per command its start, wall seconds and
# exit status ($W/record.tsv).
{ echo "# session $(date -u +%FT%TZ) $MODE commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)";
  lscpu | grep -E "Model name|^CPU\(s\)|Flags" | sed 's/^/# /' | cut -c1-300; } >> "$W/record.tsv"
record() {  # record CMD...: run it, then append start, wall s, status and the command
  local t0 s=0; t0=$(date +%s)
  "$@" || s=$?
  printf '%s\t%s\t%s\t%s\n' "$(date -u -d @"$t0" +%FT%TZ)" "$(( $(date +%s) - t0 ))" "$s" "$*" >> "$W/record.tsv"
  return $s
}
epochs_of() { grep -E '^epochs *=' "$1" | head -1 | tr -dc '0-9'; }
# Finished: metrics.csv holds one row per epoch of the run's own config.
finished() { [ -f "$1/metrics.csv" ] && [ -f "$1/config.toml" ] &&
  [ "$(( $(wc -l < "$1/metrics.csv") - 1 ))" -ge "$(epochs_of "$1/config.toml")" ]; }

train_member() {
  local m=${1%%:*} s=${1##*:} out="$W/${1%%:*}/seed-${1##*:}" resume=()
  finished "$out" && return
  [ -f "$out/checkpoint.safetensors" ] && resume=(--resume)
  mkdir -p "$out"
  RAYON_NUM_THREADS="${THREADS:-1}" record "$BIN" train --backend flex --config "$CONFIG" \
    --model "$m" --seed "$s" --data "$DATA/train" --val "$DATA/holdout" --workers 1 \
    --out "$out" "${resume[@]}" >> "$out/train.log" 2>&1
  # A finished run needs no optimiser state: drop it, so the repository keeps only best weights.
  finished "$out" && rm -f "$out/checkpoint.safetensors" "$out/model.safetensors"
}

if [ "$MODE" = train ]; then
  for ms in $MEMBERS; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
    train_member "$ms" &
  done
  wait
  exit 0
fi
case "$MODE" in eval|live) ;; *) echo "usage: $0 train|eval|live [WORK_DIR]" >&2; exit 2 ;; esac

if [ "$MODE" = eval ]; then
  # Logits caches of every finished member's best (holdout-selected) epoch, on holdout/ and test/.
  mkdir -p "$W/caches/holdout" "$W/caches/test" "$W/live"
  for ms in $MEMBERS; do
    m=${ms%%:*}; s=${ms##*:}; run="$W/$m/seed-$s"; name="${m#mobilenetv2_}-s$s"
    finished "$run" || { echo "skipping $run (not finished)" >&2; continue; }
    for split in holdout test; do
      c="$W/caches/$split/$name.safetensors"
      [ -f "$c" ] || record "$BIN" eval --backend flex --model "$m" --weights "$run/best.safetensors" \
        --data "$DATA/$split" --name "$name" --save-logits "$c" --json > "$W/caches/$split/$name.json"
    done
  done
  # Kondratyuk et al.'s comparison: each width alone against ensembles of narrower members at no
  # more GMACs (nothing is fitted: test/ only).
  record "$BIN" scaling --logits "$W"/caches/test/*.safetensors --plot "$W/scaling.svg" --json > "$W/scaling.json"
  "$BIN" scaling --logits "$W"/caches/test/*.safetensors > "$W/scaling.txt"
  # Search: thresholds fitted on holdout/, everything reported on test/.
  record "$BIN" search --fit "$W"/caches/holdout/*.safetensors --eval "$W"/caches/test/*.safetensors \
    --max-models 3 --plot "$W/search.svg" --spec-out "$W/cascade.toml" --json > "$W/search.json"
  "$BIN" search --fit "$W"/caches/holdout/*.safetensors --eval "$W"/caches/test/*.safetensors \
    --max-models 3 > "$W/search.txt"
  # The worst-case bound, used once: no committee may cost more than the largest single member
  # when every stage runs (WORST= overrides), so the cascade is never slower than that model.
  WORST="${WORST:-$(python3 -c 'import json,sys; print(max(json.load(open(f))["gmacs"] for f in sys.argv[1:]))' "$W"/caches/test/*.json)}"
  record "$BIN" search --fit "$W"/caches/holdout/*.safetensors --eval "$W"/caches/test/*.safetensors \
    --max-models 3 --worst-case-gmacs "$WORST" > "$W/search-worst-case.txt"
  exit 0
fi

# Live: the searched committee and the most accurate single member (on holdout) run on test/,
# alternated RUNS times, so the wall-time speed-up is measured side by side. First a cost table
# of the members' architectures (random weights, 1 channel, 10 classes, every batch 1-32) so that
# each live cascade also reports its forward time against the one the table predicts.
T="${THREADS:-2}"
models="$(for ms in $MEMBERS; do finished "$W/${ms%%:*}/seed-${ms##*:}" && echo "${ms%%:*}"; done |
  sort -u | paste -sd,)"
RAYON_NUM_THREADS="$T" record "$BIN" bench --backend flex --model "$models" --img-size 56 \
  --in-chans 1 --num-classes 10 --batch "$(seq -s, 1 32)" --warmup 5 --iters 40 --json \
  > "$W/live/costs.json"
best="$(python3 -c 'import json,os,sys
print(os.path.basename(max(sys.argv[1:],key=lambda f:json.load(open(f))["top1"]))[:-5])' \
  "$W"/caches/holdout/*.json)"
m="mobilenetv2_${best%-s*}"; s="${best##*-s}"
for i in $(seq "${RUNS:-3}"); do
  RAYON_NUM_THREADS="$T" record "$BIN" cascade --backend flex --data "$DATA/test" --json \
    --spec "$W/cascade.toml" --costs "$W/live/costs.json" > "$W/live/cascade-$i.json" ||
    RAYON_NUM_THREADS="$T" record "$BIN" ensemble --backend flex --data "$DATA/test" --json \
      --spec "$W/cascade.toml" > "$W/live/cascade-$i.json"
  RAYON_NUM_THREADS="$T" record "$BIN" eval --backend flex --model "$m" \
    --weights "$W/$m/seed-$s/best.safetensors" --data "$DATA/test" --name "$best" --json \
    > "$W/live/best-$i.json"
done
