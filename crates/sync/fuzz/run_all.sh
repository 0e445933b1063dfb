#!/usr/bin/env bash
# Runs every sync fuzz target for SECONDS each (default 600 = the 10-minute run), one after another.
# Usage: crates/sync/fuzz/run_all.sh [SECONDS]   (needs the nightly toolchain and cargo-fuzz)
# Seeds (one valid message per codec) live in fuzz/seeds/<target>; the growing corpus in fuzz/corpus (ignored).
set -uo pipefail
seconds="${1:-600}"
cd "$(dirname "$0")/.."
logs="$(mktemp -d)"
for target in decode_any decode_fp32 decode_bf16 decode_fp16 decode_int8 decode_topk decode_dct outer_state; do
    mkdir -p "$PWD/fuzz/seeds/$target" "$PWD/fuzz/corpus/$target"
    echo "== $target for ${seconds}s (log: $logs/$target.log)"
    if ! cargo +nightly fuzz run "$target" "$PWD/fuzz/corpus/$target" "$PWD/fuzz/seeds/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 >"$logs/$target.log" 2>&1; then
        tail -40 "$logs/$target.log"
        echo "$target FAILED"
        exit 1
    fi
    grep -E "^Done" "$logs/$target.log"
done
echo "all sync fuzz targets ran ${seconds}s each with no crash"
