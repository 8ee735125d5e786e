# shellcheck shell=bash
#
# scenarios/lib.sh: the shared half of every scenario script.
#
# Owns the world a scenario runs in, and nothing outside it:
#   - one network namespace per site (`<prefix>s<i>`, address 198.18.0.<i>/24 on eth0),
#     one client namespace (`<prefix>client`, 198.18.0.100) and one bridge namespace
#     (`<prefix>br`) whose bridge joins them all. Nothing is routed out of the namespaces:
#     there is no default route anywhere, so traffic stays in 198.18.0.0/24.
#   - one real `spdu run` per site, with its own key (generated with `spdu keygen`) and config;
#   - one DNS poller per site, running in the client namespace, logging every answer;
#   - any helper process a scenario starts and records in AUX_PID (e.g. a site's service).
# Invariants: every namespace and process it creates is recorded and removed by `cleanup`,
# which runs on EXIT, INT and TERM (kill by pid, delete namespaces by name); every loop is
# bounded by a count or a deadline; the prefix `spdu-<pid>-` keeps parallel runs apart.
#
# Logs (in $WORK, kept when a run fails or with --keep):
#   poll.s<i>.log   "<ts_ns> s<i> <answer>" per query; <answer> is the sorted set of sites
#                   ("s1,s2,s3"), or empty / timeout / unreachable
#   events.log      "<ts_ns> EVENT <text>" for every action the scenario takes
#   s<i>/spdu.log   the node's stderr

set -euo pipefail

SCN_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCN_DIR/.." && pwd)

# --- settings (scripts may change them before `world_up`) -----------------------------------

SCENARIO=${SCENARIO:-unnamed}
SITES=3
SPDU=""
KEEP=0
PREFIX="spdu-$$-"
NET=198.18.0            # every address lives in 198.18.0.0/24, inside 198.18.0.0/15
CLIENT_ADDR=$NET.100
GOSSIP_PORT=7946
CONTROL=127.0.0.1:7947  # per-namespace loopback
ORIGIN=pool.example.test
QNAME=api.$ORIGIN
POLL_MS=${POLL_MS:-100} # pause between two queries of one site
CONVERGE_S=20           # longest wait for the first full answer everywhere

# The node's timing, written into every config (these are spdu's defaults).
PROBE_INTERVAL_MS=100
PROBE_TIMEOUT_MS=1000
DOWN_AFTER=8
UP_AFTER=3
HEARTBEAT_MS=1000
STALE_AFTER_MS=3500

# Appended verbatim to every site's config (e.g. a `[health]` section); empty by default.
SITE_EXTRA_TOML=""

# --- state -----------------------------------------------------------------------------------

WORK=""
T0=0                    # ns timestamp the timeline counts from
NAMESPACES=()
POLLER_PIDS=()
declare -A SITE_PID=()
declare -A AUX_PID=()   # helper processes by name (the scenario's own); cleanup kills them too
SUMMARY_PRINTED=0

# --- output ----------------------------------------------------------------------------------

now_ns() { date +%s%N; }

# Progress for the person watching: stderr, with the time since T0.
say() {
    local t=$(( $(now_ns) - T0 ))
    (( T0 == 0 )) && t=0
    printf '[%3d.%03ds] %s\n' $(( t / 1000000000 )) $(( t / 1000000 % 1000 )) "$*" >&2
}

# Records an action in the timeline (and says it).
event() {
    printf '%s EVENT %s\n' "$(now_ns)" "$*" >>"$WORK/events.log"
    say "$*"
}

# Prints the machine-readable last line: `summary key=value ... result=PASS|FAIL`.
summary() {
    echo "SUMMARY scenario=$SCENARIO sites=$SITES $*"
    SUMMARY_PRINTED=1
}

# Gives up: prints an ERROR summary (so a caller parsing the output learns why) and exits 2.
die() {
    echo "error: $*" >&2
    if (( SUMMARY_PRINTED == 0 )); then
        summary "result=ERROR reason=$(printf '%s' "$*" | tr -s ' \t\n' '_' | cut -c1-120)"
    fi
    exit 2
}

