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
# By default spdu runs with response rate limiting off (`[dns] rrl_rate = 0`: knotd runs without
# mod-rrl, and one dnsperf is one source, which the default rate would limit) and the load is one
# dnsperf (-c C -q Q) from 127.0.0.1.
# --rrl runs spdu with rate limiting on at its defaults (no `[dns]` section: rrl_rate 1000
# responses/s per source /24 and response kind, slip 2) and spreads the load over --sources N
# (default 128) source prefixes so that no prefix should reach the rate: N dnsperf processes,
# started together, each with -c 1 and its share of the Q outstanding queries (at least 1), each
# from its own /24 (source i: 127.(100 + i/250).(i%250).1). knotd gets the same N sources (it
# has no rate limiting: the same load on both). QPS and completed queries are summed over the
# processes, the latency is their mean weighted by completed queries, loss is total lost over
# total sent, CPU per query is the server's CPU time over the summed completed queries. After
# the runs it prints spdu's /metrics counter spdu_dns_rrl_limited_responses_total (0 when no
# prefix went over the rate) and the highest QPS of one source against spdu.
# --sources N without --rrl spreads the load the same way with rate limiting off; --clients
# applies to the one-source run only.
#
# --signed compares signed answers: spdu with a `[dnssec]` key (made with `spdu dnssec-keygen`,
# ECDSAP256SHA256) signing each answer as it goes out, against knotd signing the same zone online
# (mod-onlinesign, ECDSAP256SHA256 too, keys made by knotd). Every dnsperf query has the DO bit
# set (dnsperf -D), so every answer carries its RRSIGs (denials their NSEC records); before the
# runs the script checks that both servers sign every kind of answer in the mix.
#
# usage: bench/dns-throughput.sh [--runs N] [--duration S] [--clients C] [--outstanding Q]
#                                [--policy P] [--rrl] [--sources N] [--signed]
# env:   SPDU=path/to/spdu (default: cargo build --release), BENCH_KEEP=1 keeps the work dir.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=5 DURATION=10 CLIENTS=10 OUTSTANDING=100 POLICY= RRL=0 SOURCES= CLIENTS_SET=0 SIGNED=0
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0}
while (( $# > 0 )); do
    case $1 in
        --runs) RUNS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --clients) CLIENTS=$2; CLIENTS_SET=1; shift 2 ;;
        --outstanding) OUTSTANDING=$2; shift 2 ;;
        --policy) POLICY=$2; shift 2 ;;
        --rrl) RRL=1; shift ;;
        --sources) SOURCES=$2; shift 2 ;;
        --signed) SIGNED=1; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
done
[[ $RUNS =~ ^[0-9]+$ && $RUNS -ge 1 && $RUNS -le 50 ]] || die "--runs: 1..50"
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 1 && $DURATION -le 120 ]] || die "--duration: 1..120 s"
[[ -z $POLICY || $POLICY =~ ^(all|priority|weighted|fastest)$ ]] || die "--policy: all, priority, weighted or fastest"
[[ -n $SOURCES ]] || SOURCES=$(( RRL ? 128 : 1 ))
[[ $SOURCES =~ ^[0-9]+$ && $SOURCES -ge 1 && $SOURCES -le 1000 ]] || die "--sources: 1..1000"
[[ $OUTSTANDING =~ ^[0-9]+$ && $OUTSTANDING -ge 1 ]] || die "--outstanding: at least 1"
# SPREAD: the load comes from SOURCES dnsperf processes, one /24 each (--rrl, or --sources N).
SPREAD=$(( RRL || SOURCES > 1 ))
(( ! SPREAD || ! CLIENTS_SET )) || die "--clients applies to one source only (each of the --sources is one dnsperf with -c 1)"

