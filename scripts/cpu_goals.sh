#!/usr/bin/env bash
# Every speed goal of the CPU issue on this host, in one run (about 12 minutes on 2 cores):
# inference of the four models at batch 1 and 8, committee's best (`--dtype bf16` where the
# CPU has AVX512-BF16 or AMX) against PyTorch's best (bf16 autocast + channels_last) and
# committee f32 against PyTorch fp32 channels_last; training steps at 224 px, batch 8,
# against PyTorch eager fp32 (and, on bf16 hosts, `--dtype bf16` beside PyTorch's best).
# Ours and PyTorch's run back to back per model and round, and each goal is judged on the
# median of the per-round ratios (these hosts drift by tens of percent within minutes).
# Writes OUT/goals.md (host, date, binary, one row per goal) beside the raw JSON, and for
# each goal missed a `bench --profile` of ours under OUT/profiles/ (NO_PROFILES=1 skips them);
# REPORT_ONLY=1 writes the table again from the JSON already in OUT_DIR.
#   [ROUNDS=3] [MODELS=a,b] [COMMITTEE=bin] [PYTHON=venv/bin/python] scripts/cpu_goals.sh OUT_DIR [THREADS]
set -euo pipefail
OUT=${1:?out dir}; THREADS=${2:-2}
export ROUNDS=${ROUNDS:-3} PYTHON=${PYTHON:-venv/bin/python}
export COMMITTEE=${COMMITTEE:-target/release/committee}
MODELS=${MODELS:-efficientnet_b0,resnet50,mobilenetv2_100,vit_base_patch16_224}
here=$(dirname "$0")
bf16=
if [ -z "${REPORT_ONLY:-}" ]; then
  mkdir -p "$OUT"
  lscpu > "$OUT/lscpu.txt"
  { date -u; git -C "$here/.." rev-parse --short HEAD 2> /dev/null || true; } > "$OUT/when.txt"
  grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo && bf16=1
  if [ -n "$bf16" ]; then
    DTYPE=bf16 "$here/bench_best_alternated.sh" "$OUT/infer-bf16" "$MODELS" 1,8 "$THREADS"
  fi
  DTYPE=f32 "$here/bench_best_alternated.sh" "$OUT/infer-f32" "$MODELS" 1,8 "$THREADS"
  BF16=$bf16 PYTHON=$PYTHON "$here/bench_train_cpu.sh" "$OUT/train" "$MODELS" 8 "$THREADS" "$ROUNDS"
  date -u >> "$OUT/when.txt"
else
  # The host the JSON came from, not this one.
  grep -qwE 'avx512_bf16|amx_bf16' "$OUT/lscpu.txt" && bf16=1
fi
"$PYTHON" - "$OUT" "$MODELS" "$ROUNDS" "$bf16" <<'PY'
import json, os, statistics, sys
out, models, rounds, bf16 = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4] == "1"

def rate(path, batch):
    return next(r["img_per_s"] for r in json.load(open(path)) if r["batch"] == batch)

def row(goal, model, batch, ours, theirs):
    ratio = [o / t for o, t in zip(ours, theirs)]
    med = statistics.median(ratio)
    if "not a goal" in goal:
        verdict = "ahead" if med >= 1.0 else "behind"
    else:
        verdict = "met" if med >= 1.0 else "**not met**"
    return (f"| {goal} | {model} | {batch} | {med:.2f}x ({min(ratio):.2f}-{max(ratio):.2f}) "
            f"| {verdict} |")

def infer(kind):
    d = f"{out}/infer-{kind}"
    return [row(f"inference {kind}", m, b,
                [rate(f"{d}/committee-{m}-r{r}.json", b) for r in range(1, rounds + 1)],
                [rate(f"{d}/torch-{m}-r{r}.json", b) for r in range(1, rounds + 1)])
            for m in models for b in (1, 8)]

def train(ours, theirs, goal):
    d = f"{out}/train"
    return [row(goal, m, 8,
                [rate(f"{d}/{ours}-{m}-{r}.json", 8) for r in range(1, rounds + 1)],
                [rate(f"{d}/{theirs}-{m}-{r}.json", 8) for r in range(1, rounds + 1)])
            for m in models]

cpu = next((l.split(":", 1)[1].strip() for l in open(f"{out}/lscpu.txt")
            if l.startswith("Model name")), "unknown CPU")
flags = open(f"{out}/lscpu.txt").read()
features = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
lines = [f"# Issue goals on {cpu} ({', '.join(features) or 'no AVX-512'})", "",
         "Per-round ratio committee / PyTorch, median (range) of "
         f"{rounds} rounds, ours and PyTorch's back to back; " + open(f"{out}/when.txt").read()
         .replace("\n", " ").strip(), "",
         "| goal (committee against PyTorch) | model | batch | ratio | verdict |",
         "|---|---|---|---|---|"]
if bf16:
    lines += [l.replace("inference bf16", "inference, best: bf16 vs bf16 + channels_last")
              for l in infer("bf16")]
lines += [l.replace("inference f32", "inference f32 vs fp32 channels_last") for l in infer("f32")]
lines += train("ours", "torch", "training f32 vs eager fp32")
if bf16:
    lines += train("oursbf16", "torch", "training bf16 vs eager fp32 (not a goal)")
    lines += train("oursbf16", "torchbest", "training bf16 vs bf16 + channels_last (not a goal)")
open(f"{out}/goals.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
# The goals missed, as "kind dtype model batch" lines, for the profiles below.
missed = []
for l in lines:
    cells = [c.strip() for c in l.split("|")[1:-1]]
    if len(cells) == 5 and cells[4] == "**not met**":
        goal, model, batch = cells[0], cells[1], cells[2]
        kind = "train" if goal.startswith("training") else "infer"
        dtype = "bf16" if "bf16 vs" in goal else "f32"
        missed.append(f"{kind} {dtype} {model} {batch}")
open(f"{out}/missed.txt", "w").write("".join(m + "\n" for m in missed))
PY
# Each goal missed, profiled on this host right away (`bench --profile`: time per kind of layer,
# and for a training step per part of it), so that whoever reads the table has the next step's
# data from the same host: hosts change between sessions. NO_PROFILES=1 skips this.
if [ -z "${REPORT_ONLY:-}" ] && [ -z "${NO_PROFILES:-}" ] && [ -s "$OUT/missed.txt" ]; then
  mkdir -p "$OUT/profiles"
  while read -r kind dtype model batch; do
    args=(--model "$model" --dtype "$dtype" --batch "$batch" --threads "$THREADS" --profile)
    if [ "$kind" = train ]; then
      args+=(--train --img-size 224 --warmup 1 --iters 2)
    else
      args+=(--warmup 2 --iters 5)
    fi
    echo "profiling $kind $dtype $model batch $batch"
    "$COMMITTEE" bench "${args[@]}" < /dev/null > "$OUT/profiles/$kind-$dtype-$model-b$batch.txt" 2>&1
  done < "$OUT/missed.txt"
fi
