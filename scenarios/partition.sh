#!/usr/bin/env bash
#
# partition: the sites split into two groups that cannot reach each other (every site drops all
# packets to and from the other group, nftables); the client still reaches everyone. Each side
# must end up answering exactly its own side; after the heal everyone answers everyone.
#
# Groups: the first floor(N/2) sites against the rest (3 sites: {s1} | {s2,s3};
# 5 sites: {s1,s2} | {s3,s4,s5}).
#
# Expected: every site drops the other side within about a second (its own probing fails).
# A site keeps its own side throughout: the other side's last observations, made before the
# split, still say "reachable" until they go stale (stale_after, 3.5 s), and afterwards they no
# longer count. split_ms is the time until every site answers exactly its own side.
SCENARIO=partition
SCENARIO_USAGE="[--hold SECONDS]"
SCENARIO_HELP="  --hold S     how long the split and the healed phase each last (default 10)
"
HOLD_S=10
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
scenario_start "$@"

left=$(seq 1 $(( SITES / 2 )) | tr '\n' ' ')
right=$(sites_except $left)
sleep 2

for a in $left; do
    for b in $right; do
        nft_drop_from "$a" "$b"; nft_drop_to "$a" "$b"
        nft_drop_from "$b" "$a"; nft_drop_to "$b" "$a"
    done
done
split_ts=$(now_ns)
event "partition {$(set_of $left)} | {$(set_of $right)}"
sleep "$HOLD_S"

for (( s = 1; s <= SITES; s++ )); do nft_flush "$s"; done
heal_ts=$(now_ns)
event "heal the partition"
sleep "$HOLD_S"
end_ts=$(now_ns)
finish

full=$(all_sites)
split=() recover=() cross=0
# A site of one side may answer for the other side only until it notices the split; after
# split_ms nobody may (settle_ms already demands the exact own side up to the end of the phase).
for s in $left; do split+=("$(settle_ms "$split_ts" "$heal_ts" "$s" eq "$(set_of $left)")"); done
for s in $right; do split+=("$(settle_ms "$split_ts" "$heal_ts" "$s" eq "$(set_of $right)")"); done
for (( s = 1; s <= SITES; s++ )); do recover+=("$(settle_ms "$heal_ts" "$end_ts" "$s" eq "$full")"); done
split_ms=$(max_of "${split[@]}")
recover_ms=$(max_of "${recover[@]}")
# Answers that named a site of the other side after the split had settled everywhere.
if (( split_ms >= 0 )); then
    settled=$(( split_ts + split_ms * 1000000 ))
    for s in $left; do for o in $right; do cross=$(( cross + $(violations "$settled" "$heal_ts" "$s" lacks "s$o") )); done; done
    for s in $right; do for o in $left; do cross=$(( cross + $(violations "$settled" "$heal_ts" "$s" lacks "s$o") )); done; done
fi

result=PASS
(( split_ms >= 0 && recover_ms >= 0 && cross == 0 )) || result=FAIL
echo "split per site (ms): ${split[*]}; recover per site (ms): ${recover[*]}"
summary "groups=$(set_of $left)/$(set_of $right) converge_ms=$CONVERGE_MS split_ms=$split_ms recover_ms=$recover_ms cross=$cross result=$result"
[[ $result == PASS ]]
