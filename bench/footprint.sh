#!/usr/bin/env bash
#
# footprint: memory of one `spdu run` node with 2, 10 and 50 peers, and cold start to the first
# DNS answer; knotd serving the equivalent static zone is the reference for both.
#
# RSS: real processes on loopback (127.0.70.x), every node with the same roster.
#   2 peers: 3 nodes, all running.   10 peers: 11 nodes, all running.
#   50 peers: a roster of 51 of which 11 run (node 1 and 10 peers); the other 40 are absent
#   (addresses where nothing listens), so node 1 probes 40 dead peers and gossips with 10.
# Node 1's VmRSS and VmHWM (peak) are read after SETTLE seconds (default 15) of running,
# once per round; knotd's the same way, started in the same round.
#
# Cold start: spawn → first NOERROR answer with a record (bench/coldstart.py polls every 1 ms):
# a one-node spdu (no peers) and knotd, alternately, RUNS times each.
#
# usage: bench/footprint.sh [--rounds N] [--settle S] [--runs N]
# env:   SPDU=path/to/spdu (default: cargo build --release).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=3 SETTLE=15 RUNS=10
while (( $# > 0 )); do
    case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --settle) SETTLE=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
done
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -ge 1 && $ROUNDS -le 20 ]] || die "--rounds: 1..20"
[[ $SETTLE =~ ^[0-9]+$ && $SETTLE -le 300 ]] || die "--settle: 0..300"
[[ $RUNS =~ ^[0-9]+$ && $RUNS -ge 1 && $RUNS -le 100 ]] || die "--runs: 1..100"
need knotd knot
command -v python3 >/dev/null || need python3 python3-minimal

bench_init
SPDU_BIN=$(spdu_binary)
DNS_PORT=15400
NET=127.0.70

# Keys for 51 nodes, once.
mkdir -p "$WORK/keys"
for i in $(seq 51); do keygen "$WORK/keys" "n$i" >"$WORK/keys/n$i.pub"; done

# roster_round TOTAL RUNNING: configs for nodes 1..TOTAL (n$i at $NET.$i), starts 1..RUNNING,
# waits SETTLE s, prints node 1's "rss_kib hwm_kib", stops them.
roster_round() {
    local total=$1 running=$2 dir="$WORK/r$1" i pids=()
    mkdir -p "$dir"
    for i in $(seq "$total"); do cp "$WORK/keys/n$i.key" "$dir/"; done
    mesh_configs "$dir" "$WORK/keys" "$total" "$NET" "$DNS_PORT"
    for i in $(seq "$running"); do
        "$SPDU_BIN" run --config "$dir/n$i.toml" >>"$dir/n$i.log" 2>&1 &
        pids+=($!); track $!
    done
    sleep "$SETTLE"
    kill -0 "${pids[0]}" 2>/dev/null || die "node 1 exited: $(tail -5 "$dir/n1.log")"
    echo "$(rss_kib "${pids[0]}") $(hwm_kib "${pids[0]}")"
    for i in "${pids[@]}"; do untrack_kill "$i"; done
}

knot_round() {
    knot_setup "$WORK/knot" "$NET.200" "$DNS_PORT"
    knotd -c "$WORK/knot/knot.conf" >>"$WORK/knot.log" 2>&1 &
    local pid=$!; track "$pid"
    sleep "$SETTLE"
    kill -0 "$pid" 2>/dev/null || die "knotd exited: $(tail -5 "$WORK/knot.log")"
    echo "$(rss_kib "$pid") $(hwm_kib "$pid")"
    untrack_kill "$pid"
}

say "RSS: $ROUNDS rounds, ${SETTLE}s settle each"
for r in $(seq "$ROUNDS"); do
    echo "$r spdu-2 $(roster_round 3 3)" >>"$WORK/rss.txt"
    echo "$r spdu-10 $(roster_round 11 11)" >>"$WORK/rss.txt"
    echo "$r spdu-50 $(roster_round 51 11)" >>"$WORK/rss.txt"
    echo "$r knotd $(knot_round)" >>"$WORK/rss.txt"
    tail -4 "$WORK/rss.txt" >&2
done

# Cold start: one node, no peers, on its own address; knot on another.
spdu_config "$WORK/cold.toml" cold "$NET.100" "$DNS_PORT" '"192.0.2.10"'
cp "$WORK/keys/n1.key" "$WORK/cold.key"
knot_setup "$WORK/knotcold" "$NET.201" "$DNS_PORT"
say "cold start: $RUNS runs each, alternating"
for r in $(seq "$RUNS"); do
    s=$(python3 "$BENCH_DIR/coldstart.py" "$NET.100" "$DNS_PORT" "api.$ORIGIN" 10 -- \
        "$SPDU_BIN" run --config "$WORK/cold.toml") || die "spdu cold start failed"
    k=$(python3 "$BENCH_DIR/coldstart.py" "$NET.201" "$DNS_PORT" "api.$ORIGIN" 10 -- \
        knotd -c "$WORK/knotcold/knot.conf") || die "knotd cold start failed"
    echo "$r $s $k" >>"$WORK/cold.txt"
    say "  run $r: spdu $s ms, knotd $k ms"
done

echo
printf '%-34s %-28s %s\n' figure "median [min-max]" "runs"
for who in spdu-2 spdu-10 spdu-50 knotd; do
    read -r m lo hi n < <(awk -v w="$who" '$2 == w { print $3 / 1024 }' "$WORK/rss.txt" | stats)
    printf '%-34s %-28s %s\n' "RSS MiB $who" "$m [$lo-$hi]" "$n"
    read -r m lo hi n < <(awk -v w="$who" '$2 == w { print $4 / 1024 }' "$WORK/rss.txt" | stats)
    printf '%-34s %-28s %s\n' "peak RSS (VmHWM) MiB $who" "$m [$lo-$hi]" "$n"
done
read -r m lo hi n < <(awk '{ print $2 }' "$WORK/cold.txt" | stats)
printf '%-34s %-28s %s\n' "cold start ms spdu (no peers)" "$m [$lo-$hi]" "$n"
read -r m lo hi n < <(awk '{ print $3 }' "$WORK/cold.txt" | stats)
printf '%-34s %-28s %s\n' "cold start ms knotd" "$m [$lo-$hi]" "$n"
read -r m lo hi n < <(awk '{ print $2 / $3 }' "$WORK/cold.txt" | stats)
printf '%-34s %-28s %s\n' "cold start ratio spdu/knotd" "$m [$lo-$hi]" "$n"
