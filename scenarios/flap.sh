#!/usr/bin/env bash
#
# flap: the last site's cable is pulled and plugged back, repeatedly, in two phases.
#   fast: down 300 ms / up 300 ms, 10 times. Faster than the hysteresis: an up window of
#         300 ms barely holds up_after (3) probes, and an outage is shorter than down_after (5)
#         probes. Each survivor may drop the site once and take it back once after the burst
#         (at most 2 changes per survivor, fast_max_per_site); it must never follow the flaps.
#         Ideally the outages are absorbed altogether (fast_changes=0): a probe slot counts as
#         good when any ping of the peer arrived, and none lasts 5 slots.
#   slow: down 3 s / up 3 s, 3 times. Each outage is long enough to be detected, so every
#         survivor may change twice per cycle and no more (slow_changes <= 2 per survivor per
#         cycle), and never two changes closer than up_after x probe_interval (300 ms): that is
#         the fastest the damping lets an answer move (min_gap_ms).
# Then the cable stays in, and every site must answer with every site again (recover_ms).
SCENARIO=flap
SCENARIO_USAGE="[--cycles N]"
SCENARIO_HELP="  --cycles N   fast cycles (default 10); the slow phase has 3
"
FAST_CYCLES=10
SLOW_CYCLES=3
scenario_arg() {
    case $1 in
        --cycles) [[ $2 =~ ^[0-9]+$ ]] && (( $2 <= 100 )) || return 1; FAST_CYCLES=$2 ;;
        *) return 1 ;;
    esac
}
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
scenario_start "$@"

victim=$SITES
survivors=$(sites_except "$victim")
sleep 2

fast_ts=$(now_ns)
event "fast flaps of s$victim: ${FAST_CYCLES} x (down 300 ms, up 300 ms)"
for (( c = 0; c < FAST_CYCLES; c++ )); do
    link_down "$victim"; sleep 0.3
    link_up "$victim"; sleep 0.3
done
sleep 2
slow_ts=$(now_ns)
event "slow flaps of s$victim: ${SLOW_CYCLES} x (down 3 s, up 3 s)"
for (( c = 0; c < SLOW_CYCLES; c++ )); do
    link_down "$victim"; event "s$victim down"; sleep 3
    link_up "$victim"; event "s$victim up"; sleep 3
done
heal_ts=$(now_ns)
event "s$victim stays up"
sleep 6
end_ts=$(now_ns)
finish

full=$(all_sites)
fast_changes=0 fast_worst=0 slow_changes=0 min_gap=-1 worst=0 recover=()
for s in $survivors; do
    read -r n gap < <(changes "$fast_ts" "$slow_ts" "$s")
    fast_changes=$(( fast_changes + n ))
    (( n > fast_worst )) && fast_worst=$n
    if (( gap >= 0 && (min_gap < 0 || gap < min_gap) )); then min_gap=$gap; fi
    read -r n gap < <(changes "$slow_ts" "$heal_ts" "$s")
    slow_changes=$(( slow_changes + n ))
    (( n > worst )) && worst=$n
    if (( gap >= 0 && (min_gap < 0 || gap < min_gap) )); then min_gap=$gap; fi
done
for (( s = 1; s <= SITES; s++ )); do recover+=("$(settle_ms "$heal_ts" "$end_ts" "$s" eq "$full")"); done
recover_ms=$(max_of "${recover[@]}")
damping_ms=$(( UP_AFTER * PROBE_INTERVAL_MS ))

result=PASS
(( fast_worst <= 2 )) || result=FAIL
(( worst <= 2 * SLOW_CYCLES )) || result=FAIL
(( min_gap < 0 || min_gap >= damping_ms )) || result=FAIL
(( recover_ms >= 0 )) || result=FAIL
summary "converge_ms=$CONVERGE_MS fast_changes=$fast_changes fast_max_per_site=$fast_worst slow_changes=$slow_changes slow_max_per_site=$worst slow_allowed=$(( 2 * SLOW_CYCLES )) min_gap_ms=$min_gap recover_ms=$recover_ms result=$result"
[[ $result == PASS ]]
