#!/usr/bin/env bash
#
# smoke: runs every bench very briefly, to prove the scripts still work. Asserts nothing about
# timings (this machine's figures are in BENCHMARKS.md); fails only if a bench cannot run.
# The netns failover bench needs root; without it that part is skipped, loudly.
#
# usage: bench/smoke.sh        env: SPDU=path/to/spdu (default: cargo build --release)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SPDU=$(spdu_binary)
export SPDU
started=$(date +%s)
step() { say "== $* ($(( $(date +%s) - started )) s)"; }

step "dns-throughput (1 run of 1 s)"
"$BENCH_DIR/dns-throughput.sh" --runs 1 --duration 1

step "dns-throughput --signed (1 run of 1 s)"
if "$SPDU" dnssec-keygen --help >/dev/null 2>&1; then
    "$BENCH_DIR/dns-throughput.sh" --signed --runs 1 --duration 1
else
    say "SKIPPED: $SPDU does not sign (no dnssec-keygen command)"
fi

step "failover (1 run)"
if [[ $(id -u) == 0 ]]; then
    "$BENCH_DIR/failover.sh" --runs 1 --hold 3
else
    say "SKIPPED: failover needs root for network namespaces"
fi

step "sim (10 nodes, 1 seed)"
(cd "$REPO_ROOT" && SPDU_BENCH_SIM_MAX=10 SPDU_BENCH_SIM_SEEDS=1 \
    cargo bench --locked -q -p spdu-gossip --features sim --bench sim)

step "idle-traffic (3 nodes, 2 s window)"
"$BENCH_DIR/idle-traffic.sh" --nodes 3 --settle 2 --window 2

step "footprint (1 round, 2 s settle, 1 cold start)"
"$BENCH_DIR/footprint.sh" --rounds 1 --settle 2 --runs 1

step "done"
