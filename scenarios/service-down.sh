#!/usr/bin/env bash
#
# service-down: every site runs a real HTTP server (python3 -m http.server) on its service
# address, port 18080, and every node checks it (`[health] check = "http"`); peers probe it too.
# The network stays whole and every spdu node stays up; only the last site's *service* breaks:
#
#   1. its web server is stopped (connections refused): every site, the victim included, must drop
#      it from its answers (drop_ms) — the victim withdraws its own address and answers with its
#      peers only (it fails open only when nothing at all qualifies);
#   2. the web server is started again: every site must answer with every site (return_ms);
#   3. port 18080 is blackholed by an nftables drop in the victim's namespace (timeouts, not
#      refusals): dropped again (blackhole_drop_ms), then the rule is removed and it must return
#      (blackhole_return_ms).
#
# No other site may ever be missing from anyone's answer (collateral).
#
# Expected with the default [health] timing (check every 500 ms, down after 2 failures, up after
# 3 passes, 1 s timeout): refused about 1 s, blackholed about 2 s, back about 1.5 s.
SCENARIO=service-down
SCENARIO_USAGE="[--hold SECONDS]"
SCENARIO_HELP="  --hold S     how long each phase (down, back, blackholed, back) lasts (default 6)
"
HOLD_S=6
HOLD_MIN=1
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WEB_PORT=18080
# The PASS bounds, in ms.
DROP_MAX_MS=3000
BLACKHOLE_DROP_MAX_MS=4000
RETURN_MAX_MS=5000

SITE_EXTRA_TOML="[health]
check = \"http\"
port = $WEB_PORT
path = \"/\""

parse_args "$@"
preflight
PYTHON=$(command -v python3 2>/dev/null || true)
[[ -n $PYTHON ]] || { echo "error: the $SCENARIO scenario needs python3 (its web servers)" >&2; exit 2; }
# The interpreter itself, not a wrapper (pyenv shims): its pid is the server's pid.
PYTHON=$("$PYTHON" -c 'import sys; print(sys.executable)') || { echo "error: python3 does not run" >&2; exit 2; }
install_traps

# Site $1's web server: serves a one-file directory (never the site's work directory: its key is
# there) on its service address, in its namespace; recorded in AUX_PID so cleanup kills it.
web_start() {
    local i=$1 www=$WORK/s$1/www
    mkdir -p "$www"
    [[ -f $www/index.html ]] || echo "s$i ok" >"$www/index.html"
    ip netns exec "$(site_ns "$i")" "$PYTHON" -u -m http.server "$WEB_PORT" --bind "$(site_addr "$i")" \
        --directory "$www" </dev/null >>"$WORK/s$i/http.log" 2>&1 &
    AUX_PID[web$i]=$!
}

# Waits (at most 5 s) until site $1's web server accepts connections; sets WEB_WAIT_MS to the
# time that took (not printed: `die` must not run in a command substitution's subshell).
WEB_WAIT_MS=0
web_wait() {
    local i=$1 t n
    t=$(now_ns)
    for (( n = 0; n < 100; n++ )); do
        kill -0 "${AUX_PID[web$i]}" 2>/dev/null || { tail -n 5 "$WORK/s$i/http.log" >&2; die "the web server of s$i exited"; }
        if ip netns exec "$(site_ns "$i")" timeout 1 bash -c "exec 3<>/dev/tcp/$(site_addr "$i")/$WEB_PORT" 2>/dev/null; then
            WEB_WAIT_MS=$(( ($(now_ns) - t) / 1000000 ))
            return 0
        fi
        sleep 0.05
    done
    die "the web server of s$i did not listen within 5 s"
}

# Stops site $1's web server (SIGTERM, then SIGKILL after 2 s) and waits until it is gone.
web_stop() {
    local i=$1 n pid=${AUX_PID[web$1]:-}
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for (( n = 0; n < 20; n++ )); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "AUX_PID[web$i]"
}

# Runs inside world_up, before the nodes start: every site's service is up when its node starts.
scenario_before_nodes() {
    local i
    for (( i = 1; i <= SITES; i++ )); do web_start "$i"; done
    for (( i = 1; i <= SITES; i++ )); do
        web_wait "$i"
        say "web server of s$i listening on $(site_addr "$i"):$WEB_PORT (pid ${AUX_PID[web$i]}, after $WEB_WAIT_MS ms)"
    done
}

world_up

victim=$SITES
others=$(sites_except "$victim")
sleep 2

# Phase 1: the service refuses connections.
web_stop "$victim"
stop_ts=$(now_ns)
event "stop s$victim's web server (its node stays up)"
sleep "$HOLD_S"

start_ts=$(now_ns)
web_start "$victim"
event "start s$victim's web server (pid ${AUX_PID[web$victim]})"
web_wait "$victim"
event "s$victim's web server listening after $WEB_WAIT_MS ms"
sleep "$HOLD_S"

# Phase 2: the service's packets vanish (each check waits for its timeout).
nft_site "$victim" add rule inet spdu input tcp dport "$WEB_PORT" drop
hole_ts=$(now_ns)
event "blackhole s$victim's tcp port $WEB_PORT (nft drop)"
sleep "$HOLD_S"

nft_flush "$victim"
unhole_ts=$(now_ns)
event "remove the blackhole"
sleep "$HOLD_S"
end_ts=$(now_ns)
finish

full=$(all_sites)
drop=() back=() hole=() unhole=() collateral=0
for (( s = 1; s <= SITES; s++ )); do
    drop+=("$(settle_ms "$stop_ts" "$start_ts" "$s" lacks "s$victim")")
    back+=("$(settle_ms "$start_ts" "$hole_ts" "$s" eq "$full")")
    hole+=("$(settle_ms "$hole_ts" "$unhole_ts" "$s" lacks "s$victim")")
    unhole+=("$(settle_ms "$unhole_ts" "$end_ts" "$s" eq "$full")")
    for o in $others; do
        collateral=$(( collateral + $(violations "$stop_ts" "$end_ts" "$s" has "s$o") ))
    done
done
drop_ms=$(max_of "${drop[@]}")
return_ms=$(max_of "${back[@]}")
hole_ms=$(max_of "${hole[@]}")
unhole_ms=$(max_of "${unhole[@]}")

result=PASS
(( drop_ms >= 0 && drop_ms <= DROP_MAX_MS )) || result=FAIL
(( hole_ms >= 0 && hole_ms <= BLACKHOLE_DROP_MAX_MS )) || result=FAIL
(( return_ms >= 0 && return_ms <= RETURN_MAX_MS )) || result=FAIL
(( unhole_ms >= 0 && unhole_ms <= RETURN_MAX_MS )) || result=FAIL
(( collateral == 0 )) || result=FAIL
echo "per site s1..s$SITES (ms): drop ${drop[*]}; return ${back[*]}; blackhole drop ${hole[*]}; blackhole return ${unhole[*]}"
summary "converge_ms=$CONVERGE_MS drop_ms=$drop_ms return_ms=$return_ms blackhole_drop_ms=$hole_ms blackhole_return_ms=$unhole_ms collateral=$collateral result=$result"
[[ $result == PASS ]]
