#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each), one after the other.
#   tests/fuzz/run.sh [seconds] [target...]
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). On a stable toolchain the sanitizer
# flags need RUSTC_BOOTSTRAP=1, set here. Corpora grow in tests/fuzz/corpus/<target> (not
# committed); a crash leaves its input in tests/fuzz/artifacts/<target>/ and fails the run: turn
# it into a unit test in the crate it hit before fixing it.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame observation state dns send_queue)
export RUSTC_BOOTSTRAP=1
cargo fuzz build --fuzz-dir tests/fuzz
status=0
for target in "${targets[@]}"; do
    echo "== fuzz $target for ${seconds}s"
    mkdir -p "tests/fuzz/corpus/$target"
    log="$(mktemp)"
    rc=0
    # Earlier crashes (tests/fuzz/regressions/<target>) are replayed first, as seeds.
    seeds=()
    [ -d "tests/fuzz/regressions/$target" ] && seeds=("tests/fuzz/regressions/$target")
    cargo fuzz run --fuzz-dir tests/fuzz "$target" "tests/fuzz/corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || rc=$?
    grep -E "^stat::(number_of_executed_units|peak_rss_mb)|Done [0-9]+ runs" "$log" || true
    if [ "$rc" -ne 0 ]; then
        tail -n 40 "$log"
        echo "!! $target failed (exit $rc); inputs in tests/fuzz/artifacts/$target/"
        status=1
    fi
    rm -f "$log"
done
exit "$status"
