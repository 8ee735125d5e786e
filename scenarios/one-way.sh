#!/usr/bin/env bash
#
# one-way: every packet from s1 to s2 is dropped (at s2's input); s2 to s1 still flows, and both
# still reach and are reached by every other site and the client.
#
# What the answer rule dictates:
#   - s2 hears nothing from s1, so s2's own probing says s1 is unreachable and s2 drops s1.
#   - s1 still receives s2's pings, which count as proof of life for a probe slot, so s1 may
#     keep s2 for a while; but s2 never hears back on their QUIC connection, closes it at its
#     idle timeout (3 s), and no new handshake can complete with one direction dead. From then
#     on s1 sees s2 unreachable too and drops it. Either state of s1 is allowed.
#   - Every other site sees both s1 and s2 reachable itself, and for each of them at least half
#     of the other live observers agree (one dissenter out of two is a tie, which counts), so
#     every other site keeps answering with every site, throughout.
#   - Nobody drops anything else: s1 keeps every site but s2, s2 every site but s1.
# Figures: drop21_ms (s2 drops s1), drop12_ms (s1 drops s2; -1 if it never did), others = how
# many answers broke these rules, recover_ms after the heal.
SCENARIO=one-way
SCENARIO_USAGE="[--hold SECONDS]"
SCENARIO_HELP="  --hold S     how long the one-way cut and the healed phase each last (default 10)
"
HOLD_S=10
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
scenario_start "$@"

sleep 2
nft_drop_from 2 1
cut_ts=$(now_ns)
event "drop s1 -> s2 (one direction)"
sleep "$HOLD_S"
nft_flush 2
heal_ts=$(now_ns)
event "heal s1 -> s2"
sleep "$HOLD_S"
end_ts=$(now_ns)
finish

full=$(all_sites)
others=0
for s in $(sites_except 1 2); do
    others=$(( others + $(violations "$cut_ts" "$heal_ts" "$s" eq "$full") ))
done
for o in $(sites_except 2); do others=$(( others + $(violations "$cut_ts" "$heal_ts" 1 has "s$o") )); done
for o in $(sites_except 1); do others=$(( others + $(violations "$cut_ts" "$heal_ts" 2 has "s$o") )); done
drop21_ms=$(settle_ms "$cut_ts" "$heal_ts" 2 lacks s1)
drop12_ms=$(settle_ms "$cut_ts" "$heal_ts" 1 lacks s2)
recover=()
for (( s = 1; s <= SITES; s++ )); do recover+=("$(settle_ms "$heal_ts" "$end_ts" "$s" eq "$full")"); done
recover_ms=$(max_of "${recover[@]}")

result=PASS
(( drop21_ms >= 0 && others == 0 && recover_ms >= 0 )) || result=FAIL
summary "converge_ms=$CONVERGE_MS drop21_ms=$drop21_ms drop12_ms=$drop12_ms others=$others recover_ms=$recover_ms result=$result"
[[ $result == PASS ]]
