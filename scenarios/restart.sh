#!/usr/bin/env bash
#
# restart: the last site's node is killed with SIGKILL (no goodbye) and, after the survivors
# have dropped it, started again with the same key and config. It must rejoin everyone's
# answers, and its new observations must supersede the ones it signed before the kill: the
# incarnation that s1's view (`spdu peers --json`) holds for it must grow, and its own view
# must show the new incarnation too.
SCENARIO=restart
SCENARIO_USAGE="[--hold SECONDS]"
SCENARIO_HELP="  --hold S     how long the node stays dead, and the time allowed to rejoin (default 6)
"
HOLD_S=6
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
scenario_start "$@"

victim=$SITES
survivors=$(sites_except "$victim")
sleep 1
before=$(incarnation_seen 1 "$victim")
event "s1 sees s$victim at incarnation ${before:-none}"

kill_ts=$(now_ns)
site_stop "$victim" KILL
sleep "$HOLD_S"
site_start "$victim"
start_ts=$(now_ns)
sleep "$HOLD_S"
after=$(incarnation_seen 1 "$victim")
own=$(incarnation_seen "$victim" "$victim")
event "s1 sees s$victim at incarnation ${after:-none}; s$victim itself at ${own:-none}"
sleep 1
end_ts=$(now_ns)
finish

full=$(all_sites)
detect=() recover=()
for s in $survivors; do detect+=("$(settle_ms "$kill_ts" "$start_ts" "$s" lacks "s$victim")"); done
for (( s = 1; s <= SITES; s++ )); do recover+=("$(settle_ms "$start_ts" "$end_ts" "$s" eq "$full")"); done
detect_ms=$(max_of "${detect[@]}")
recover_ms=$(max_of "${recover[@]}")
grew=0
if [[ -n $before && -n $after && -n $own ]] && (( after > before && own == after )); then grew=1; fi

result=PASS
(( detect_ms >= 0 && recover_ms >= 0 && grew == 1 )) || result=FAIL
summary "converge_ms=$CONVERGE_MS detect_ms=$detect_ms recover_ms=$recover_ms incarnation_before=${before:-none} incarnation_after=${after:-none} incarnation_grew=$grew result=$result"
[[ $result == PASS ]]
