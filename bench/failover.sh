#!/usr/bin/env bash
#
# failover: repeats the netns `site-loss` scenario (scenarios/site-loss.sh: real `spdu run`
# processes in network namespaces, one site's link cut, then healed) and reports detection
# (cut → every survivor has dropped the site from its answers) and recovery (heal → every site
# answers with every site) as p50 and p99 over the runs, plus min and max. With fewer than 100
# runs p99 is the largest but one at most: it is computed by nearest rank, so with 10 runs it is
# the maximum. Resolution: the scenario polls each site's DNS every POLL_MS (100 ms) from a client
# namespace, so each figure is quantised to about that.
#
# usage: bench/failover.sh [--runs N] [--sites N] [--hold S] [--cut link|nft]
# Needs root (namespaces), ip, nft, dig. env: SPDU=path/to/spdu (default: cargo build --release).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=10 SITES=3 HOLD=6 CUT=link
while (( $# > 0 )); do
    case $1 in
        --runs) RUNS=$2; shift 2 ;;
        --sites) SITES=$2; shift 2 ;;
        --hold) HOLD=$2; shift 2 ;;
        --cut) CUT=$2; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
done
[[ $RUNS =~ ^[0-9]+$ && $RUNS -ge 1 && $RUNS -le 100 ]] || die "--runs: 1..100"
SCENARIO_SCRIPT=$REPO_ROOT/scenarios/site-loss.sh
[[ -f $SCENARIO_SCRIPT ]] || die "scenarios/site-loss.sh is missing (owned by the scenarios engineer)"
[[ $(id -u) == 0 ]] || die "needs root for network namespaces"
need ip iproute2
need nft nftables
need dig dnsutils

bench_init
SPDU_BIN=$(spdu_binary)
say "site-loss x$RUNS: $SITES sites, cut=$CUT, hold ${HOLD}s, spdu $SPDU_BIN"
printf '%-4s %10s %10s %10s %s\n' run detect_ms recover_ms converge_ms result
for r in $(seq "$RUNS"); do
    # The scenario bounds its own loops; this bounds the whole run as well.
    line=$(timeout $(( 4 * HOLD + 90 )) bash "$SCENARIO_SCRIPT" --sites "$SITES" --spdu "$SPDU_BIN" \
        --cut "$CUT" --hold "$HOLD" 2>"$WORK/run$r.err" | grep '^SUMMARY' | tail -1) || true
    [[ -n $line ]] || line="SUMMARY result=ERROR reason=no_summary_line"
    get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
    res=$(get result)
    printf '%-4s %10s %10s %10s %s\n' "$r" "$(get detect_ms)" "$(get recover_ms)" "$(get converge_ms)" "$res"
    if [[ $res == PASS ]]; then
        echo "$(get detect_ms) $(get recover_ms)" >>"$WORK/ok.txt"
    else
        say "run $r: $line"; tail -5 "$WORK/run$r.err" >&2
    fi
done
[[ -s $WORK/ok.txt ]] || die "no run passed"
# pct P: nearest-rank percentile of numbers on stdin.
pct() { sort -g | awk -v p="$1" '{ v[NR] = $1 } END { r = int((p * NR + 99) / 100); if (r < 1) r = 1; print v[r] }'; }
echo
printf '%-10s %6s %6s %6s %6s %s\n' figure p50 p99 min max "runs passed"
for col in 1 2; do
    name=$([[ $col == 1 ]] && echo detect_ms || echo recover_ms)
    vals=$(awk -v c=$col '{ print $c }' "$WORK/ok.txt")
    printf '%-10s %6s %6s %6s %6s %s\n' "$name" "$(pct 50 <<<"$vals")" "$(pct 99 <<<"$vals")" \
        "$(sort -g <<<"$vals" | head -1)" "$(sort -g <<<"$vals" | tail -1)" "$(wc -l <"$WORK/ok.txt")/$RUNS"
done
