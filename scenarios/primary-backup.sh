#!/usr/bin/env bash
#
# primary-backup: active/passive DNS failover with `policy = "priority"`. s1 is the primary
# (priority 1), every other site a backup (priority 2); every config says so, for itself
# (`[node] priority`) and for its peers (`[[peers]] priority`). The pollers ask every site for
# `www`, whose `[[zone.record]]` has that policy, a TTL of 4 s and a degraded TTL of 1 s.
#
# Phases: every site answers with the primary alone; the primary is cut off (its cable pulled,
# or with `--cut nft` it drops everything, as in site-loss.sh); every backup must answer with
# the backups alone (failover_ms, from the cut until every backup does so for good); the cut is
# healed; every site must answer with the primary alone again (failback_ms; backup_failback_ms
# counts the backups only: the primary never stops answering with itself, so its own figure is
# mostly the poller's query in flight at the heal running into dig's 1 s timeout). No answer may ever
# hold both levels. `dig` also reads the TTL the sites give: 4 while the primary is in the
# answer, 1 while the backups stand in (so caches come back to the primary quickly).
#
# A client that caches sees the backup at most one TTL after the sites switch
# (client_failover_max_ms = failover_ms + ttl), and the primary at most one degraded TTL after
# they switch back (client_failback_max_ms = failback_ms + ttl_degraded).
SCENARIO=primary-backup
SCENARIO_USAGE="[--cut link|nft] [--hold SECONDS]"
SCENARIO_HELP="  --cut MODE   link (default): the primary's bridge port goes down; nft: it drops everything
  --hold S     how long the cut and the healed phase each last (default 8)
  (this scenario runs 2 sites unless --sites says otherwise: s1 primary, the others backups)
"
CUT="link"
HOLD_S=8
HOLD_MIN=4
scenario_arg() {
    case $1 in
        --cut) [[ $2 == link || $2 == nft ]] || return 1; CUT=$2 ;;
        *) return 1 ;;
    esac
}
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SITES=2                 # the default here; --sites N (2..9) still applies
TTL=4
TTL_DEGRADED=1
RECORD=www
QNAME=$RECORD.$ORIGIN   # what the pollers ask for
PRIMARY=1
# Bounds for PASS, in ms (the netns test restates them): detection is about 1.1 s with the
# default timing, the return about 1 s.
FAILOVER_MAX_MS=5000
FAILBACK_MAX_MS=8000

SITE_EXTRA_TOML="[[zone.record]]
name = \"$RECORD\"
policy = \"priority\"
ttl = $TTL
ttl_degraded = $TTL_DEGRADED"

# The priority every config gives site $1.
priority_of() { if (( $1 == PRIMARY )); then echo 1; else echo 2; fi; }

