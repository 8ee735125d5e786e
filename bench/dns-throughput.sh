#!/usr/bin/env bash
#
# dns-throughput: dnsperf against `spdu run` (one node, no peers: its answer set is itself)
# and against knotd serving the equivalent static zone, in turn (spdu, knot, spdu, knot, …),
# same query mix, same duration, same pinning: the server on core 1, dnsperf on core 0.
#
# Query mix (bench/queries.txt, replayed in order): api A 40 %, api AAAA 30 %, apex SOA 10 %,
# NXDOMAIN 20 %; every query with EDNS (dnsperf -e), as resolvers send them.
#
# Prints one line per run, then per server the median [min–max] of QPS, mean latency, loss and
# the server's CPU time per query, and the ratio spdu/knot of the medians and pair by pair.
#
# --policy P serves `api` under a [[zone.record]] with that failover policy (all, priority,
# weighted, fastest) instead of the plain `[zone] names` entry; knot's zone is the same.
#
# usage: bench/dns-throughput.sh [--runs N] [--duration S] [--clients C] [--outstanding Q]
#                                [--policy P]
# env:   SPDU=path/to/spdu (default: cargo build --release), BENCH_KEEP=1 keeps the work dir.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=5 DURATION=10 CLIENTS=10 OUTSTANDING=100 POLICY=
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0}
while (( $# > 0 )); do
    case $1 in
        --runs) RUNS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --clients) CLIENTS=$2; shift 2 ;;
        --outstanding) OUTSTANDING=$2; shift 2 ;;
        --policy) POLICY=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
done
[[ $RUNS =~ ^[0-9]+$ && $RUNS -ge 1 && $RUNS -le 50 ]] || die "--runs: 1..50"
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 1 && $DURATION -le 120 ]] || die "--duration: 1..120 s"
[[ -z $POLICY || $POLICY =~ ^(all|priority|weighted|fastest)$ ]] || die "--policy: all, priority, weighted or fastest"

need dnsperf dnsperf
need knotd knot
need kdig knot-dnsutils
need taskset util-linux
(( $(nproc) >= 2 )) || die "needs 2 cores (server on $SERVER_CPU, dnsperf on $CLIENT_CPU)"

bench_init
SPDU_BIN=$(spdu_binary)
SPDU_IP=127.0.50.1 KNOT_IP=127.0.50.2 PORT=15300

# --- spdu: one node, no peers; knot: the same records, static ---
keygen "$WORK" alpha >/dev/null
spdu_config "$WORK/alpha.toml" alpha "$SPDU_IP" "$PORT" '"192.0.2.10", "2001:db8::10"'
if [[ -n $POLICY ]]; then
    sed -i '/^names = \["api"\]$/d' "$WORK/alpha.toml"
    printf '\n[[zone.record]]\nname = "api"\npolicy = "%s"\n' "$POLICY" >>"$WORK/alpha.toml"
fi
# knotd runs without mod-rrl, so spdu runs without response rate limiting too (dnsperf is one
# source: at the default rate almost every response would be dropped or slipped).
printf '\n[dns]\nrrl_rate = 0\n' >>"$WORK/alpha.toml"
knot_setup "$WORK/knot" "$KNOT_IP" "$PORT"

# --- query mix ---
: >"$WORK/queries.txt"
for _ in 1 2 3 4; do echo "api.$ORIGIN A"; done >>"$WORK/queries.txt"
for _ in 1 2 3; do echo "api.$ORIGIN AAAA"; done >>"$WORK/queries.txt"
echo "$ORIGIN SOA" >>"$WORK/queries.txt"
echo "nope.$ORIGIN A" >>"$WORK/queries.txt"
echo "x.y.$ORIGIN AAAA" >>"$WORK/queries.txt"

taskset -c "$SERVER_CPU" "$SPDU_BIN" run --config "$WORK/alpha.toml" >"$WORK/spdu.log" 2>&1 &
SPDU_PID=$!; track "$SPDU_PID"
taskset -c "$SERVER_CPU" knotd -c "$WORK/knot/knot.conf" >"$WORK/knot.log" 2>&1 &
KNOT_PID=$!; track "$KNOT_PID"

