#!/usr/bin/env bash
#
# lossy: every site drops a random share (default 10 %) of the packets arriving from the other
# sites (nftables `numgen random mod 100 < N drop`), so every site-to-site packet, in either
# direction, is lost with that probability. The client's queries are spared, so the timeline
# shows the sites' answers, not lost queries. No healthy site may be dropped by anyone:
# every answer during the run must name every site (dropped=0).
SCENARIO=lossy
SCENARIO_USAGE="[--loss PERCENT] [--duration SECONDS]"
SCENARIO_HELP="  --loss P       percentage of packets each site drops on its link (default 10)
  --duration S   how long the loss lasts (default 30)
"
LOSS=10
DURATION_S=30
scenario_arg() {
    case $1 in
        --loss) [[ $2 =~ ^[0-9]+$ ]] && (( $2 <= 100 )) || return 1; LOSS=$2 ;;
        --duration) [[ $2 =~ ^[0-9]+$ ]] && (( $2 <= 3600 )) || return 1; DURATION_S=$2 ;;
        *) return 1 ;;
    esac
}
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
scenario_start "$@"

sleep 1
for (( s = 1; s <= SITES; s++ )); do nft_loss "$s" "$LOSS"; done
loss_ts=$(now_ns)
event "${LOSS}% loss on every site's link for ${DURATION_S}s"
sleep "$DURATION_S"
for (( s = 1; s <= SITES; s++ )); do nft_flush "$s"; done
end_ts=$(now_ns)
event "loss off"
sleep 1
finish

full=$(all_sites)
dropped=0 total=0 unanswered=0 changed=0
for (( s = 1; s <= SITES; s++ )); do
    dropped=$(( dropped + $(violations "$loss_ts" "$end_ts" "$s" eq "$full") ))
    total=$(( total + $(samples "$loss_ts" "$end_ts" "$s") ))
    unanswered=$(( unanswered + $(unanswered "$loss_ts" "$end_ts" "$s") ))
    read -r n _ < <(changes "$loss_ts" "$end_ts" "$s")
    changed=$(( changed + n ))
done

result=PASS
(( dropped == 0 && total > 0 )) || result=FAIL
summary "loss_pct=$LOSS duration_s=$DURATION_S converge_ms=$CONVERGE_MS queries=$total dropped=$dropped changes=$changed unanswered=$unanswered result=$result"
[[ $result == PASS ]]
