#!/usr/bin/env bash
#
# site-loss: one site is cut off entirely (its cable pulled: its bridge port goes down; or, with
# `--cut nft`, it drops every packet). Measures how long until every surviving site has dropped
# it from its answers (detect_ms), then heals the cut and measures how long until every site
# answers with every site again (recover_ms). The survivors must never drop each other.
#
# Expected with the default timing: detect about 1 s (6 failed probes 100 ms apart, each waiting
# up to 500 ms), recover well under 2 s (3 good probes, then a fresh observation).
SCENARIO=site-loss
SCENARIO_USAGE="[--cut link|nft] [--hold SECONDS]"
SCENARIO_HELP="  --cut MODE   link (default): the site's bridge port goes down; nft: the site drops everything
  --hold S     how long the cut and the healed phase each last (default 8)
"
CUT="link"
HOLD_S=8
scenario_arg() {
    case $1 in
        --cut) [[ $2 == link || $2 == nft ]] || return 1; CUT=$2 ;;
        *) return 1 ;;
    esac
}
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
scenario_start "$@"

victim=$SITES
survivors=$(sites_except "$victim")
sleep 2

if [[ $CUT == link ]]; then link_down "$victim"; else nft_drop_all "$victim"; fi
cut_ts=$(now_ns)
event "cut s$victim off ($CUT)"
sleep "$HOLD_S"

if [[ $CUT == link ]]; then link_up "$victim"; else nft_flush "$victim"; fi
heal_ts=$(now_ns)
event "heal s$victim"
sleep "$HOLD_S"
end_ts=$(now_ns)
finish

full=$(all_sites)
detect=() recover=() collateral=0
for s in $survivors; do
    detect+=("$(settle_ms "$cut_ts" "$heal_ts" "$s" lacks "s$victim")")
    for o in $survivors; do
        collateral=$(( collateral + $(violations "$cut_ts" "$heal_ts" "$s" has "s$o") ))
    done
done
for (( s = 1; s <= SITES; s++ )); do
    recover+=("$(settle_ms "$heal_ts" "$end_ts" "$s" eq "$full")")
done
detect_ms=$(max_of "${detect[@]}")
recover_ms=$(max_of "${recover[@]}")

result=PASS
(( detect_ms >= 0 && recover_ms >= 0 && collateral == 0 )) || result=FAIL
echo "detect per survivor (ms): ${detect[*]}; recover per site (ms): ${recover[*]}"
summary "cut=$CUT converge_ms=$CONVERGE_MS detect_ms=$detect_ms recover_ms=$recover_ms collateral=$collateral result=$result"
[[ $result == PASS ]]
