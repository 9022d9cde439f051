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

# all:   one call of at most ~8 minutes for the GPU issue: the new paths' tests and parity on
#        the GPU, f16 accuracy against PyTorch's own f16, inference in f32 (ours with and
#        without the matrix-product convolutions, the Vulkan/SPIR-V build) and f16, training
#        steps with and without the GPU BatchNorm and im2col, each beside PyTorch CUDA.
#        BIN=dir holding committee, committee-vulkan, ops-tests, parity-tests, train-f16-tests.
# switches: batch 1 and 8 under each combination of the GPU convolution switches (~2 min).
case "${1:-}" in
all)
    START=$(now)
    BUDGET=${BUDGET:-500} # seconds: later, optional steps are skipped past it
    B=${BIN:-.gpu/bin}
    C=$B/committee
    R=$OUT/r
    mkdir -p "$R"
    export PYTHONUNBUFFERED=1
    { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
      lscpu | grep -E 'Model name|^CPU\(s\)'; date -u; } 2>&1 | tee -a "$OUT/summary.txt"
    # name timeout command...: output to $R/name.log and appended to $OUT/all.log (one file
    # comes back even if the call is cut short), exit status and wall to the summary.
    run() {
        local name=$1 limit=$2 t0; shift 2; t0=$(now)
        timeout "$limit" "$@" >"$R/$name.log" 2>&1
        say "$name: exit $? in $(secs "$t0") s"
        { echo "=== $name: $*"; cat "$R/$name.log"; } >>"$OUT/all.log"
    }
    left() { awk "BEGIN { exit !($(now) - $START < $BUDGET - ${1:-0}) }"; }
    run ops_tests 100 "$B/ops-tests" gpu:: --test-threads 1
    tail -4 "$R/ops_tests.log" | tee -a "$OUT/summary.txt"
    CARGO_MANIFEST_DIR=$PWD/crates/zoo run parity 120 "$B/parity-tests" parity_wgpu --test-threads 1 --nocapture
    tail -4 "$R/parity.log" | tee -a "$OUT/summary.txt"
    # Mixed-precision f16 training against f32 and PyTorch's own distance (tests/train_f16.rs).
    if [ -x "$B/train-f16-tests" ]; then
        run train_f16 90 "$B/train-f16-tests" --test-threads 1 --nocapture
        tail -4 "$R/train_f16.log" | tee -a "$OUT/summary.txt"
    fi
    F=tests/fixtures/parity
    run predict_f16 60 "$C" predict --backend wgpu --dtype f16 --model mobilenetv2_035 \
        --weights $F/mobilenetv2_035.safetensors --tensor-in $F/mobilenetv2_035.io.safetensors \
        --tensor-out "$R/f16.safetensors"
    (cd scripts && run f16_check 60 python3 f16_check.py --device cuda \
        --ours mobilenetv2_035="$R/f16.safetensors")
    grep -A8 '"mobilenetv2_035"' "$R/f16_check.log" | tee -a "$OUT/summary.txt"
    # Inference: PyTorch, then ours, f32 and f16.
    run torch_f32 90 python3 scripts/bench_pytorch.py --device cuda --cuda-math fp32 --json \
        --model "$MODELS" --batch 1,32,128 --warmup 5 --iters 20
    run ours_f32 120 "$C" bench --backend wgpu --model "$MODELS" --batch 1,32,128 --warmup 3 --iters 10 --json
    run torch_f16 90 python3 scripts/bench_pytorch.py --device cuda --half --channels-last --json \
        --model "$MODELS" --batch 1,32,128 --warmup 5 --iters 20
    run ours_f16 120 "$C" bench --backend wgpu --dtype f16 --model "$MODELS" --batch 1,32,128 --warmup 3 --iters 10 --json
    # Training steps at 224 px, batch 32.
    TM=${TRAIN_MODELS:-resnet50,efficientnet_b0,mobilenetv2_100,vit_base_patch16_224}
    run torch_train 90 python3 scripts/bench_pytorch.py --train --device cuda --cuda-math fp32 --json \
        --model "$TM" --batch 32 --warmup 3 --iters 10
    run ours_train 150 "$C" bench --train --backend wgpu --model "$TM" --batch 32 --warmup 2 --iters 5 --json
    # Mixed-precision f16 training (autocast + GradScaler against ours); warmup long enough for
    # the loss scale to settle (each skipped step halves it from 2^16).
    left 60 && run torch_train_f16 60 python3 scripts/bench_pytorch.py --train --half --device cuda --json \
        --model "$TM" --batch 32 --warmup 5 --iters 10
    left 60 && run ours_train_f16 90 "$C" bench --train --dtype f16 --backend wgpu --model "$TM" --batch 32 \
        --warmup 5 --iters 5 --json
    # Each switch off, side by side with the runs above.
    left 60 && COMMITTEE_GPU_IM2COL=0 COMMITTEE_CONV_MATMUL=0 run ours_f32_burnconv 60 "$C" bench \
        --backend wgpu --model "$MODELS" --batch 32 --warmup 2 --iters 3 --json
    left 60 && [ -x "$B/committee-vulkan" ] && run vulkan_f16 60 "$B/committee-vulkan" bench --backend wgpu \
        --dtype f16 --model "$MODELS" --batch 32,128 --warmup 3 --iters 10 --json
    left 60 && [ -x "$B/committee-vulkan" ] && run vulkan_f32 60 "$B/committee-vulkan" bench --backend wgpu \
        --model "$MODELS" --batch 32,128 --warmup 3 --iters 10 --json
    left 40 && COMMITTEE_GPU_BN=0 run ours_train_burnbn 40 "$C" bench --train --backend wgpu \
        --model resnet50,mobilenetv2_100 --batch 32 --warmup 2 --iters 3 --json
    left 40 && COMMITTEE_GPU_IM2COL=0 run ours_train_burnconv 40 "$C" bench --train --backend wgpu \
        --model resnet50 --batch 32 --warmup 2 --iters 3 --json
    left 30 && COMMITTEE_GPU_IM2COL=channel run ours_train_channel 30 "$C" bench --train --backend wgpu \
        --model resnet50 --batch 32 --warmup 2 --iters 3 --json
    left 30 && COMMITTEE_GPU_IM2COL=channel run ours_f32_channel 30 "$C" bench --backend wgpu \
        --model resnet50,efficientnet_b0 --batch 32,128 --warmup 2 --iters 5 --json
    # Where the time goes now.
    left 40 && run profile_infer 40 "$C" bench --profile --backend wgpu --model resnet50,efficientnet_b0 \
        --batch 32 --warmup 2 --iters 3
    if left 40; then
        CUBECL_DEBUG_OPTION=profile CUBECL_DEBUG_LOG=$R/kernels.log run kernels_train 40 "$C" bench \
            --train --backend wgpu --model resnet50 --batch 32 --warmup 1 --iters 2
        run kernels_train_top 20 python3 scripts/cubecl_profile.py "$R/kernels.log" --top 25
        rm -f "$R/kernels.log"
    fi
    python3 scripts/gpu_table.py "$R" 2>&1 | tee -a "$OUT/summary.txt"
    say "total $(secs "$START") s"
    rm -rf "$R"
    ;;
