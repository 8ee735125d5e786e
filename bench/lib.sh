# shellcheck shell=bash
#
# bench/lib.sh: what every bench script shares.
#
# Owns: finding (or building) the `spdu` binary, installing missing Debian packages, a work
# directory, and every process a bench starts. Invariants: every started process is recorded by
# pid (`track`) and killed by `cleanup`, which runs on EXIT, INT and TERM, also on failure; the
# work directory is removed unless BENCH_KEEP=1. Nothing is killed by name.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)
WORK=""
PIDS=()

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Bounded wait (2 s), then SIGKILL.
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ ${BENCH_KEEP:-0} == 1 ]]; then say "kept $WORK"; else rm -rf "$WORK"; fi
    fi
}

# Sets up the work directory and the traps.
bench_init() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/spdu-bench.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# Records a started process so that cleanup kills it.
track() { PIDS+=("$1"); }

# Forgets a tracked process that has ended and been waited for (so its pid is not killed later).
untrack() {
    local pid=$1 keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# Kills one tracked process now (TERM, then KILL after 2 s) and forgets it.
untrack_kill() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    untrack "$pid"
}

# need COMMAND PACKAGE: installs PACKAGE with apt-get if COMMAND is missing (root only).
need() {
    command -v "$1" >/dev/null && return 0
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        say "installing $2 (for $1)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq --no-install-recommends "$2" >/dev/null; } ||
            die "cannot install $2 (needed for $1)"
    else
        die "$1 is missing: install the Debian package $2 (apt-get install $2)"
    fi
}

# Prints the spdu binary to use: $SPDU if set, else a fresh release build.
spdu_binary() {
    if [[ -n ${SPDU:-} ]]; then
        [[ -x $SPDU ]] || die "SPDU=$SPDU is not executable"
        echo "$SPDU"
        return
    fi
    local target=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
    (cd "$REPO_ROOT" && cargo build --release --locked -q -p spdu-node) >&2 || die "cargo build failed"
    echo "$target/release/spdu"
}

# stats: reads numbers (one a line) and prints "median min max n".
stats() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan nan nan 0"; exit }
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.6g %.6g %.6g %d\n", m, v[1], v[NR], NR }'
}

# Total CPU time (user + system, all threads) of a process, in seconds.
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"
}

# Resident set size of a process, in KiB (VmRSS) and its peak (VmHWM).
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

# Writes a key for NAME into DIR and prints its public key.
keygen() { "$SPDU_BIN" keygen --out "$1/$2.key"; }

ORIGIN=pool.example.test

# knot_setup DIR IP PORT: writes DIR/knot.conf and the zone file for knotd serving the same
# records as a one-node spdu (api A 192.0.2.10, api AAAA 2001:db8::10, SOA, two NS, TTL 5).
knot_setup() {
    local dir=$1 ip=$2 port=$3
    mkdir -p "$dir"
    cat >"$dir/$ORIGIN.zone" <<ZONE
\$ORIGIN $ORIGIN.
@    5 IN SOA alpha.example.test. hostmaster.$ORIGIN. 1 3600 600 1209600 5
@    5 IN NS  alpha.example.test.
@    5 IN NS  beta.example.test.
api  5 IN A    192.0.2.10
api  5 IN AAAA 2001:db8::10
ZONE
    cat >"$dir/knot.conf" <<CONF
server:
    listen: $ip@$port
    rundir: $dir
    udp-workers: ${KNOT_UDP_WORKERS:-1}
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: warning
database:
    storage: $dir
template:
  - id: default
    storage: $dir
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: $ORIGIN
    file: $dir/$ORIGIN.zone
CONF
}

# spdu_config FILE NAME IP DNS_PORT ADDRESSES: the [node] and [zone] sections of a config
# (gossip on IP:17946, control on IP:17947); append [[peers]] yourself.
spdu_config() {
    cat >"$1" <<TOML
[node]
name = "$2"
key = "$2.key"
gossip = "$3:17946"
dns = ["$3:$4"]
control = "$3:17947"
addresses = [$5]

[zone]
origin = "$ORIGIN"
names = ["api"]
ttl = 5
nameservers = ["alpha.example.test", "beta.example.test"]
TOML
}

# mesh_configs DIR KEYDIR TOTAL NET DNS_PORT: configs DIR/n1.toml .. n$TOTAL.toml, node n$i at
# $NET.$i with every other node as a peer (public keys read from KEYDIR/n$j.pub); each config
# names its key n$i.key next to it.
mesh_configs() {
    local dir=$1 keys=$2 total=$3 net=$4 port=$5 i j
    for i in $(seq "$total"); do
        spdu_config "$dir/n$i.toml" "n$i" "$net.$i" "$port" "\"$net.$i\""
        for j in $(seq "$total"); do
            (( j == i )) && continue
            printf '\n[[peers]]\nname = "n%s"\nkey = "%s"\ngossip = "%s:17946"\n' \
                "$j" "$(cat "$keys/n$j.pub")" "$net.$j" >>"$dir/n$i.toml"
        done
    done
}
