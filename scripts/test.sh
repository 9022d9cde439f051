#!/usr/bin/env bash
# The test command: sets up the machine, then runs every test in the release profile
# (the profile the CLI is built with, so tests and CLI share one build).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/committee-target}"
bash scripts/setup.sh
cargo build --release --locked
cargo test --release --locked --workspace -- --test-threads 2
# committee's kernels again on the AVX2 and portable paths (COMMITTEE_ISA caps the instruction
# set; every host lent so far had AVX-512, so these ran only where a test named them), with the
# optimisers' updates, whose tests live beside the optimisers.
for isa in avx2 base; do
  COMMITTEE_ISA=$isa cargo test --release --locked -p committee-ops --lib -- --test-threads 2
  COMMITTEE_ISA=$isa cargo test --release --locked -p committee-train --lib optim -- --test-threads 2
done