switches)
    # Small batches under each combination of the GPU convolution switches, to choose per
    # shape: whole-model timings (batch 1 and 8), then per-layer profiles at batch 1.
    C=${BIN:-.gpu/bin}/committee
    M=${MODELS:-efficientnet_b0,resnet50,mobilenetv2_100,vit_base_patch16_224}
    for sw in "" "COMMITTEE_GPU_IM2COL=0" "COMMITTEE_CONV_MATMUL=0" \
        "COMMITTEE_GPU_IM2COL=0 COMMITTEE_CONV_MATMUL=0"; do
        say "switches off: ${sw:-none}"
        env $sw timeout 60 "$C" bench --backend wgpu --model "$M" --batch 1,8 --warmup 5 --iters 20 \
            2>&1 | grep -v '^backend' | tee -a "$OUT/summary.txt"
    done
    for sw in "" "COMMITTEE_GPU_IM2COL=0 COMMITTEE_CONV_MATMUL=0"; do
        say "profile, switches off: ${sw:-none}"
        env $sw timeout 60 "$C" bench --profile --backend wgpu --model efficientnet_b0,resnet50 \
            --batch 1 --warmup 3 --iters 5 2>&1 | grep -v '^backend' | tee -a "$OUT/summary.txt"
    done
    ;;
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
