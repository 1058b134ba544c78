#!/usr/bin/env bash
# Long fuzzing run: each target in turn for RUNS executions (default 10 million), without a
# sanitizer (the core is safe Rust; overflow checks and debug assertions stay on) and at low
# priority. Each target's corpus grows in fuzz/corpus-run/<target>, seeded from fuzz/corpus/.
#
#   fuzz/long.sh [RUNS] [TARGET...]
#
# FUZZ_MAX_SECONDS, if set, also stops each target after that many seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10000000}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame_parse handshake reassembly roundtrip frame_decoder handshake_mitm connection)
export RUSTC_BOOTSTRAP=1 # cargo-fuzz passes -Z flags; this lets a stable toolchain take them
for t in "${targets[@]}"; do
    build=(-O -a -s none --target-dir fuzz/target-long)
    if [ "$t" = handshake_mitm ]; then
        # Its input picks a message, an edit and an offset: comparison tracing teaches the fuzzer
        # nothing there, and in the X25519 field arithmetic it costs three quarters of the speed.
        build=(-O -a -s none --no-trace-compares --target-dir fuzz/target-long-notc)
    fi
    cargo fuzz build "${build[@]}" "$t"
    mkdir -p "fuzz/corpus-run/$t"
    echo "== $t: $runs runs"
    start=$(date +%s)
    nice -n 10 cargo fuzz run "${build[@]}" "$t" "fuzz/corpus-run/$t" "fuzz/corpus/$t" -- \
        -runs="$runs" -max_total_time="${FUZZ_MAX_SECONDS:-0}" -print_final_stats=1 2>&1 |
        grep --line-buffered -v '^#[0-9]*	\(NEW\|REDUCE\)'
    echo "== $t: $(($(date +%s) - start)) s"
done
