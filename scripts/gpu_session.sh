#!/usr/bin/env bash
# GPU measurements for docs/benchmarks.md ("GPU") in three phases, each small enough for one
# short session on a lent machine: committee's wgpu backend (Vulkan on the NVIDIA driver)
# against PyTorch CUDA, timm models with random weights.
#
#   COMMITTEE=target/release/committee OUT=gpu-results bash scripts/gpu_session.sh tests|infer|train
#
# tests: the timm parity fixtures and the wgpu CLI tests, run on the GPU (TESTS=dir of test
#        binaries built by `cargo test --release --workspace --no-run`).
# infer: startup with and without the caches (autotune results in target/environment, the
#        driver's shader cache), then the four issue models at batch 1/32/128, 224 px.
# train: training steps (bench --train) and a short real run on a Fashion-MNIST folder
#        (DATA=dir with train/ and val/), each against PyTorch on the same GPU.
set -uo pipefail
C=${COMMITTEE:-target/release/committee}
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
MODELS=${MODELS:-efficientnet_b0,resnet50,mobilenetv2_100,vit_base_patch16_224}
now() { date +%s.%N; }
secs() { awk "BEGIN { printf \"%.2f\", $(now) - $1 }"; }
say() { echo "== $*" | tee -a "$OUT/summary.txt"; }

case "${1:-}" in
tests)
    for t in parity:parity_wgpu bench: train:trains_on_wgpu; do
        bin=${t%%:*} filter=${t#*:}
        say "test $bin $filter"
        CARGO_MANIFEST_DIR=$PWD/crates/zoo timeout 240 "$TESTS/$bin" $filter --test-threads 1 --nocapture 2>&1 | tee "$OUT/test_$bin.log" | tail -25
        say "exit ${PIPESTATUS[0]}"
    done
    ;;
infer)
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$OUT/summary.txt"
    # Startup of one model in four cache states. The autotune cache lives in
    # <outermost Cargo workspace>/target/environment (we run inside the repository).
    probe() {
        local t0; t0=$(now)
        timeout 200 "$C" bench --model resnet50 --backend wgpu --batch 32 --warmup 0 --iters 5 \
            --json >"$OUT/startup_$1.json"
        say "startup $1: process $(secs "$t0") s; $(grep -o '"first_ms": [0-9.]*' "$OUT/startup_$1.json"); $(grep -o '"p50_ms": [0-9.]*' "$OUT/startup_$1.json")"
    }
    rm -rf target/environment ~/.cache/nvidia ~/.nv
    probe cold
    probe warm
    du -sh target/environment ~/.cache/nvidia 2>&1 | tee -a "$OUT/summary.txt"
    find target/environment -type f | head | tee -a "$OUT/summary.txt"
    rm -rf target/environment
    probe driver-cache-only
    rm -rf ~/.cache/nvidia ~/.nv
    probe autotune-cache-only
    say "wgpu, batch 1/32/128"
    timeout 300 "$C" bench --model "$MODELS" --backend wgpu --batch 1,32,128 --warmup 5 \
        --iters 20 --json >"$OUT/wgpu.json"
    say "exit $?"
    for math in default fp32; do
        say "PyTorch CUDA, cuda-math $math"
        timeout 120 python3 scripts/bench_pytorch.py --device cuda --cuda-math $math \
            --model "$MODELS" --batch 1,32,128 --warmup 5 --iters 20 --ours "$OUT/wgpu.json" \
            2>&1 | tee -a "$OUT/summary.txt"
    done
    ;;
train)
    TM=${TRAIN_MODELS:-resnet50,efficientnet_b0,mobilenetv2_100}
    say "training steps, wgpu, batch 32, 224 px"
    timeout 240 "$C" bench --train --model "$TM" --backend wgpu --batch 32 --warmup 3 --iters 10 \
        --json >"$OUT/wgpu_train.json"
    say "exit $?"
    say "PyTorch CUDA training steps, cuda-math default"
    timeout 120 python3 scripts/bench_pytorch.py --train --device cuda --model "$TM" --batch 32 \
        --warmup 3 --iters 10 --ours "$OUT/wgpu_train.json" 2>&1 | tee -a "$OUT/summary.txt"
    # A real run: the study's recipe (mobilenetv2_100, 28 px, batch 64, lr 0.02) on DATA.
    say "committee train on wgpu"
    t0=$(now)
    timeout 200 "$C" train --model mobilenetv2_100 --data "$DATA/train" --val "$DATA/val" \
        --out "$OUT/run-wgpu" --epochs 2 --batch 64 --lr 0.02 --warmup-epochs 0.3 --seed 0 \
        --backend wgpu >"$OUT/train_wgpu.log" 2>&1
    say "exit $? after $(secs "$t0") s"
    cat "$OUT/run-wgpu/metrics.csv" | tee -a "$OUT/summary.txt"
    say "PyTorch CUDA train_pytorch.py"
    t0=$(now)
    timeout 200 python3 scripts/train_pytorch.py --model mobilenetv2_100 --data "$DATA/train" \
        --val "$DATA/val" --epochs 2 --batch 64 --lr 0.02 --warmup-epochs 0.3 --seed 0 \
        --threads 16 --device cuda 2>&1 | tee -a "$OUT/summary.txt"
    say "after $(secs "$t0") s"
    ;;
*)
    echo "usage: $0 tests|infer|train" >&2
    exit 2
    ;;
esac
