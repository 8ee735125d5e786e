#!/usr/bin/env bash
#
# dns-flood: one site's DNS is flooded at full rate (dnsperf, as many queries in flight as it
# can keep, from a namespace of its own) while every site keeps gossiping. DNS load must never
# reach the membership: during the flood and a grace period after it, no site's DNS answer may
# change (answer_changes, from the pollers) and no site may log an answer or peer event
# (answer_events, peer_events, from every node's /v1/events), the flooded site included.
#
# Also measured: the flood's rate (dnsperf's queries per second and share answered), the
# flooded site's gossip RTT as the others' probing sees it (spdu_gossip_peer_rtt_seconds, sampled
# every 500 ms: median and max), and the loss of gossip packets between it and the others
# (nftables counters on both ends of every path, UDP port 7946, during the flood).
SCENARIO=dns-flood
SCENARIO_USAGE="[--duration SECONDS] [--clients N] [--threads N]"
SCENARIO_HELP="  --duration S   how long the flood lasts (default 20)
  --clients N    dnsperf clients (sockets) in the flood (default 8)
  --threads N    dnsperf threads (default 2)
"
DURATION_S=20
FLOOD_CLIENTS=8
FLOOD_THREADS=2
GRACE_S=5 # after the flood: a change it caused shows within detection + staleness (< 5 s)
scenario_arg() {
    case $1 in
        --duration) [[ $2 =~ ^[0-9]+$ ]] && (( $2 >= 2 && $2 <= 3600 )) || return 1; DURATION_S=$2 ;;
        --clients) [[ $2 =~ ^[0-9]+$ ]] && (( $2 >= 1 && $2 <= 64 )) || return 1; FLOOD_CLIENTS=$2 ;;
        --threads) [[ $2 =~ ^[0-9]+$ ]] && (( $2 >= 1 && $2 <= 16 )) || return 1; FLOOD_THREADS=$2 ;;
        *) return 1 ;;
    esac
}
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_args "$@"
for tool in dnsperf curl; do
    command -v "$tool" >/dev/null 2>&1 \
        || { echo "error: the $SCENARIO scenario needs $tool (Debian: apt-get install dnsperf curl)" >&2; exit 2; }
done
# Response rate limiting off: the flood is answered in full, the most CPU the DNS path can take
# (with it on, most of one source's queries would be dropped after the token check).
SITE_EXTRA_TOML="[dns]
rrl_rate = 0"
preflight
install_traps
world_up

TARGET=1
FLOOD_ADDR=$NET.101
flood_ns="${PREFIX}flood"
add_ns "$flood_ns"
plug "$flood_ns" f0 "$FLOOD_ADDR"
others=$(sites_except "$TARGET")
target_addr=$(site_addr "$TARGET")

# Counters for gossip packets (every endpoint uses port 7946) on both ends of every path.
nft_site "$TARGET" add rule inet spdu input ip saddr != "$FLOOD_ADDR" udp dport "$GOSSIP_PORT" counter
nft_site "$TARGET" add rule inet spdu output udp dport "$GOSSIP_PORT" counter
for o in $others; do
    nft_site "$o" add rule inet spdu input ip saddr "$target_addr" udp dport "$GOSSIP_PORT" counter
    nft_site "$o" add rule inet spdu output ip daddr "$target_addr" udp dport "$GOSSIP_PORT" counter
done
# nft_packets SITE CHAIN: the packets counted by the chain's counter rule.
nft_packets() {
    nft_site "$1" list chain inet spdu "$2" | grep -o 'counter packets [0-9]*' | head -n 1 | awk '{ print $3 }'
}
gossip_counts() {
    local o to_sent=0 to_recv from_sent from_recv=0
    to_recv=$(nft_packets "$TARGET" input)
    from_sent=$(nft_packets "$TARGET" output)
    for o in $others; do
        to_sent=$(( to_sent + $(nft_packets "$o" output) ))
        from_recv=$(( from_recv + $(nft_packets "$o" input) ))
    done
    echo "$to_sent $to_recv $from_sent $from_recv"
}

# One control-endpoint request inside site $1's namespace.
control_get() {
    ip netns exec "$(site_ns "$1")" curl -s --max-time 2 "http://$CONTROL$2" 2>/dev/null || true
}