need dnsperf dnsperf
need knotd knot
need kdig knot-dnsutils
need taskset util-linux
(( ! RRL )) || need curl curl
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
# source: at the default rate almost every response would be dropped or slipped); with --rrl it
# runs at its defaults, and the load is spread over enough prefixes to stay under the rate.
(( RRL )) || printf '\n[dns]\nrrl_rate = 0\n' >>"$WORK/alpha.toml"
knot_setup "$WORK/knot" "$KNOT_IP" "$PORT"
# dnsperf's EDNS flags: -e (EDNS) always, -D (DNSSEC OK, implies EDNS) for signed answers.
DNSPERF_EDNS=(-e)
if (( SIGNED )); then
    "$SPDU_BIN" dnssec-keygen --help >/dev/null 2>&1 \
        || die "--signed: $SPDU_BIN cannot sign (it has no dnssec-keygen command)"
    "$SPDU_BIN" dnssec-keygen --out "$WORK/alpha.dnssec.key" --algorithm 13 --zone "$ORIGIN" >"$WORK/alpha.dnskey" 2>"$WORK/alpha.dnskey.err" \
        || die "spdu dnssec-keygen failed"
    printf '\n[dnssec]\nkey = "%s"\n' "$WORK/alpha.dnssec.key" >>"$WORK/alpha.toml"
    # knotd signs online with a key of its own (a CSK, the algorithm spdu uses).
    sed -i 's/^zone:$/policy:\n  - id: bench\n    algorithm: ecdsap256sha256\n    single-type-signing: on\nmod-onlinesign:\n  - id: bench\n    policy: bench\nzone:/' \
        "$WORK/knot/knot.conf"
    printf '    module: mod-onlinesign/bench\n' >>"$WORK/knot/knot.conf"
    DNSPERF_EDNS=(-D)
fi

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
# signed_kinds IP: the queries of the mix whose answer carries an RRSIG (answer or authority).
signed_kinds() {
    local qname qtype n=0
    while read -r qname qtype; do
        kdig +dnssec +noall +answer +authority +nocookie @"$1" -p "$PORT" "$qname" "$qtype" | awk '$4 == "RRSIG"' \
            | grep -q . && n=$(( n + 1 ))
    done < <(sort -u "$WORK/queries.txt")
    echo "$n"
}
if (( SIGNED )); then
    kinds=$(sort -u "$WORK/queries.txt" | wc -l)
    for s in "spdu $SPDU_IP" "knot $KNOT_IP"; do
        got=$(signed_kinds "${s#* }")
        (( got == kinds )) || die "--signed: ${s% *} signs $got of the $kinds kinds of query in the mix"
    done
    say "both servers sign all $kinds kinds of query in the mix (RRSIG with DO set)"
fi
while (( ! SIGNED )) && read -r qname qtype; do
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
    timeout $(( DURATION + 30 )) taskset -c "$CLIENT_CPU" dnsperf "${DNSPERF_EDNS[@]}" -s "$ip" -p "$PORT" \
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

# source_ip I: the address of source I (0-based), alone in its /24, never in 127.0.x.
source_ip() { echo "127.$(( 100 + $1 / 250 )).$(( $1 % 250 )).1"; }

