#!/usr/bin/env bash
# Fuzz smoke run: every target for a few seconds (FUZZ_SECONDS, default 10), starting from its
# committed seeds, with AddressSanitizer, debug assertions and overflow checks. Any crash, panic
# or failed invariant fails the run; its input is saved under fuzz/artifacts/<target>/.
# Needs cargo-fuzz (`make fuzz-smoke` installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-10}
targets=(frame_parse frame_decoder reassembly roundtrip connection handshake handshake_mitm)
# cargo-fuzz passes unstable (-Z) flags to rustc; this lets a stable toolchain accept them.
export RUSTC_BOOTSTRAP=1
build=(-O -a)
cargo fuzz build "${build[@]}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
    echo "== fuzz $t for ${seconds}s"
    mkdir -p "$work/$t"
    # New inputs go to the scratch corpus (first directory); the seeds stay as committed.
    cargo fuzz run "${build[@]}" "$t" "$work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 2>&1 |
        grep -Ev '^#[0-9]+	(NEW|REDUCE|pulse)|^INFO|^stat::(slowest|new_units)|^"|^######'
done
echo "== fuzz smoke: no crash in ${#targets[@]} targets"