# Samples every site's probing of every peer (RTT, reachable) every 500 ms until the deadline:
# "<ts_ns> <observer> <peer> rtt=<seconds|none> reachable=<0|1|none>" per pair.
sample_rtt() {
    local deadline=$1 log=$2 o p metrics rtt reachable
    while (( $(now_ns) < deadline )); do
        for (( o = 1; o <= SITES; o++ )); do
            metrics=$(control_get "$o" /metrics)
            for (( p = 1; p <= SITES; p++ )); do
                (( p == o )) && continue
                rtt=$(awk -v m="spdu_gossip_peer_rtt_seconds{peer=\"s$p\"}" '$1 == m { print $2 }' <<<"$metrics")
                reachable=$(awk -v m="spdu_gossip_peer_reachable{peer=\"s$p\"}" '$1 == m { print $2 }' <<<"$metrics")
                echo "$(now_ns) s$o s$p rtt=${rtt:-none} reachable=${reachable:-none}" >>"$log"
            done
        done
        sleep 0.5
    done
}

# rtt_figures FILTER: "<samples> <median_ms> <max_ms>" of the RTT samples whose observer ($2)
# and peer ($3) pass the awk condition FILTER; "0 -1 -1" without samples.
rtt_figures() {
    { awk "($1) && \$4 != \"rtt=none\" { sub(/^rtt=/, \"\", \$4); print \$4 * 1000 }" "$WORK/rtt.log" 2>/dev/null || true; } \
        | sort -g | awk '{ v[++n] = $1 } END {
            if (n == 0) print 0, -1, -1; else printf "%d %.1f %.1f\n", n, v[int((n + 1) / 2)], v[n] }'
}

# The names and types dnsperf cycles through: the pool name (the fast path), the apex, a name
# that does not exist and one outside the zone.
printf '%s\n' "$QNAME A" "$ORIGIN SOA" "$ORIGIN NS" "nope.$ORIGIN A" "$QNAME AAAA" "www.elsewhere.test A" \
    >"$WORK/queries.txt"

# The RTT sampler starts 6 s early: its first samples are the baseline without a flood (a
# fresh connection has no RTT estimate for its first seconds).
sample_rtt $(( $(now_ns) + (6 + DURATION_S) * 1000000000 )) "$WORK/rtt.log" &
AUX_PID[sampler]=$!
sleep 6
read -r to_sent0 to_recv0 from_sent0 from_recv0 < <(gossip_counts)
flood_ms=$(date +%s%3N)
flood_ts=$(now_ns)
ip netns exec "$flood_ns" dnsperf -s "$target_addr" -p 53 -d "$WORK/queries.txt" -l "$DURATION_S" \
    -c "$FLOOD_CLIENTS" -T "$FLOOD_THREADS" -q 1000 -t 2 -S 5 >"$WORK/dnsperf.log" 2>&1 &
AUX_PID[dnsperf]=$!
event "flood s$TARGET's DNS from $FLOOD_ADDR for ${DURATION_S}s (dnsperf pid ${AUX_PID[dnsperf]}, $FLOOD_CLIENTS clients, $FLOOD_THREADS threads)"
# dnsperf stops itself after the duration; it gets 15 s more to print its report.
for (( n = 0; n < (DURATION_S + 15) * 10; n++ )); do
    kill -0 "${AUX_PID[dnsperf]}" 2>/dev/null || break
    sleep 0.1
done
kill -TERM "${AUX_PID[dnsperf]}" 2>/dev/null || true
wait "${AUX_PID[dnsperf]}" 2>/dev/null || true
unset 'AUX_PID[dnsperf]'
end_ts=$(now_ns)
read -r to_sent1 to_recv1 from_sent1 from_recv1 < <(gossip_counts)
event "flood over"
wait "${AUX_PID[sampler]}" 2>/dev/null || true
unset 'AUX_PID[sampler]'
sleep "$GRACE_S"
grace_ts=$(now_ns)
grace_ms=$(date +%s%3N)
event "grace of ${GRACE_S}s over"

# Events every node logged between the flood's start and the end of the grace period.
answer_events=0 peer_events=0
for (( s = 1; s <= SITES; s++ )); do
    control_get "$s" /v1/events >"$WORK/s$s/events.json"
    while read -r ms kind; do
        (( ms >= flood_ms && ms <= grace_ms )) || continue
        case $kind in
            answer) answer_events=$(( answer_events + 1 )) ;;
            peer) peer_events=$(( peer_events + 1 )) ;;
        esac
    done < <(grep -o '"unix_ms":[0-9]*,"node":"[^"]*","cluster":"[^"]*","event":"[a-z]*"' "$WORK/s$s/events.json" \
        | sed -E 's/^"unix_ms":([0-9]+),.*"event":"([a-z]+)"$/\1 \2/')
