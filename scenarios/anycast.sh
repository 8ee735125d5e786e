#!/usr/bin/env bash
#
# anycast: BGP anycast driven by spdu. Three sites gossip on the usual bridge; sites s1 and s2
# also run real ExaBGP (Debian `exabgp`, process `spdu exabgp`, text encoder) peering over eBGP
# with a real BIRD 2 (`bird2`) in a router namespace of its own (one link per site, separate
# from the gossip bridge); s3 is the witness that gives each of them a second observer. Every
# site checks its own service (a web server, `[health] check = "tcp"`) and has
# `[anycast] prefixes = ["198.18.100.0/24"]`. Read from BIRD's table (`birdc show route`):
#
#   0. both s1 and s2 announce the prefix (announce_ms, from the nodes' start);
#   1. s1's web server stops: s1's route is withdrawn (withdraw_after_service_stop_ms), and
#      comes back when it starts again (reannounce_after_service_ms);
#   2. s1 is cut off from its peers (its bridge port down) while its own check still passes and
#      its BGP session stays up: its route is withdrawn (withdraw_after_cut_ms), as nobody
#      vouches for it any more;
#   3. the cut heals: announced again (reannounce_after_heal_ms);
#   4. s1's node is killed (ExaBGP and `spdu exabgp` keep running): withdrawn by the fail-safe
#      (withdraw_after_node_stop_ms); started again: announced again
#      (reannounce_after_node_start_ms);
#   5. s1's `spdu exabgp` is killed: ExaBGP restarts it (respawned=1), the new one sends the
#      state again, and BIRD still holds s1's route.
#
# s2's route must be in BIRD's table at every sample (collateral = samples without it).
SCENARIO=anycast
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PREFIX_V4=198.18.100.0/24
WEB_PORT=18080
ROUTER_AS=65000
WAIT_S=30               # longest wait for one route change
# The PASS bounds, in ms.
SERVICE_WITHDRAW_MAX_MS=5000
CUT_WITHDRAW_MAX_MS=10000
NODE_WITHDRAW_MAX_MS=3000
BACK_MAX_MS=15000

SITE_EXTRA_TOML="[health]
check = \"tcp\"
port = $WEB_PORT