# Both must answer, and answer the same (header flags, rcode, sections) before we time them.
wait_answer() {
    for _ in $(seq 100); do
        kdig +short +time=1 +retry=0 @"$1" -p "$PORT" "api.$ORIGIN" A 2>/dev/null | grep -q 192.0.2.10 && return 0
        sleep 0.1
    done
    die "$2 at $1:$PORT does not answer; log: $(tail -5 "$WORK/$2.log")"
}
wait_answer "$SPDU_IP" spdu
wait_answer "$KNOT_IP" knot
while read -r qname qtype; do
    a=$(kdig +edns +noall +answer +authority +nocookie @"$SPDU_IP" -p "$PORT" "$qname" "$qtype" | sort)
    b=$(kdig +edns +noall +answer +authority +nocookie @"$KNOT_IP" -p "$PORT" "$qname" "$qtype" | sort)
    a=$(awk '$4 == "SOA" { $7 = "SERIAL" } 1' <<<"$a"); b=$(awk '$4 == "SOA" { $7 = "SERIAL" } 1' <<<"$b")
    [[ $a == "$b" ]] || say "note: answers differ for $qname $qtype:"$'\n'"spdu: $a"$'\n'"knot: $b"
done < <(sort -u "$WORK/queries.txt")

# run_one NAME IP PID: one dnsperf run; prints "qps latency_ms loss_pct cpu_us_per_query".
run_one() {
    local name=$1 ip=$2 pid=$3 out cpu0 cpu1
    out="$WORK/dnsperf.$name.$RANDOM.txt"
    cpu0=$(cpu_seconds "$pid")
    # -l bounds the run in time; timeout bounds it even if dnsperf hangs.
    timeout $(( DURATION + 30 )) taskset -c "$CLIENT_CPU" dnsperf -e -s "$ip" -p "$PORT" \
        -d "$WORK/queries.txt" -l "$DURATION" -c "$CLIENTS" -q "$OUTSTANDING" -t 2 >"$out" 2>&1 ||
        die "dnsperf failed against $name: $(tail -3 "$out")"
    cpu1=$(cpu_seconds "$pid")
    awk -v c0="$cpu0" -v c1="$cpu1" '
        /Queries completed:/ { done = $3 }
        /Queries lost:/ { gsub(/[()%]/, "", $4); loss = $4 }
        /Queries per second:/ { qps = $4 }
        /Average Latency/ { lat = $4 * 1000 }
        END { printf "%.0f %.3f %.2f %.2f\n", qps, lat, loss, (c1 - c0) * 1e6 / (done ? done : 1) }' "$out"
}

say "policy of api: ${POLICY:-names entry (all)}"
say "spdu $("$SPDU_BIN" --version | awk '{print $2}') vs $(knotd --version | head -1); $RUNS runs of ${DURATION}s each, -c $CLIENTS -q $OUTSTANDING, server cpu $SERVER_CPU, dnsperf cpu $CLIENT_CPU"
printf '%-4s %-5s %10s %10s %8s %12s\n' run server qps lat_ms loss_% cpu_us/query
for r in $(seq "$RUNS"); do
    for s in spdu knot; do
        if [[ $s == spdu ]]; then line=$(run_one spdu "$SPDU_IP" "$SPDU_PID"); else line=$(run_one knot "$KNOT_IP" "$KNOT_PID"); fi
        echo "$r $s $line" >>"$WORK/results.txt"
        # shellcheck disable=SC2086
        printf '%-4s %-5s %10s %10s %8s %12s\n' "$r" "$s" $line
    done
done

echo
printf '%-22s %-30s %-30s %s\n' figure "spdu median [min-max]" "knot median [min-max]" "ratio spdu/knot (median of pairs [min-max])"
col=3
for fig in qps lat_ms loss_% cpu_us/query; do
    read -r sm smin smax _ < <(awk -v c=$col '$2 == "spdu" { print $c }' "$WORK/results.txt" | stats)
    read -r km kmin kmax _ < <(awk -v c=$col '$2 == "knot" { print $c }' "$WORK/results.txt" | stats)
    ratio=$(awk -v c=$col '$2 == "spdu" { s[$1] = $c } $2 == "knot" { k[$1] = $c }
        END { for (r in s) if (k[r] > 0) print s[r] / k[r] }' "$WORK/results.txt" | stats)
    read -r rm rmin rmax _ <<<"$ratio"
    printf '%-22s %-30s %-30s %s\n' "$fig" "$sm [$smin-$smax]" "$km [$kmin-$kmax]" "$rm [$rmin-$rmax]"
    col=$(( col + 1 ))
done
echo "server RSS after the runs: spdu $(rss_kib "$SPDU_PID") KiB, knot $(rss_kib "$KNOT_PID") KiB"