done
finish
echo "--- dnsperf ---"
sed -n '/Statistics:/,$p' "$WORK/dnsperf.log"

full=$(all_sites)
answer_changes=0 wrong=0 queries=0 target_unanswered=0 others_unanswered=0
for (( s = 1; s <= SITES; s++ )); do
    read -r n _ < <(changes "$flood_ts" "$grace_ts" "$s")
    answer_changes=$(( answer_changes + n ))
    wrong=$(( wrong + $(violations "$flood_ts" "$grace_ts" "$s" eq "$full") ))
    queries=$(( queries + $(samples "$flood_ts" "$grace_ts" "$s") ))
    if (( s == TARGET )); then
        target_unanswered=$(unanswered "$flood_ts" "$end_ts" "$s")
    else
        others_unanswered=$(( others_unanswered + $(unanswered "$flood_ts" "$end_ts" "$s") ))
    fi
done

qps=$(awk '/Queries per second:/ { printf "%d", $4 }' "$WORK/dnsperf.log")
sent=$(awk '/Queries sent:/ { print $3 }' "$WORK/dnsperf.log")
completed_pct=$(awk '/Queries completed:/ { gsub(/[(%)]/, "", $4); printf "%d", $4 }' "$WORK/dnsperf.log")
# RTT of the target as the others saw it during the flood: median and max, in ms.
# Probes of any peer by any site that found it unreachable during the flood.
unreachable_samples=$(awk -v from="$flood_ts" '$1 >= from && $5 == "reachable=0" { n++ } END { print n + 0 }' "$WORK/rtt.log" 2>/dev/null || echo 0)
# The target as the others see it; the others as the target sees them; the others among
# themselves (the control: same machine, same load, no flood on either end; needs 3 sites).
# Before the flood: the same pairs as rtt_med_ms.
in_flood="\$1 >= $flood_ts"
read -r rtt_samples rtt_med_ms rtt_max_ms < <(rtt_figures "$in_flood && \$3 == \"s$TARGET\"")
read -r _ rtt_from_med_ms rtt_from_max_ms < <(rtt_figures "$in_flood && \$2 == \"s$TARGET\"")
read -r _ rtt_ctl_med_ms rtt_ctl_max_ms < <(rtt_figures "$in_flood && \$2 != \"s$TARGET\" && \$3 != \"s$TARGET\"")
read -r _ rtt_base_med_ms _ < <(rtt_figures "\$1 < $flood_ts && \$3 == \"s$TARGET\"")
to_sent=$(( to_sent1 - to_sent0 )) to_recv=$(( to_recv1 - to_recv0 ))
from_sent=$(( from_sent1 - from_sent0 )) from_recv=$(( from_recv1 - from_recv0 ))
loss_pct() { awk -v s="$1" -v r="$2" 'BEGIN { printf "%.1f", (s > 0 && r < s) ? 100 * (s - r) / s : 0 }'; }
loss_to=$(loss_pct "$to_sent" "$to_recv")
loss_from=$(loss_pct "$from_sent" "$from_recv")
echo "gossip packets to s$TARGET: sent $to_sent received $to_recv; from s$TARGET: sent $from_sent received $from_recv"

result=PASS
(( answer_changes == 0 && wrong == 0 && answer_events == 0 && peer_events == 0 )) || result=FAIL
# A flood that did not happen proves nothing.
(( ${qps:-0} > 0 && queries > 0 && rtt_samples > 0 )) || result=FAIL
summary "target=s$TARGET duration_s=$DURATION_S converge_ms=$CONVERGE_MS flood_qps=${qps:-0} flood_sent=${sent:-0}" \
    "flood_completed_pct=${completed_pct:-0} answer_changes=$answer_changes wrong_answers=$wrong" \
    "answer_events=$answer_events peer_events=$peer_events poll_queries=$queries" \
    "target_unanswered=$target_unanswered others_unanswered=$others_unanswered" \
    "rtt_base_med_ms=$rtt_base_med_ms rtt_med_ms=$rtt_med_ms rtt_max_ms=$rtt_max_ms rtt_from_med_ms=$rtt_from_med_ms rtt_from_max_ms=$rtt_from_max_ms" \
    "rtt_ctl_med_ms=$rtt_ctl_med_ms rtt_ctl_max_ms=$rtt_ctl_max_ms unreachable_samples=$unreachable_samples" \
    "gossip_loss_to_pct=$loss_to gossip_loss_from_pct=$loss_from result=$result"
[[ $result == PASS ]]