usage() {
    cat <<EOF
usage: $0 [--sites N] [--spdu PATH] [--keep]${SCENARIO_USAGE:+ $SCENARIO_USAGE}

Runs the '$SCENARIO' scenario in network namespaces (needs root, ip, nft, dig).
  --sites N    number of sites, 2..9 (default 3; 3 and 5 are the tested sizes)
  --spdu PATH  the spdu binary (default: target/release/spdu in the repository, else spdu on PATH)
  --keep       keep the work directory (configs, keys, logs) after the run
${SCENARIO_HELP:-}
Prints a timeline of every site's DNS answers, then one line:
  SUMMARY scenario=$SCENARIO sites=N <figures> result=PASS|FAIL
EOF
}

# Parses the common options; a script handles its own through `scenario_arg NAME VALUE`
# (returns 0 when it took the option; the option always takes a value). A script that sets
# HOLD_S (its default phase length in seconds) also takes `--hold S`, S >= HOLD_MIN (default 0).
parse_args() {
    while (( $# > 0 )); do
        case $1 in
            --sites) SITES=${2:?--sites needs a number}; shift 2 ;;
            --spdu) SPDU=${2:?--spdu needs a path}; shift 2 ;;
            --keep) KEEP=1; shift ;;
            -h|--help) usage; exit 0 ;;
            *)
                if [[ $# -ge 2 ]] && declare -F scenario_arg >/dev/null && scenario_arg "$1" "$2"; then
                    shift 2
                elif [[ $1 == --hold && -n ${HOLD_S:-} && ${2:-} =~ ^[0-9]+$ ]] && (( $2 >= ${HOLD_MIN:-0} )); then
                    HOLD_S=$2
                    shift 2
                else
                    usage >&2
                    echo "error: unknown option: $1" >&2
                    exit 2
                fi
                ;;
        esac
    done
    [[ $SITES =~ ^[0-9]+$ ]] && (( SITES >= 2 && SITES <= 9 )) || { echo "error: --sites must be 2..9" >&2; exit 2; }
}

# The usual start of a scenario: options, checks, cleanup traps, then the world with its nodes.
scenario_start() {
    parse_args "$@"
    preflight
    install_traps
    world_up
}

# Refuses to run without root, the tools or the binary. Resolves $SPDU to an absolute path.
preflight() {
    if [[ $(id -u) != 0 ]]; then
        echo "error: the $SCENARIO scenario needs root (network namespaces, nftables); run it with sudo" >&2
        exit 2
    fi
    local tool missing=()
    for tool in ip nft dig date sleep; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if (( ${#missing[@]} > 0 )); then
        echo "error: missing tools: ${missing[*]} (Debian: apt-get install iproute2 nftables dnsutils)" >&2
        exit 2
    fi
    if [[ -z $SPDU ]]; then
        if [[ -x $REPO_ROOT/target/release/spdu ]]; then
            SPDU=$REPO_ROOT/target/release/spdu
        elif command -v spdu >/dev/null 2>&1; then
            SPDU=$(command -v spdu)
        else
            echo "error: no spdu binary: build it (cargo build -p spdu-node --release) or pass --spdu PATH" >&2
            exit 2
        fi
    fi
    [[ -x $SPDU ]] || { echo "error: $SPDU is not an executable" >&2; exit 2; }
    SPDU=$(cd "$(dirname "$SPDU")" && pwd)/$(basename "$SPDU")
}

# --- cleanup ---------------------------------------------------------------------------------

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    local pid i n
    for pid in "${POLLER_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for i in "${!SITE_PID[@]}"; do kill -TERM "${SITE_PID[$i]}" 2>/dev/null; done
    for i in "${!AUX_PID[@]}"; do kill -TERM "${AUX_PID[$i]}" 2>/dev/null; done
    # Give the nodes and helpers up to 3 s to stop cleanly, then kill what is left.
    for (( n = 0; n < 30; n++ )); do
        local alive=0
        for i in "${!SITE_PID[@]}"; do kill -0 "${SITE_PID[$i]}" 2>/dev/null && alive=1; done
        for i in "${!AUX_PID[@]}"; do kill -0 "${AUX_PID[$i]}" 2>/dev/null && alive=1; done
        (( alive == 0 )) && break
        sleep 0.1
    done
    for i in "${!SITE_PID[@]}"; do kill -KILL "${SITE_PID[$i]}" 2>/dev/null; done
    for i in "${!AUX_PID[@]}"; do kill -KILL "${AUX_PID[$i]}" 2>/dev/null; done
    for pid in "${POLLER_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    wait 2>/dev/null
    for (( n = ${#NAMESPACES[@]} - 1; n >= 0; n-- )); do
        ip netns delete "${NAMESPACES[$n]}" 2>/dev/null
    done
    if [[ -n $WORK && -d $WORK ]]; then
        if (( KEEP == 1 || rc != 0 )); then
            echo "work directory kept: $WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}

install_traps() {
    trap cleanup EXIT
    trap 'echo "interrupted" >&2; exit 130' INT
    trap 'echo "terminated" >&2; exit 143' TERM
}

# --- names and sets --------------------------------------------------------------------------

site_ns() { echo "${PREFIX}s$1"; }
client_ns() { echo "${PREFIX}client"; }
bridge_ns() { echo "${PREFIX}br"; }
site_addr() { echo "$NET.$1"; }

# `set_of 1 3` -> "s1,s3": the form answers take in the poll logs.
set_of() {
    local IFS=, out=() i
    for i in "$@"; do out+=("s$i"); done
    echo "${out[*]}"
}
all_sites() { set_of $(seq 1 "$SITES"); }
# Every site but the ones given.
sites_except() {
    local i keep=()
    for (( i = 1; i <= SITES; i++ )); do
        [[ " $* " == *" $i "* ]] || keep+=("$i")
    done
    echo "${keep[@]}"
}

# --- the world -------------------------------------------------------------------------------

add_ns() {
    ip netns add "$1" || die "cannot create namespace $1"
    NAMESPACES+=("$1")
    ip -n "$1" link set lo up
    ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 >/dev/null 2>&1 || true
}

# Joins namespace $1 to the bridge as port $2, with address $3 on its eth0.
plug() {
    local ns=$1 port=$2 addr=$3 br
    br=$(bridge_ns)
    ip -n "$br" link add "$port" type veth peer name eth0 netns "$ns"
    ip -n "$br" link set "$port" master br0 up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
}

# Every site gets an nftables table with empty input and output chains that the helpers fill.
nft_table() {
    ip netns exec "$(site_ns "$1")" nft -f - <<EOF
table inet spdu {
    chain input { type filter hook input priority 0; policy accept; }
    chain output { type filter hook output priority 0; policy accept; }
}
EOF
}

write_config() {
    local i=$1 j dir=$WORK/s$1
    {
        cat <<EOF
# Site s$i of the '$SCENARIO' scenario (generated by scenarios/lib.sh).
[node]
name = "s$i"
key = "$dir/node.key"
gossip = "$(site_addr "$i"):$GOSSIP_PORT"
dns = ["$(site_addr "$i"):53"]
control = "$CONTROL"
addresses = ["$(site_addr "$i")"]

[zone]
origin = "$ORIGIN"
names = ["api"]
ttl = 5
nameservers = [$(for (( j = 1; j <= SITES; j++ )); do printf '"s%d.example.test"%s' "$j" "$( (( j < SITES )) && echo ', ')"; done)]

[timing]
probe_interval_ms = $PROBE_INTERVAL_MS
probe_timeout_ms = $PROBE_TIMEOUT_MS
down_after = $DOWN_AFTER
up_after = $UP_AFTER
heartbeat_ms = $HEARTBEAT_MS
stale_after_ms = $STALE_AFTER_MS
EOF
        if [[ -n $SITE_EXTRA_TOML ]]; then
            printf '\n%s\n' "$SITE_EXTRA_TOML"
        fi
        for (( j = 1; j <= SITES; j++ )); do
            (( j == i )) && continue
            cat <<EOF

[[peers]]
name = "s$j"
key = "$(cat "$WORK/s$j/public")"
gossip = "$(site_addr "$j"):$GOSSIP_PORT"
EOF
        done
    } >"$dir/spdu.toml"
}

# Builds the namespaces, keys and configs, starts every node and the pollers, and waits until
# every site answers with every site. A script may define `scenario_before_nodes`: it runs once
# the namespaces, keys and configs exist, just before the nodes start (e.g. to start services).
world_up() {
    WORK=$(mktemp -d "/tmp/spdu-scn-$SCENARIO.XXXXXX")
    : >"$WORK/events.log"
    local i br
    br=$(bridge_ns)
    add_ns "$br"
    ip -n "$br" link add br0 type bridge forward_delay 0 stp_state 0
    ip -n "$br" link set br0 up
    add_ns "$(client_ns)"
    plug "$(client_ns)" c0 "$CLIENT_ADDR"
    for (( i = 1; i <= SITES; i++ )); do
        add_ns "$(site_ns "$i")"
        plug "$(site_ns "$i")" "v$i" "$(site_addr "$i")"
        nft_table "$i"
        mkdir -p "$WORK/s$i"
        "$SPDU" keygen --out "$WORK/s$i/node.key" | tail -n 1 >"$WORK/s$i/public" \
            || die "spdu keygen failed for s$i"
        grep -q . "$WORK/s$i/public" || die "spdu keygen printed no public key for s$i"
    done
    for (( i = 1; i <= SITES; i++ )); do write_config "$i"; done
    if declare -F scenario_before_nodes >/dev/null; then scenario_before_nodes; fi
    T0=$(now_ns)
    for (( i = 1; i <= SITES; i++ )); do site_start "$i"; done
    start_pollers
    local t_start=$T0 deadline=$(( $(now_ns) + CONVERGE_S * 1000000000 )) full
    full=$(all_sites)
    while :; do
        sleep 0.2
        local ok=1
        for (( i = 1; i <= SITES; i++ )); do
            kill -0 "${SITE_PID[$i]}" 2>/dev/null || { tail -n 20 "$WORK/s$i/spdu.log" >&2; die "site s$i exited at start-up"; }
            [[ $(last_answer "$i") == "$full" ]] || ok=0
        done
        (( ok == 1 )) && break
        (( $(now_ns) < deadline )) || { show_timeline >&2; die "sites did not converge within ${CONVERGE_S}s"; }
    done
    CONVERGE_MS=$(( ($(now_ns) - t_start) / 1000000 ))
    event "converged: every site answers $full (after ${CONVERGE_MS} ms)"
}

# --- sites -----------------------------------------------------------------------------------

site_start() {
    local i=$1
    ip netns exec "$(site_ns "$i")" "$SPDU" run --config "$WORK/s$i/spdu.toml" \
        </dev/null >>"$WORK/s$i/spdu.log" 2>&1 &
    SITE_PID[$i]=$!
    event "start s$i (pid ${SITE_PID[$i]})"
}

# Sends signal $2 (default TERM) to site $1 and waits (at most 5 s) for it to exit.
site_stop() {
    local i=$1 sig=${2:-TERM} n pid=${SITE_PID[$1]:-}
    [[ -n $pid ]] || return 0
    event "SIG$sig to s$i"
    kill "-$sig" "$pid" 2>/dev/null || true
    for (( n = 0; n < 50; n++ )); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "SITE_PID[$i]"
    event "s$i has exited"
}

# `spdu peers --json` of site $1, with the whitespace removed.
site_peers_json() {
    ip netns exec "$(site_ns "$1")" "$SPDU" peers --config "$WORK/s$1/spdu.toml" --json 2>/dev/null \
        | tr -d '[:space:]'
}

# The incarnation of node s$2's newest observation in site $1's view (empty if none).
# Relies on the observation's fields `"name":..,"incarnation":..` being adjacent, as serde writes
# them (cluster, observer, name, incarnation, seq, ...).
incarnation_seen() {
    site_peers_json "$1" | grep -o "\"name\":\"s$2\",\"incarnation\":[0-9]*" | head -n 1 | cut -d: -f3
}

# --- cutting links ---------------------------------------------------------------------------

# The cable of site $1 pulled / plugged back (its bridge port goes down / up).
link_down() { ip -n "$(bridge_ns)" link set "v$1" down; }
link_up() { ip -n "$(bridge_ns)" link set "v$1" up; }

nft_site() { ip netns exec "$(site_ns "$1")" nft "${@:2}"; }
# Site $1 drops every packet from site $2 (one direction only).
nft_drop_from() { nft_site "$1" add rule inet spdu input ip saddr "$(site_addr "$2")" drop; }
# Site $1 drops every packet to site $2.
nft_drop_to() { nft_site "$1" add rule inet spdu output ip daddr "$(site_addr "$2")" drop; }
# Site $1 drops everything but loopback, both ways.
nft_drop_all() {
    nft_site "$1" add rule inet spdu input iif != lo drop
    nft_site "$1" add rule inet spdu output oif != lo drop
}
# Site $1 drops $2 % of the packets arriving from other sites (the client is spared, so the
# timeline shows the sites' answers, not lost queries).
nft_loss() {
    nft_site "$1" add rule inet spdu input ip saddr "$NET.0/24" ip saddr != "$CLIENT_ADDR" \
        numgen random mod 100 "<" "$2" drop
}
nft_flush() { nft_site "$1" flush table inet spdu; }

# --- polling ---------------------------------------------------------------------------------

# One site's DNS poller; runs inside the client namespace until the deadline (ns).
poll_site() {
    local i=$1 addr=$2 log=$3 pause=$4 deadline=$5 ts out rc ip answer
    local -a names
    while (( $(date +%s%N) < deadline )); do
        ts=$(date +%s%N)
        rc=0
        out=$(dig +short +time=1 +tries=1 @"$addr" "$QNAME" A 2>&1) || rc=$?
        names=()
        if (( rc != 0 )); then
            [[ $out == *"timed out"* ]] && answer=timeout || answer=unreachable
        else
            for ip in $out; do
                if [[ $ip =~ ^198\.18\.0\.([0-9]+)$ ]]; then
                    names[${BASH_REMATCH[1]}]=s${BASH_REMATCH[1]}
                elif [[ $ip != \;* ]]; then
                    names[1000 + ${#names[@]}]="?$ip"
                fi
            done
            if (( ${#names[@]} == 0 )); then
                answer=empty
            else
                answer=$(IFS=,; echo "${names[*]}")
            fi
        fi
        echo "$ts s$i $answer" >>"$log"
        sleep "$pause"
    done
}

start_pollers() {
    local i deadline=$(( $(now_ns) + 3600 * 1000000000 ))
    export -f poll_site
    export QNAME
    for (( i = 1; i <= SITES; i++ )); do
        : >"$WORK/poll.s$i.log"
        ip netns exec "$(client_ns)" bash -c 'poll_site "$@"' poll "$i" "$(site_addr "$i")" \
            "$WORK/poll.s$i.log" "$(printf '0.%03d' "$POLL_MS")" "$deadline" &
        POLLER_PIDS+=($!)
    done
}

stop_pollers() {
    local pid
    for pid in "${POLLER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${POLLER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    POLLER_PIDS=()
}

# The newest answer logged for site $1.
last_answer() { tail -n 1 "$WORK/poll.s$1.log" 2>/dev/null | cut -d' ' -f3; }

# --- analysis (all on the poll logs; times in ns, results in ms) ------------------------------
#
# A predicate is MODE VALUE: `eq s1,s2` (exactly that set), `has s3` (a set with s3 in it),
# `lacks s3` (a set without s3). Non-answers (timeout, unreachable, empty) satisfy none.

AWK_PRED='
function holds(answer, mode, value,   n, parts, k, found) {
    if (answer !~ /^s[0-9]/) return 0
    if (mode == "eq") return answer == value
    n = split(answer, parts, ","); found = 0
    for (k = 1; k <= n; k++) if (parts[k] == value) found = 1
    if (mode == "has") return found
    if (mode == "lacks") return !found
    return 0
}'

# settle_ms FROM TO SITE MODE VALUE: ms from FROM to the first sample of the last unbroken run
# of samples of SITE in [FROM, TO) that satisfy the predicate; -1 if the last sample does not.
settle_ms() {
    awk -v from="$1" -v to="$2" -v mode="$4" -v value="$5" "$AWK_PRED"'
        $1 >= from && $1 < to {
            seen = 1
            if (holds($3, mode, value)) { if (start == "") start = $1 } else start = ""
        }
        END {
            if (!seen || start == "") print -1
            else printf "%d\n", (start - from) / 1000000
        }' "$WORK/poll.s$3.log"
}

# violations FROM TO SITE MODE VALUE: how many answers of SITE in [FROM, TO) break the predicate
# (non-answers are not counted: see `unanswered`).
violations() {
    awk -v from="$1" -v to="$2" -v mode="$4" -v value="$5" "$AWK_PRED"'
        $1 >= from && $1 < to && $3 ~ /^s[0-9]/ && !holds($3, mode, value) { n++ }
        END { print n + 0 }' "$WORK/poll.s$3.log"
}

# unanswered FROM TO SITE: queries of SITE in [FROM, TO) that got no answer.
unanswered() {
    awk -v from="$1" -v to="$2" '$1 >= from && $1 < to && $3 !~ /^s[0-9]/ { n++ } END { print n + 0 }' \
        "$WORK/poll.s$3.log"
}

# samples FROM TO SITE: queries of SITE in [FROM, TO).
samples() {
    awk -v from="$1" -v to="$2" '$1 >= from && $1 < to { n++ } END { print n + 0 }' "$WORK/poll.s$3.log"
}

# changes FROM TO SITE: "<count> <min_gap_ms>" of the changes of SITE's answer in [FROM, TO),
# non-answers skipped; min_gap_ms is -1 with fewer than two changes.
changes() {
    awk -v from="$1" -v to="$2" '
        $1 >= from && $1 < to && $3 ~ /^s[0-9]/ {
            if (prev != "" && $3 != prev) {
                n++
                if (last != "" && (gap == "" || $1 - last < gap)) gap = $1 - last
                last = $1
            }
            prev = $3
        }
        END { printf "%d %d\n", n, (gap == "" ? -1 : gap / 1000000) }' "$WORK/poll.s$3.log"
}

# max_of N...: the largest, or -1 if any is -1 (something never settled).
max_of() {
    local m=0 v
    for v in "$@"; do
        (( v < 0 )) && { echo -1; return; }
        (( v > m )) && m=$v
    done
    echo "$m"
}

# --- the timeline ----------------------------------------------------------------------------

# One row per change of any site's answer, one column per site, events in between.
show_timeline() {
    echo "timeline of '$SCENARIO' (${SITES} sites; each cell: the sites that site's DNS answers with)"
    sort -n -k1,1 "$WORK"/poll.s*.log "$WORK/events.log" | awk -v t0="$T0" -v n="$SITES" '
        function cell(a) { gsub(/s/, "", a); return a }
        function row(ts,   i, line) {
            line = sprintf("  %8.3fs ", (ts - t0) / 1e9)
            for (i = 1; i <= n; i++) line = line sprintf(" %-10s", (i in cur) ? cur[i] : "-")
            print line
        }
        BEGIN {
            line = sprintf("  %9s ", "time")
            for (i = 1; i <= n; i++) line = line sprintf(" %-10s", "s" i)
            print line
        }
        $2 == "EVENT" { $1 = $2 = ""; sub(/^ +/, ""); printf "  ---------- %s\n", $0; next }
        {
            i = substr($2, 2) + 0
            a = cell($3)
            if (!(i in cur) || cur[i] != a) { cur[i] = a; row($1) }
        }'
}

# Stops the pollers, prints the timeline to stdout.
finish() {
    stop_pollers
    show_timeline
}