# run_spread NAME IP PID: SOURCES dnsperf processes at once, source i from source_ip i with -c 1
# and its share of the OUTSTANDING queries; sets LINE to "qps latency_ms loss_pct
# cpu_us_per_query" over all of them and SOURCE_QPS_MAX to the highest QPS of one process.
# Runs in the main shell (not in $(…)) so that every dnsperf is tracked, and killed on exit.
LINE= SOURCE_QPS_MAX=0
run_spread() {
    local name=$1 ip=$2 pid=$3 dir cpu0 cpu1 i q p failed= pids=()
    dir="$WORK/dnsperf.$name.$RANDOM"
    mkdir "$dir"
    cpu0=$(cpu_seconds "$pid")
    for (( i = 0; i < SOURCES; i++ )); do
        q=$(( OUTSTANDING / SOURCES + (i < OUTSTANDING % SOURCES ? 1 : 0) ))
        (( q >= 1 )) || q=1
        # -l bounds each run in time; timeout bounds it even if dnsperf hangs.
        timeout $(( DURATION + 30 )) taskset -c "$CLIENT_CPU" dnsperf "${DNSPERF_EDNS[@]}" -a "$(source_ip "$i")" \
            -s "$ip" -p "$PORT" -d "$WORK/queries.txt" -l "$DURATION" -c 1 -q "$q" -t 2 \
            >"$dir/$i.txt" 2>&1 &
        pids+=("$!"); track "$!"
    done
    for i in "${!pids[@]}"; do
        p=${pids[$i]}
        wait "$p" || failed=${failed:-$i}
        untrack "$p"
    done
    cpu1=$(cpu_seconds "$pid")
    [[ -z $failed ]] || die "dnsperf (source $(source_ip "$failed")) failed against $name: $(tail -3 "$dir/$failed.txt")"
    LINE=$(awk -v c0="$cpu0" -v c1="$cpu1" '
        FNR == 1 { files++ }
        /Queries sent:/ { sent += $3 }
        /Queries completed:/ { done += $3; last = $3 }
        /Queries lost:/ { lost += $3 }
        /Queries per second:/ { qps += $4; if ($4 > max) max = $4 }
        /Average Latency/ { lat += $4 * 1000 * last; got++ }
        END {
            if (got != files) { print "parse"; exit }
            printf "%.0f %.3f %.2f %.2f %.0f\n", qps, lat / (done ? done : 1),
                100 * lost / (sent ? sent : 1), (c1 - c0) * 1e6 / (done ? done : 1), max }' "$dir"/*.txt)
    [[ $LINE != parse ]] || die "dnsperf output against $name without statistics (in $dir)"
    if [[ $name == spdu ]]; then
        SOURCE_QPS_MAX=$(awk -v a="$SOURCE_QPS_MAX" -v b="${LINE##* }" 'BEGIN { print (b > a ? b : a) }')
    fi
    LINE=${LINE% *}
}

say "policy of api: ${POLICY:-names entry (all)}; answers $( (( SIGNED )) && echo "signed (DO set; spdu [dnssec] vs knotd mod-onlinesign, ECDSAP256SHA256)" || echo unsigned)"
say "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
if (( SPREAD )); then
    q_each=$(( OUTSTANDING / SOURCES )); (( q_each >= 1 )) || q_each=1
    (( OUTSTANDING % SOURCES == 0 || OUTSTANDING < SOURCES )) || q_each="$q_each-$(( q_each + 1 ))"
    say "spdu $("$SPDU_BIN" --version | awk '{print $2}') vs $(knotd --version | head -1); $RUNS runs of ${DURATION}s each, $SOURCES sources ($(source_ip 0) .. $(source_ip $(( SOURCES - 1 ))), one /24 each; one dnsperf each, -c 1 -q $q_each), spdu rrl $( (( RRL )) && echo "on (defaults)" || echo off), server cpu $SERVER_CPU, dnsperf cpu $CLIENT_CPU"
else
    say "spdu $("$SPDU_BIN" --version | awk '{print $2}') vs $(knotd --version | head -1); $RUNS runs of ${DURATION}s each, -c $CLIENTS -q $OUTSTANDING, server cpu $SERVER_CPU, dnsperf cpu $CLIENT_CPU"
fi
printf '%-4s %-5s %10s %10s %8s %12s\n' run server qps lat_ms loss_% cpu_us/query
for r in $(seq "$RUNS"); do
    for s in spdu knot; do
        if (( SPREAD )); then
            if [[ $s == spdu ]]; then run_spread spdu "$SPDU_IP" "$SPDU_PID"; else run_spread knot "$KNOT_IP" "$KNOT_PID"; fi
            line=$LINE
        elif [[ $s == spdu ]]; then line=$(run_one spdu "$SPDU_IP" "$SPDU_PID"); else line=$(run_one knot "$KNOT_IP" "$KNOT_PID"); fi
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
echo "load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg) (others' work on this machine shows here)"
if (( SPREAD )); then
    echo "highest QPS of one source against spdu: $SOURCE_QPS_MAX (answers are 80 % of the mix, NXDOMAIN 20 %)"
fi
if (( RRL )); then
    # The rate limiter's verdicts, from spdu's control endpoint (control = $SPDU_IP:17947).
    metrics=$(curl -sf --max-time 5 "http://$SPDU_IP:17947/metrics") || die "cannot read http://$SPDU_IP:17947/metrics"
    awk '
        /^spdu_dns_rrl_limited_responses_total[{ ]/ { print "  " $0; total += $NF; n++ }
        /^spdu_dns_rrl_table_evictions_total[{ ]/ { evictions = $NF }
        END {
            printf "spdu_dns_rrl_limited_responses_total over all series: %d (%s)\n", total,
                n ? n " series" : "no series: nothing was limited"
            print "spdu_dns_rrl_table_evictions_total: " (evictions == "" ? "not exported" : evictions)
        }' <<<"$metrics"
fi
