#!/usr/bin/env bash
# Packs what `scripts/gpu_session.sh all` runs on a lent GPU machine (which has no Rust
# toolchain) into .gpu/bin.tar.xz: the release CLI, the same CLI built with the `vulkan`
# feature, and the three test binaries the session runs, stripped and compressed so that they
# fit, with the repository, in the 64 MiB a device call carries. Also fetches the Vulkan and
# GL loaders (.gl/) the device notes ask for. Both folders are git-ignored (.git/info/exclude).
#
#   bash scripts/gpu_pack.sh     # then: device run, carry [".gpu", ".gl"],
#                                # command: bash scripts/gpu_remote.sh
# The repository travels too: runs/, docs/, weights/ and the image fixtures must be moved
# aside for that call (the checkout is ~100 MB with them, ~18 MB without).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/committee-target}"
T=$CARGO_TARGET_DIR/release
mkdir -p .gpu/stage
cargo build --release --locked
cp "$T/committee" .gpu/stage/committee
cargo build --release --locked --features vulkan
cp "$T/committee" .gpu/stage/committee-vulkan
cargo build --release --locked   # leave the default build in place
# The test binaries, by the names cargo prints for them.
tests=$(cargo test --release --locked --workspace --no-run 2>&1 | grep -o '(/[^)]*)' | tr -d '()')
cp "$(echo "$tests" | grep '/committee_ops-' | head -1)" .gpu/stage/ops-tests
cp "$(echo "$tests" | grep '/parity-' | head -1)" .gpu/stage/parity-tests
cp "$(echo "$tests" | grep '/train_f16-' | head -1)" .gpu/stage/train-f16-tests
strip .gpu/stage/*
# A dictionary larger than one binary: the four share most of their code (~36 MB in all).
tar -C .gpu/stage -cf - . | xz -9e --lzma2=preset=9,dict=768MiB -T1 >.gpu/bin.tar.xz
rm -rf .gpu/stage
ls -la .gpu
if [ ! -d .gl ]; then
    mkdir -p .gl /tmp/amd64/partial
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    apt-get $o update -qq
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