[anycast]
prefixes = [\"$PREFIX_V4\"]
med = 100"

parse_args "$@"
(( SITES == 3 )) || { echo "error: the $SCENARIO scenario runs with 3 sites (two announce, one witness)" >&2; exit 2; }
preflight
tools_missing=()
for tool in exabgp bird birdc python3 pgrep; do command -v "$tool" >/dev/null 2>&1 || tools_missing+=("$tool"); done
if (( ${#tools_missing[@]} > 0 )); then
    echo "error: missing tools: ${tools_missing[*]} (Debian: apt-get install exabgp bird2 python3 procps)" >&2
    exit 2
fi
PYTHON=$(python3 -c 'import sys; print(sys.executable)') || { echo "error: python3 does not run" >&2; exit 2; }
install_traps

rt_ns() { echo "${PREFIX}rt"; }
# The BGP link of site $1: the router is .1, the site .2, in 198.18.(10+$1).0/24.
rt_addr() { echo "198.18.$(( 10 + $1 )).1"; }
bgp_addr() { echo "198.18.$(( 10 + $1 )).2"; }

# Site $1's service: a web server on its service address (its own check connects to it).
service_start() {
    local i=$1 www=$WORK/s$1/www n
    mkdir -p "$www"
    ip netns exec "$(site_ns "$i")" "$PYTHON" -m http.server "$WEB_PORT" --bind "$(site_addr "$i")" \
        --directory "$www" </dev/null >>"$WORK/s$i/web.log" 2>&1 &
    AUX_PID[web$i]=$!
    for (( n = 0; n < 100; n++ )); do
        ip netns exec "$(site_ns "$i")" timeout 1 bash -c "exec 3<>/dev/tcp/$(site_addr "$i")/$WEB_PORT" \
            2>/dev/null && return 0
        kill -0 "${AUX_PID[web$i]}" 2>/dev/null || die "the web server of s$i exited"
        sleep 0.05
    done
    die "the web server of s$i did not listen within 5 s"
}

service_stop() {
    local pid=${AUX_PID[web$1]:-}
    [[ -n $pid ]] || return 0
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "AUX_PID[web$1]"
}

# The router namespace, its links to s1 and s2, and BIRD.
router_up() {
    local i rt dir=$WORK/rt
    rt=$(rt_ns)
    add_ns "$rt"
    mkdir -p "$dir"
    for i in 1 2; do
        ip -n "$rt" link add "r$i" type veth peer name bgp0 netns "$(site_ns "$i")"
        ip -n "$rt" addr add "$(rt_addr "$i")/24" dev "r$i"
        ip -n "$rt" link set "r$i" up
        ip -n "$(site_ns "$i")" addr add "$(bgp_addr "$i")/24" dev bgp0
        ip -n "$(site_ns "$i")" link set bgp0 up
    done
    {
        echo "router id $(rt_addr 1);"
        echo "log \"$dir/bird.log\" all;"
        echo "protocol device {}"
        for i in 1 2; do
            echo "protocol bgp s$i {"
            echo "    local $(rt_addr "$i") as $ROUTER_AS;"
            echo "    neighbor $(bgp_addr "$i") as $(( ROUTER_AS + i ));"
            echo "    connect retry time 1;"
            echo "    ipv4 { import filter { if net ~ [ $PREFIX_V4 ] then accept; reject; }; export none; };"
            echo "}"
        done
    } >"$dir/bird.conf"
    ip netns exec "$rt" bird -f -c "$dir/bird.conf" -s "$dir/bird.ctl" -P "$dir/bird.pid" \
        </dev/null >>"$dir/bird.out" 2>&1 &
    AUX_PID[bird]=$!
    event "start BIRD in $rt (pid ${AUX_PID[bird]})"
}

# ExaBGP at site $1, running `spdu exabgp` as its process.
exabgp_start() {
    local i=$1 dir=$WORK/s$1
    {
        echo "process spdu {"
        echo "    run $SPDU exabgp --config $dir/spdu.toml;"
        echo "    encoder text;"
        echo "}"
        echo "neighbor $(rt_addr "$i") {"
        echo "    router-id $(bgp_addr "$i");"
        echo "    local-address $(bgp_addr "$i");"
        echo "    local-as $(( ROUTER_AS + i ));"
        echo "    peer-as $ROUTER_AS;"
        echo "    family { ipv4 unicast; }"
        echo "    api { processes [ spdu ]; }"
        echo "}"
    } >"$dir/exabgp.conf"
    ip netns exec "$(site_ns "$i")" env exabgp.api.cli=false exabgp.daemon.user=root \
        exabgp.daemon.drop=false exabgp.log.destination=stdout exabgp "$dir/exabgp.conf" \
        </dev/null >>"$dir/exabgp.log" 2>&1 &
    AUX_PID[exabgp$i]=$!
    event "start ExaBGP at s$i (pid ${AUX_PID[exabgp$i]})"
}

# "s1=0|1 s2=0|1": whether BIRD's table holds the prefix from each site.
routes() {
    local table s1=0 s2=0
    table=$(birdc -s "$WORK/rt/bird.ctl" show route "$PREFIX_V4" 2>/dev/null) || true
    [[ $table == *"[s1 "* ]] && s1=1
    [[ $table == *"[s2 "* ]] && s2=1
    echo "s1=$s1 s2=$s2"
}

# wait_routes WANT TIMEOUT_S: polls BIRD until `routes` prints WANT and sets WAITED_MS to the
# ms since FROM_NS, or dies. Once s2 has announced (S2_UP), counts samples without its route.
FROM_NS=0
WAITED_MS=0
S2_UP=0
COLLATERAL=0
SAMPLES=0
wait_routes() {
    local want=$1 deadline=$(( $(now_ns) + $2 * 1000000000 )) got
    while :; do
        got=$(routes)
        if (( S2_UP == 1 )); then
            SAMPLES=$(( SAMPLES + 1 ))
            [[ $got == *"s2=1"* ]] || { COLLATERAL=$(( COLLATERAL + 1 )); say "BIRD lost s2's route: $got"; }
        fi
        if [[ $got == "$want" ]]; then
            WAITED_MS=$(( ($(now_ns) - FROM_NS) / 1000000 ))
            event "BIRD: $got (after $WAITED_MS ms)"
            return 0
        fi
        if (( $(now_ns) >= deadline )); then
            birdc -s "$WORK/rt/bird.ctl" show protocols >&2 || true
            tail -n 20 "$WORK/s1/exabgp.log" >&2 || true
            die "BIRD did not reach '$want' within $2 s (last: $got)"
        fi
        sleep 0.05
    done
}

# Site $1's own /v1/anycast (the body), read inside its namespace.
anycast_of() {
    ip netns exec "$(site_ns "$1")" timeout 2 bash -c \
        "exec 3<>/dev/tcp/${CONTROL%:*}/${CONTROL#*:}; printf 'GET /v1/anycast HTTP/1.0\r\n\r\n' >&3; cat <&3" \
        2>/dev/null | tail -n 1
}

scenario_before_nodes() {
    local i
    for (( i = 1; i <= SITES; i++ )); do service_start "$i"; done
    router_up
    for i in 1 2; do exabgp_start "$i"; done
}

world_up
FROM_NS=$T0
wait_routes "s1=1 s2=1" "$WAIT_S"
announce_ms=$WAITED_MS
S2_UP=1
med=$(birdc -s "$WORK/rt/bird.ctl" show route "$PREFIX_V4" all 2>/dev/null | grep -o 'BGP.med: [0-9]*' | head -n 1)
say "BIRD's table: $PREFIX_V4 from s1 and s2 ($med)"
[[ $med == "BGP.med: 101" ]] || die "expected MED 101 (med 100 + priority 1), BIRD shows '$med'"
sleep 1

# 1. s1's service stops, then starts again.
FROM_NS=$(now_ns)
service_stop 1
event "stop s1's web server (node, ExaBGP, BGP session stay up)"
wait_routes "s1=0 s2=1" "$WAIT_S"
withdraw_service=$WAITED_MS
FROM_NS=$(now_ns)
service_start 1
event "start s1's web server again"
wait_routes "s1=1 s2=1" "$WAIT_S"
back_service=$WAITED_MS
sleep 1

# 2. s1 cut off from its peers; its own check still passes, its BGP session stays up.
FROM_NS=$(now_ns)
link_down 1
event "cut s1 off from s2 and s3 (bridge port down; BGP link untouched)"
wait_routes "s1=0 s2=1" "$WAIT_S"
withdraw_cut=$WAITED_MS
cut_state=$(anycast_of 1)
say "s1 says: $cut_state"
[[ $cut_state == *'"healthy":true'* && $cut_state == *'"reason":"no_observers"'* ]] \
    || die "s1 should be healthy with no observers while cut off: $cut_state"
sleep 2

# 3. Heal.
FROM_NS=$(now_ns)
link_up 1
event "heal s1's link"
wait_routes "s1=1 s2=1" "$WAIT_S"
back_heal=$WAITED_MS
sleep 1

# 4. s1's node dies; ExaBGP and spdu exabgp stay.
FROM_NS=$(now_ns)
kill -KILL "${SITE_PID[1]}"
event "SIGKILL s1's node (ExaBGP keeps running)"
wait_routes "s1=0 s2=1" "$WAIT_S"
withdraw_node=$WAITED_MS
wait "${SITE_PID[1]}" 2>/dev/null || true
unset "SITE_PID[1]"
kill -0 "${AUX_PID[exabgp1]}" 2>/dev/null || die "ExaBGP at s1 exited with its node"
helper=$(pgrep -f "$SPDU exabgp --config $WORK/s1/spdu.toml" | head -n 1) \
    || die "spdu exabgp at s1 exited with its node"
sleep 1

# 5. The node starts again: announced again.
FROM_NS=$(now_ns)
site_start 1
wait_routes "s1=1 s2=1" "$WAIT_S"
back_node=$WAITED_MS

# 6. ExaBGP restarts its process (the old one killed): the new one sends the state again, and
#    s1's route is still (or again) in BIRD's table.
FROM_NS=$(now_ns)
kill -KILL "$helper"
event "SIGKILL s1's spdu exabgp (pid $helper); ExaBGP respawns it"
respawned=0
for (( n = 0; n < 100; n++ )); do
    new_helper=$(pgrep -f "$SPDU exabgp --config $WORK/s1/spdu.toml" | head -n 1) || true
    if [[ -n $new_helper && $new_helper != "$helper" ]]; then respawned=1; break; fi
    sleep 0.1
done
(( respawned == 1 )) || die "ExaBGP did not restart spdu exabgp at s1 within 10 s"
event "ExaBGP restarted spdu exabgp at s1 (pid $new_helper)"
sleep 2
wait_routes "s1=1 s2=1" "$WAIT_S"

result=PASS
fail() { echo "FAIL: $*" >&2; result=FAIL; }
(( withdraw_service <= SERVICE_WITHDRAW_MAX_MS )) || fail "service stop withdrawn after $withdraw_service ms"
(( withdraw_cut <= CUT_WITHDRAW_MAX_MS )) || fail "cut withdrawn after $withdraw_cut ms"
(( withdraw_node <= NODE_WITHDRAW_MAX_MS )) || fail "node stop withdrawn after $withdraw_node ms"
(( back_service <= BACK_MAX_MS && back_heal <= BACK_MAX_MS && back_node <= BACK_MAX_MS )) \
    || fail "slow return: $back_service / $back_heal / $back_node ms"
(( COLLATERAL == 0 )) || fail "s2's route was missing in $COLLATERAL of $SAMPLES samples"
(( SAMPLES > 0 )) || fail "no samples of s2's route"

summary "announce_ms=$announce_ms withdraw_after_service_stop_ms=$withdraw_service" \
    "reannounce_after_service_ms=$back_service withdraw_after_cut_ms=$withdraw_cut" \
    "reannounce_after_heal_ms=$back_heal withdraw_after_node_stop_ms=$withdraw_node" \
    "reannounce_after_node_start_ms=$back_node respawned=$respawned" \
    "collateral=$COLLATERAL samples=$SAMPLES result=$result"
[[ $result == PASS ]]