# Adds `priority = P` to each config's own [node] table and to each [[peers]] entry, after its
# `name` line (lib.sh writes both; TOML forbids a second [node] table, so it is inserted here).
scenario_before_nodes() {
    local i j
    for (( i = 1; i <= SITES; i++ )); do
        local file=$WORK/s$i/spdu.toml prio=()
        for (( j = 1; j <= SITES; j++ )); do prio[j]=$(priority_of "$j"); done
        awk -v own="${prio[i]}" -v list="${prio[*]}" '
            BEGIN { n = split(list, p, " ") }
            /^\[/ { section = $0 }
            { print }
            section == "[node]" && /^\[node\]$/ { print "priority = " own }
            section == "[[peers]]" && /^name = "s[0-9]+"$/ {
                j = $3; gsub(/[^0-9]/, "", j)
                print "priority = " p[j]
            }' "$file" >"$file.new" || die "cannot rewrite $file"
        mv "$file.new" "$file"
        (( $(grep -c '^priority = ' "$file") == SITES )) || die "$file: priorities not written"
        "$SPDU" check --config "$file" >/dev/null 2>"$WORK/s$i/check.log" \
            || die "s$i's config is refused: $(head -c 300 "$WORK/s$i/check.log")"
    done
}

# What every site answers once converged: the primary alone (lib.sh's start-up waits for it).
all_sites() { set_of "$PRIMARY"; }

# The TTL of site $1's first A record for the name, as dig in the client namespace reads it
# (empty when there is none).
ttl_at() {
    ip netns exec "$(client_ns)" dig +noall +answer +time=1 +tries=1 @"$(site_addr "$1")" "$QNAME" A 2>/dev/null \
        | awk '$4 == "A" { print $2; exit }'
}

# mixed FROM: answers, in every poll log from FROM on, that hold the primary and another site.
mixed() {
    cat "$WORK"/poll.s*.log | awk -v from="$1" -v p="s$PRIMARY" '
        $1 >= from && $3 ~ /^s[0-9]/ {
            n = split($3, parts, ","); has = 0
            for (k = 1; k <= n; k++) if (parts[k] == p) has = 1
            if (has && n > 1) m++
        }
        END { print m + 0 }'
}

scenario_start "$@"
conv_ts=$(now_ns)

backups=$(sites_except "$PRIMARY")
# shellcheck disable=SC2086  # the backups' numbers, one word each
backup_set=$(set_of $backups)
primary_set=$(set_of "$PRIMARY")
sleep 2

ttl_up=()
for (( s = 1; s <= SITES; s++ )); do ttl_up+=("$(ttl_at "$s")"); done
event "TTL with the primary up, per site: ${ttl_up[*]}"

if [[ $CUT == link ]]; then link_down "$PRIMARY"; else nft_drop_all "$PRIMARY"; fi
cut_ts=$(now_ns)
event "cut the primary s$PRIMARY off ($CUT)"
sleep "$HOLD_S"

ttl_cut=()
for s in $backups; do ttl_cut+=("$(ttl_at "$s")"); done
event "TTL while the backups stand in, per backup: ${ttl_cut[*]}"

if [[ $CUT == link ]]; then link_up "$PRIMARY"; else nft_flush "$PRIMARY"; fi
heal_ts=$(now_ns)
event "heal s$PRIMARY"
sleep "$HOLD_S"

ttl_healed=()
for (( s = 1; s <= SITES; s++ )); do ttl_healed+=("$(ttl_at "$s")"); done
event "TTL after the heal, per site: ${ttl_healed[*]}"
end_ts=$(now_ns)
finish

failover=() failback=() wrong_before=0 cut_changes=() heal_changes=()
for (( s = 1; s <= SITES; s++ )); do
    wrong_before=$(( wrong_before + $(violations "$conv_ts" "$cut_ts" "$s" eq "$primary_set") ))
    failback+=("$(settle_ms "$heal_ts" "$end_ts" "$s" eq "$primary_set")")
    heal_changes+=("$(changes "$heal_ts" "$end_ts" "$s" | cut -d' ' -f1)")
done
backup_failback=()
for s in $backups; do
    failover+=("$(settle_ms "$cut_ts" "$heal_ts" "$s" eq "$backup_set")")
    backup_failback+=("$(settle_ms "$heal_ts" "$end_ts" "$s" eq "$primary_set")")
    cut_changes+=("$(changes "$cut_ts" "$heal_ts" "$s" | cut -d' ' -f1)")
done
failover_ms=$(max_of "${failover[@]}")
failback_ms=$(max_of "${failback[@]}")
backup_failback_ms=$(max_of "${backup_failback[@]}")
mixed_n=$(mixed "$conv_ts")
changes_max=$(max_of "${cut_changes[@]}" "${heal_changes[@]}")

# Every TTL read in a phase must be that phase's.
ttl_ok=1
for t in "${ttl_up[@]}" "${ttl_healed[@]}"; do [[ $t == "$TTL" ]] || ttl_ok=0; done
for t in "${ttl_cut[@]}"; do [[ $t == "$TTL_DEGRADED" ]] || ttl_ok=0; done

result=PASS
(( failover_ms >= 0 && failover_ms <= FAILOVER_MAX_MS )) || result=FAIL
(( failback_ms >= 0 && failback_ms <= FAILBACK_MAX_MS )) || result=FAIL
(( wrong_before == 0 && mixed_n == 0 && ttl_ok == 1 && changes_max <= 1 )) || result=FAIL
client_failover=-1 client_failback=-1
(( failover_ms >= 0 )) && client_failover=$(( failover_ms + TTL * 1000 ))
(( failback_ms >= 0 )) && client_failback=$(( failback_ms + TTL_DEGRADED * 1000 ))
echo "failover per backup (ms): ${failover[*]}; failback per site (ms): ${failback[*]}"
echo "TTL (s): primary up ${ttl_up[*]}; backups standing in ${ttl_cut[*]}; healed ${ttl_healed[*]} (configured ttl $TTL, ttl_degraded $TTL_DEGRADED)"
join() { local IFS=,; echo "$*"; }
summary "cut=$CUT converge_ms=$CONVERGE_MS failover_ms=$failover_ms failback_ms=$failback_ms" \
    "backup_failback_ms=$backup_failback_ms" \
    "client_failover_max_ms=$client_failover client_failback_max_ms=$client_failback" \
    "ttl=$TTL ttl_degraded=$TTL_DEGRADED ttl_up=$(join "${ttl_up[@]}") ttl_cut=$(join "${ttl_cut[@]}")" \
    "ttl_healed=$(join "${ttl_healed[@]}") ttl_ok=$ttl_ok wrong_before=$wrong_before mixed=$mixed_n" \
    "changes_max=$changes_max result=$result"
[[ $result == PASS ]]
