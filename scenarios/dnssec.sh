#!/usr/bin/env bash
#
# dnssec: the pool zone seen through a validating resolver, as the Internet sees it. Besides
# the sites, the world holds a parent namespace running knotd for `example.test.` (signed by
# knotd itself, automatic keys; it delegates pool.example.test. to the sites and holds their
# addresses) and a resolver namespace running unbound, whose only trust anchor is the parent's
# key (read from knotd with kdig once knotd has signed the zone): nothing is trusted that does
# not chain up to it.
#
# With a binary that has `dnssec-keygen`, every site gets its own DNSSEC key and every config
# lists every peer's DNSKEY (`[[peers]] dnssec_key`). Once the sites run, they are asked directly
# whether they sign: an RRSIG on the pool name's A, an NSEC with its RRSIG on an NXDOMAIN, the
# DNSKEY RRset with every site's key. Only if all three hold is the world signed: the parent gets
# one DS per site (`spdu ds`). Otherwise (no keys, or a binary that does not sign all of it yet)
# the delegation is insecure (no DS): the parent still validates, the pool's answers are proven
# insecure, and the summary says how far the sites signed (`signing=`).
#
# Steps, timed:
#   1. every site's answer through a resolver that asks that site only (a stub for the pool),
#      and through the main resolver (which follows the parent's delegation): NOERROR with the
#      sites' addresses, AD set (signed world);
#   2. NXDOMAIN (nope.pool…) and NODATA (api AAAA), each site and the main resolver: AD set
#      (signed, a missing name is RFC 9824 compact denial: NOERROR, NSEC with NXNAME);
#   3. site loss: the last site is SIGKILLed; the main resolver's answers lose it within
#      detection + TTL, every answer on the way NOERROR (and AD);
#   4. negative (each on a fresh resolver, so that nothing cached hides the broken path; each
#      must give SERVFAIL while the same query with CD (checking disabled) gets the data, which
#      proves the failure is validation, not reachability):
#      signed world:   no_ds: the killed site comes back with a new key that has no DS in the
#                      parent, resolver stubbed to it alone;
#                      missing_dnskey: s1 restarts with a config that gives s2's dnssec_key as
#                      another key (a config without it is refused), so s1's DNSKEY RRset lacks
#                      s2's key; a resolver stubbed to s1 fetches the DNSKEY RRset, then
#                      (unbound-control, caches kept) its stub is switched to s2 alone and the
#                      answer it gets is signed by a key the RRset lacks; unbound's reason must
#                      say so. Before s1's restart the same rig validates (the control).
#      both worlds:    bad_anchor: a resolver whose trust anchor is not the parent's key;
#                      bogus_ds: the parent gains a DS for a key no site holds (knotc, knotd
#                      re-signs): the pool must now be signed by that key, and is not.
#
# RES_VERBOSITY=N (environment) sets the resolvers' unbound verbosity (default 1), for debugging.
SCENARIO=dnssec
SCENARIO_USAGE=""
SCENARIO_HELP=""
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_args "$@"
for tool in knotd knotc kdig unbound unbound-checkconf unbound-control; do
    command -v "$tool" >/dev/null 2>&1 \
        || { echo "error: the $SCENARIO scenario needs $tool (Debian: apt-get install knot knot-dnsutils unbound)" >&2; exit 2; }
done
preflight

PARENT=example.test
PARENT_ADDR=$NET.53
RES_ADDR=$NET.54        # the main resolver; the dedicated ones listen on other ports here
TTL=5                   # the pool's TTL (lib.sh's configs)
KEYED=0                 # the sites have DNSSEC keys (the binary has dnssec-keygen)
SIGNED=0                # ... and sign all the world needs: the parent holds their DS
SIGNING=none            # how far the sites sign: none, partial or full
if "$SPDU" dnssec-keygen --help >/dev/null 2>&1; then KEYED=1; fi
parent_ns() { echo "${PREFIX}parent"; }
res_ns() { echo "${PREFIX}res"; }
NEXT_PORT=5301          # the next dedicated resolver's port

# --- the parent: knotd, signing example.test. itself ------------------------------------------

parent_zone() {
    local i
    cat <<EOF
\$ORIGIN $PARENT.
@     300 IN SOA p.$PARENT. hostmaster.$PARENT. 1 60 60 3600 60
@     300 IN NS  p.$PARENT.
p     300 IN A   $PARENT_ADDR
EOF
    for (( i = 1; i <= SITES; i++ )); do
        printf 's%d    300 IN A   %s\n' "$i" "$(site_addr "$i")"
        printf 'pool  300 IN NS  s%d.%s.\n' "$i" "$PARENT"
    done
    # The DS set as `spdu ds` printed it, included as README's parent example does.
    if (( SIGNED )); then printf '$INCLUDE %s\n' "$WORK/ds.txt"; fi
}

parent_up() {
    local dir=$WORK/parent n
    mkdir -p "$dir"
    parent_zone >"$dir/$PARENT.zone"
    cat >"$dir/knot.conf" <<EOF
server:
    listen: $PARENT_ADDR@53
    rundir: $dir
log:
  - target: stderr
    any: info
database:
    storage: $dir
control:
    listen: $dir/knot.sock
policy:
  - id: world
    algorithm: ecdsap256sha256
    single-type-signing: on
    nsec3: off
template:
  - id: default
    storage: $dir
    zonefile-sync: -1
    zonefile-load: difference-no-serial
    journal-content: all
zone:
  - domain: $PARENT
    file: $dir/$PARENT.zone
    dnssec-signing: on
    dnssec-policy: world
EOF
    ip netns exec "$(parent_ns)" knotd -c "$dir/knot.conf" </dev/null >>"$dir/knotd.log" 2>&1 &
    AUX_PID[knotd]=$!
    event "start knotd for $PARENT. on $PARENT_ADDR (pid ${AUX_PID[knotd]})"
    # The trust anchor: the key knotd signs with (a CSK, flags 257), once the zone is signed.
    for (( n = 0; n < 100; n++ )); do
        ip netns exec "$(client_ns)" kdig +time=1 +retry=0 +noall +answer +dnssec @"$PARENT_ADDR" "$PARENT." DNSKEY \
            2>/dev/null | awk '$4 == "DNSKEY" && $5 == 257' >"$WORK/anchor.txt" || true
        [[ -s $WORK/anchor.txt ]] && break
        kill -0 "${AUX_PID[knotd]}" 2>/dev/null || { tail -n 20 "$dir/knotd.log" >&2; die "knotd exited"; }
        sleep 0.1
    done
    [[ -s $WORK/anchor.txt ]] || { tail -n 20 "$dir/knotd.log" >&2; die "knotd did not serve a signed $PARENT. within 10 s"; }
    event "parent signed; trust anchor: $(awk '{ print $1, $4, $5, $6, $7 }' "$WORK/anchor.txt")"
}

# knotc against the parent's knotd.
parent_ctl() { ip netns exec "$(parent_ns)" knotc -s "$WORK/parent/knot.sock" "$@"; }

# --- resolvers: unbound, validating, trusting the parent's key only ---------------------------

# resolver_up NAME PORT ANCHOR_FILE [OUT_ADDR] [POOL_STUB_ADDR...]: one unbound in the resolver
# namespace on $RES_ADDR:PORT. With stub addresses it asks only those for the pool zone (the DS
# still comes from the parent); otherwise it follows the parent's delegation.
resolver_up() {
    local name=$1 port=$2 anchor=$3 out=${4:-$RES_ADDR} dir=$WORK/res.$1 addr n
    shift 4
    mkdir -p "$dir"
    {
        cat <<EOF
server:
    interface: $RES_ADDR@$port
    outgoing-interface: $out
    port: $port
    do-ip6: no
    username: ""
    chroot: ""
    directory: "$dir"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: ${RES_VERBOSITY:-1}
    val-log-level: 2
    log-servfail: yes
    ede: yes
    access-control: 198.18.0.0/15 allow
    module-config: "validator iterator"
    trust-anchor-file: "$anchor"
    qname-minimisation: no
    cache-max-ttl: $TTL
    cache-max-negative-ttl: $TTL
    infra-host-ttl: 60
    num-threads: 1
    so-reuseport: no
remote-control:
    control-enable: yes
    control-interface: "$dir/control.sock"
    control-use-cert: no
server:
    # unbound answers test. itself (RFC 6761) unless told not to.
    local-zone: "test." nodefault
stub-zone:
    name: "$PARENT."
    stub-addr: $PARENT_ADDR
EOF
        if (( $# > 0 )); then
            printf 'stub-zone:\n    name: "%s."\n' "$ORIGIN"
            for addr in "$@"; do printf '    stub-addr: %s\n' "$addr"; done
        fi
    } >"$dir/unbound.conf"
    unbound-checkconf "$dir/unbound.conf" >"$dir/checkconf.log" 2>&1 \
        || { cat "$dir/checkconf.log" >&2; die "unbound-checkconf refused $dir/unbound.conf"; }
    ip netns exec "$(res_ns)" unbound -d -c "$dir/unbound.conf" </dev/null >>"$dir/unbound.log" 2>&1 &
    AUX_PID[unbound.$name]=$!
    for (( n = 0; n < 50; n++ )); do
        ip netns exec "$(client_ns)" dig +time=1 +tries=1 -p "$port" @"$RES_ADDR" "p.$PARENT" A >/dev/null 2>&1 && break
        kill -0 "${AUX_PID[unbound.$name]}" 2>/dev/null || { tail -n 20 "$dir/unbound.log" >&2; die "unbound $name exited"; }
        sleep 0.1
    done
    event "start unbound '$name' on $RES_ADDR:$port (pid ${AUX_PID[unbound.$name]})${*:+, pool stub: $*}"
}

# Stops the resolver NAME (it has served its check).
resolver_down() {
    local pid=${AUX_PID[unbound.$1]:-}
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "AUX_PID[unbound.$1]"
}

# A fresh dedicated resolver's port, in $port.
fresh_port() { port=$NEXT_PORT; NEXT_PORT=$(( NEXT_PORT + 1 )); }

# --- queries ---------------------------------------------------------------------------------

# ask PORT NAME TYPE [dig options...]: one query to the resolver on $RES_ADDR:PORT from the
# client namespace, with DO set; prints "<status> <ad|-> <answer> <nxname|->" where <answer> is
# the sorted set of sites in the A records ("s1,s2,s3", "-" without any), status "TIMEOUT"
# without reply, and nxname says an NSEC in the reply has NXNAME (type 128, RFC 9824) in its
# bitmap: compact denial's "this name does not exist".
ask() {
    local port=$1 name=$2 type=$3 out
    shift 3
    out=$(ip netns exec "$(client_ns)" dig +dnssec +time=3 +tries=1 "$@" -p "$port" @"$RES_ADDR" "$name" "$type" 2>&1) \
        || { echo "TIMEOUT - - -"; return 0; }
    awk '
        /->>HEADER<<-/ { status = $6; sub(/,$/, "", status) }
        /^;; flags:/ { ad = ($0 ~ /flags:[a-z ]* ad[ ;]/) ? "ad" : "-" }
        /^[^;]/ && $4 == "A" && $5 ~ /^198\.18\.0\.[0-9]+$/ { split($5, o, "."); s[o[4] + 0] = 1 }
        /^[^;]/ && $4 == "NSEC" && / (TYPE128|NXNAME)( |$)/ { nx = "nxname" }
        END {
            set = ""
            for (i = 1; i <= 255; i++) if (i in s) set = set (set == "" ? "" : ",") "s" i
            printf "%s %s %s %s\n", (status == "" ? "NOREPLY" : status), (ad == "" ? "-" : ad),
                (set == "" ? "-" : set), (nx == "" ? "-" : nx)
        }' <<<"$out"
}

# The Extended DNS Error a resolver gave, for the timeline ("-" without one).
ask_ede() {
    ip netns exec "$(client_ns)" dig +dnssec +time=3 +tries=1 -p "$1" @"$RES_ADDR" "$2" "$3" 2>/dev/null \
        | sed -n 's/^; EDE: \([0-9]*\).*/\1/p' | head -n 1 | grep . || echo -
}

# expect WHAT GOT STATUS: checks "<status> <ad> ..." against the wanted status and, in the signed
# world, the AD flag (insecure answers must not carry it); records the outcome.
FAILS=()
expect() {
    local what=$1 got=$2 want=$3 status ad
    read -r status ad _ <<<"$got"
    if [[ $status == "$want" ]] && { (( SIGNED )) && [[ $ad == ad ]] || { (( ! SIGNED )) && [[ $ad == - ]]; }; }; then
        event "ok   $what: $got"
        return 0
    fi
    FAILS+=("$what")
    event "FAIL $what: $got (want $want, $( (( SIGNED )) && echo "AD set" || echo "no AD: insecure"))"
    return 1
}

# expect_nx WHAT GOT: a name that does not exist. Unsigned: NXDOMAIN. Signed, spdu answers with
# RFC 9824 compact denial (it does for every query with DO, and a resolver asks with DO): NOERROR,
# no answer, an NSEC at the name with NXNAME in its bitmap, AD set.
expect_nx() {
    local what=$1 got=$2 status ad set nx
    read -r status ad set nx <<<"$got"
    if (( ! SIGNED )); then expect "$what" "$got" NXDOMAIN; return; fi
    if [[ $status == NOERROR && $set == - && $nx == nxname ]]; then
        expect "$what (compact denial)" "$got" NOERROR
        return
    fi
    FAILS+=("$what")
    event "FAIL $what: $got (want NOERROR with no answer, an NSEC with NXNAME, AD set: compact denial)"
    return 1
}

# expect_nodata WHAT GOT: a name that exists without the type asked: NOERROR, no answer, and
# no NXNAME (the name exists), AD set in the signed world.
expect_nodata() {
    local what=$1 got=$2 status ad set nx
    read -r status ad set nx <<<"$got"
    if [[ $set == - && $nx == - ]]; then expect "$what" "$got" NOERROR; return; fi
    FAILS+=("$what")
    event "FAIL $what: $got (want NOERROR with no answer and no NXNAME)"
    return 1
}

# --- spdu's DNSSEC keys (signed world) --------------------------------------------------------

# Gives every site a DNSSEC key and every config the peers' DNSKEYs; writes the parent's DS set.
sites_sign() {
    local i
    for (( i = 1; i <= SITES; i++ )); do
        dnssec_keygen "$WORK/s$i/dnssec.key"
        cp "$WORK/s$i/dnssec.key.dnskey" "$WORK/s$i/dnskey"
    done
    for (( i = 1; i <= SITES; i++ )); do sign_config "$i" "$WORK/s$i/dnssec.key"; done
    "$SPDU" ds --config "$WORK/s1/spdu.toml" >"$WORK/ds.out" || die "spdu ds failed"
    awk '$3 == "DS" || $4 == "DS"' "$WORK/ds.out" >"$WORK/ds.txt"
    (( $(wc -l <"$WORK/ds.txt") == SITES )) || die "spdu ds printed $(wc -l <"$WORK/ds.txt") DS records for $SITES sites"
}

# sign_config SITE KEYFILE [PEER DNSKEY_FILE]: adds `[dnssec] key` and every peer's dnssec_key
# to the site's config; PEER's is read from DNSKEY_FILE instead of PEER's own (a wrong key).
sign_config() {
    local i=$1 key=$2 swap=${3:-} swap_file=${4:-} conf=$WORK/s$1/spdu.toml
    awk -v swap="$swap" -v swap_file="$swap_file" -v dir="$WORK" '
        { print }
        /^\[/ { peer = ""; inpeers = ($0 == "[[peers]]") }
        inpeers && /^name = "s[0-9]+"$/ { peer = $3; gsub(/"/, "", peer) }
        /^gossip = / && peer != "" {
            f = (peer == swap) ? swap_file : dir "/" peer "/dnskey"; getline k <f; close(f)
            printf "dnssec_key = \"%s\"\n", k
        }' "$conf.plain" >"$conf"
    printf '\n[dnssec]\nkey = "%s"\n' "$key" >>"$conf"
    "$SPDU" check --config "$conf" >"$WORK/s$i/check.log" 2>&1 \
        || { cat "$WORK/s$i/check.log" >&2; die "spdu check refused s$i's config${swap:+ (with another key for $swap)}"; }
}

# dnssec_keygen FILE: a new DNSSEC key in FILE; its DNSKEY RDATA ("257 3 13 <base64>") in FILE.dnskey.
dnssec_keygen() {
    "$SPDU" dnssec-keygen --out "$1" --zone "$ORIGIN" >"$1.out" 2>"$1.err" || die "spdu dnssec-keygen failed ($1)"
    awk '$4 == "DNSKEY" { print $5, $6, $7, $8 }' "$1.out" | tail -n 1 >"$1.dnskey"
    grep -q . "$1.dnskey" || die "spdu dnssec-keygen printed no DNSKEY ($1)"
}

# signing_probe: how far the sites sign, asked directly (DO set): "full" when every site puts an
# RRSIG on the pool name's A, an NSEC and RRSIGs on an NXDOMAIN, and serves a DNSKEY RRset
# with every site's key; "none" when no site signs anything; "partial" otherwise.
signing_probe() {
    local i a nx keys full=0 some=0
    for (( i = 1; i <= SITES; i++ )); do
        a=$(ip netns exec "$(client_ns)" dig +dnssec +norec +time=1 +tries=2 @"$(site_addr "$i")" "$QNAME" A 2>/dev/null \
            | awk '/^[^;]/ && $4 == "RRSIG" && $5 == "A"' | wc -l)
        nx=$(ip netns exec "$(client_ns)" dig +dnssec +norec +time=1 +tries=2 @"$(site_addr "$i")" "nope.$ORIGIN" A 2>/dev/null \
            | awk '/^[^;]/ && ($4 == "NSEC" || ($4 == "RRSIG" && $5 == "NSEC"))' | wc -l)
        keys=$(ip netns exec "$(client_ns)" dig +dnssec +norec +time=1 +tries=2 @"$(site_addr "$i")" "$ORIGIN" DNSKEY 2>/dev/null \
            | awk '/^[^;]/ && $4 == "DNSKEY"' | wc -l)
        (( a > 0 && nx >= 2 && keys == SITES )) && full=$(( full + 1 ))
        (( a > 0 || nx > 0 || keys > 0 )) && some=$(( some + 1 ))
        event "s$i signs: RRSIG on A: $a, NSEC+RRSIG on NXDOMAIN: $nx, DNSKEYs: $keys"
    done
    if (( full == SITES )); then echo full; elif (( some > 0 )); then echo partial; else echo none; fi
}

# --- the world -------------------------------------------------------------------------------

scenario_before_nodes() {
    local i
    add_ns "$(parent_ns)"
    plug "$(parent_ns)" p0 "$PARENT_ADDR"
    add_ns "$(res_ns)"
    plug "$(res_ns)" r0 "$RES_ADDR"
    for (( i = 1; i <= SITES; i++ )); do cp "$WORK/s$i/spdu.toml" "$WORK/s$i/spdu.toml.plain"; done
    if (( KEYED )); then sites_sign; fi
}

install_traps
world_up
if (( KEYED )); then
    SIGNING=$(signing_probe)
    [[ $SIGNING == full ]] && SIGNED=1
fi
parent_up
# The main resolver's anchor is the parent's DNSKEY; the bad one is the same key, one bit off.
cp "$WORK/anchor.txt" "$WORK/anchor.main"
awk '{ k = $NF; c = substr(k, 10, 1); $NF = substr(k, 1, 9) (c == "A" ? "B" : "A") substr(k, 11); print }' \
    "$WORK/anchor.txt" >"$WORK/anchor.bad"
event "world: $( (( SIGNED )) && echo "signed (a DS per site in the parent)" || echo "insecure delegation (no DS): the sites' signing is '$SIGNING'")"
resolver_up main 53 "$WORK/anchor.main" "$RES_ADDR"

# The parent itself validates: without this nothing below means anything.
parent_ok=0
got=$(ask 53 "s1.$PARENT" A)
if [[ $got == "NOERROR ad "* ]]; then parent_ok=1; event "ok   parent validates: s1.$PARENT A: $got"
else FAILS+=(parent); event "FAIL parent: s1.$PARENT A: $got (want NOERROR with AD)"; fi

# --- 1 + 2: positive, NXDOMAIN and NODATA, each site and the main resolver --------------------

step1_ts=$(now_ns)
ad_positive=0 ad_nxdomain=0 ad_nodata=0
full=$(all_sites)
for (( i = 1; i <= SITES; i++ )); do
    fresh_port
    resolver_up "site$i" "$port" "$WORK/anchor.main" "$RES_ADDR" "$(site_addr "$i")"
    got=$(ask "$port" "$QNAME" A)
    [[ $(echo "$got" | cut -d' ' -f3) == "$full" ]] || { FAILS+=("answer_s$i"); event "FAIL s$i's answer is not $full: $got"; }
    expect "s$i $QNAME A" "$got" NOERROR && ad_positive=$(( ad_positive + 1 ))
    expect_nx "s$i nope.$ORIGIN A (NXDOMAIN)" "$(ask "$port" "nope.$ORIGIN" A)" && ad_nxdomain=$(( ad_nxdomain + 1 ))
    expect_nodata "s$i $QNAME AAAA (NODATA)" "$(ask "$port" "$QNAME" AAAA)" && ad_nodata=$(( ad_nodata + 1 ))
    resolver_down "site$i"
done
main_ok=1
for (( n = 0; n < 3; n++ )); do
    got=$(ask 53 "$QNAME" A)
    [[ $(echo "$got" | cut -d' ' -f3) == "$full" ]] || { main_ok=0; FAILS+=(main_answer); event "FAIL main resolver's answer is not $full: $got"; }
    expect "main $QNAME A" "$got" NOERROR || main_ok=0
done
expect_nx "main nope.$ORIGIN A (NXDOMAIN)" "$(ask 53 "nope.$ORIGIN" A)" || main_ok=0
expect_nodata "main $QNAME AAAA (NODATA)" "$(ask 53 "$QNAME" AAAA)" || main_ok=0
step2_ms=$(( ($(now_ns) - step1_ts) / 1000000 ))

# --- 3: site loss through the main resolver ---------------------------------------------------

# Polls the main resolver every 200 ms until the deadline: "<ts_ns> <status> <ad> <set>".
poll_resolver() {
    local deadline=$1 log=$2
    while (( $(now_ns) < deadline )); do
        echo "$(now_ns) $(ask 53 "$QNAME" A)" >>"$log"
        sleep 0.2
    done
}
victim=$SITES
: >"$WORK/resolver.log"
LOSS_BOUND_MS=$(( 5000 + TTL * 1000 + 2000 ))   # detection (generous) + TTL + slack
poll_resolver $(( $(now_ns) + (LOSS_BOUND_MS / 1000 + 3) * 1000000000 )) "$WORK/resolver.log" &
AUX_PID[resolver_poller]=$!
sleep 1
site_stop "$victim" KILL
kill_ts=$(now_ns)
wait "${AUX_PID[resolver_poller]}" 2>/dev/null || true
unset 'AUX_PID[resolver_poller]'
event "resolver polls done"
# site_loss_ms: from the kill to the first of the unbroken run of answers without the victim
# that lasts to the end; bad_answers: answers after the kill that are not NOERROR (or lack AD).
read -r site_loss_ms bad_answers loss_samples < <(awk -v from="$kill_ts" -v victim="s$victim" -v signed="$SIGNED" '
    $1 >= from {
        n++
        ok = ($2 == "NOERROR" && (signed ? $3 == "ad" : $3 == "-") && $4 ~ /^s[0-9]/)
        if (!ok) bad++
        has = 0; k = split($4, p, ","); for (j = 1; j <= k; j++) if (p[j] == victim) has = 1
        if (ok && !has) { if (start == "") start = $1 } else start = ""
    }
    END { printf "%d %d %d\n", (start == "" ? -1 : (start - from) / 1000000), bad + 0, n + 0 }' "$WORK/resolver.log")
event "site loss through the resolver: ${site_loss_ms} ms ($loss_samples answers after the kill, $bad_answers not NOERROR$( (( SIGNED )) && echo "+AD"))"

# --- 4: negatives -------------------------------------------------------------------------------

# val_reason RESOLVER: the first validation failure resolver RESOLVER logged (val-log-level 2).
val_reason() {
    grep -m 1 -o 'validation failure <[^>]*>: .*' "$WORK/res.$1/unbound.log" 2>/dev/null | cut -c1-200 || echo "none logged"
}

# broken WHAT PORT NAME TYPE: the validating query must SERVFAIL, the same with CD must get the
# data (NOERROR/NXDOMAIN): prints SERVFAIL or what the resolver said instead. The validating
# query may take unbound's retries of a bogus answer at other servers: it gets 10 s.
broken() {
    local what=$1 port=$2 name=$3 type=$4 got cd ede
    got=$(ask "$port" "$name" "$type" +time=10)
    cd=$(ask "$port" "$name" "$type" +cd)
    ede=$(ask_ede "$port" "$name" "$type")
    if [[ $got == SERVFAIL* && ( $cd == NOERROR* || $cd == NXDOMAIN* ) ]]; then
        event "ok   $what: $got (EDE $ede); with CD: $cd"
        echo SERVFAIL
    else
        event "FAIL $what: $got (EDE $ede); with CD: $cd (want SERVFAIL, and the data with CD)"
        echo "${got%% *}"
    fi
}

# The missing-DNSKEY rig: a fresh resolver whose stub for the pool names s1 only fetches and
# validates the pool's DNSKEY RRset (from s1; cached), then its stub is switched to s2 alone
# (unbound-control, the caches kept) and the pool name is asked: the answer comes from s2,
# signed with s2's key, and is checked against the DNSKEY RRset s1 served. Prints the answer
# ("<status> <ad> <set> <nx>"). All within the 5 s the caches keep anything here.
rig() {
    local name=rig$1 ctl=$WORK/res.rig$1/unbound.conf
    fresh_port
    resolver_up "$name" "$port" "$WORK/anchor.main" "$RES_ADDR" "$(site_addr 1)"
    keys=$(ask "$port" "$ORIGIN" DNSKEY)
    event "rig $1: $ORIGIN DNSKEY from s1: $keys"
    unbound-control -c "$ctl" stub_remove "$ORIGIN." >/dev/null || die "unbound-control stub_remove failed"
    unbound-control -c "$ctl" stub_add "$ORIGIN." "$(site_addr 2)" >/dev/null || die "unbound-control stub_add failed"
    event "rig $1: the pool's stub is now s2 alone"
}
neg_missing=skipped neg_no_ds=skipped rig_control=skipped rig_keys=skipped
if (( SIGNED )); then
    # no_ds: the victim comes back with a fresh key the parent has no DS for.
    dnssec_keygen "$WORK/s$victim/dnssec.new.key"
    sign_config "$victim" "$WORK/s$victim/dnssec.new.key"
    site_start "$victim"
    fresh_port
    resolver_up no_ds "$port" "$WORK/anchor.main" "$RES_ADDR" "$(site_addr "$victim")"
    for (( n = 0; n < 50; n++ )); do
        ip netns exec "$(client_ns)" dig +time=1 +tries=1 @"$(site_addr "$victim")" "$QNAME" A >/dev/null 2>&1 && break
        sleep 0.1
    done
    neg_no_ds=$(broken "no_ds (s$victim with a key without DS)" "$port" "$QNAME" A)
    event "no_ds: unbound says: $(val_reason no_ds)"
    resolver_down no_ds

    rig control
    rig_keys=$(echo "$keys" | cut -d' ' -f1-2 | tr ' ' _)
    got=$(ask "$port" "$QNAME" A)
    if expect "rig control (DNSKEY RRset from s1, answer from s2, nothing missing)" "$got" NOERROR; then
        rig_control=ok
    else
        rig_control=FAIL
    fi
    resolver_down rigcontrol
    site_stop 1
    # A config without s2's dnssec_key is refused (every site's key must be listed): s1 gets
    # another key for s2 instead, so s2's own key is missing from s1's DNSKEY RRset all the same.
    dnssec_keygen "$WORK/s1/impostor.key"
    sign_config 1 "$WORK/s1/dnssec.key" s2 "$WORK/s1/impostor.key.dnskey"
    site_start 1
    for (( n = 0; n < 50; n++ )); do
        ip netns exec "$(client_ns)" dig +time=1 +tries=1 @"$(site_addr 1)" "$ORIGIN" DNSKEY >/dev/null 2>&1 && break
        sleep 0.1
    done
    rig missing
    [[ $keys == "NOERROR ad "* ]] || rig_keys=FAIL
    neg_missing=$(broken "missing_dnskey (s1's DNSKEY RRset without s2's key, answer from s2)" "$port" "$QNAME" A)
    # The failure must be the one built here: s2's signature by a key the RRset does not hold.
    reason=$(val_reason rigmissing)
    event "rig missing: unbound says: $reason"
    [[ $reason == *"signatures from unknown keys from $(site_addr 2)"* ]] || neg_missing=WRONG_REASON
    resolver_down rigmissing
fi

# bad_anchor: a resolver that trusts a key the parent does not have.
fresh_port
resolver_up bad_anchor "$port" "$WORK/anchor.bad" "$RES_ADDR"
neg_bad_anchor=$(broken "bad_anchor (trust anchor not the parent's key)" "$port" "s1.$PARENT" A)
event "bad_anchor: unbound says: $(val_reason bad_anchor)"
resolver_down bad_anchor

# bogus_ds: the parent gains a DS for a key no site holds; with a DS set, the pool must be
# signed with one of its keys (in the signed world the sites' own DS go, so only the bogus stays).
bogus_ds="pool 300 DS 4242 13 2 $(printf '%064d' 42)"
parent_ctl zone-begin "$PARENT" >/dev/null || die "knotc zone-begin failed"
if (( SIGNED )); then parent_ctl zone-unset "$PARENT" pool DS >/dev/null || die "knotc zone-unset failed"; fi
# shellcheck disable=SC2086
parent_ctl zone-set "$PARENT" $bogus_ds >/dev/null || die "knotc zone-set failed"
parent_ctl zone-commit "$PARENT" >/dev/null || die "knotc zone-commit failed"
event "parent: pool's DS set is now only '$bogus_ds'"
for (( n = 0; n < 50; n++ )); do
    ip netns exec "$(client_ns)" kdig +time=1 +retry=0 +short @"$PARENT_ADDR" "pool.$PARENT" DS 2>/dev/null \
        | grep -q '^4242 ' && break
    sleep 0.1
done
fresh_port
# Stubbed to s2 (never stopped or restarted here): no wait on a dead site.
resolver_up bogus_ds "$port" "$WORK/anchor.main" "$RES_ADDR" "$(site_addr 2)"
neg_bogus_ds=$(broken "bogus_ds (the parent's DS matches no site's key)" "$port" "$QNAME" A)
event "bogus_ds: unbound says: $(val_reason bogus_ds)"
resolver_down bogus_ds

finish
echo "--- main resolver after the kill of s$victim (ts status ad answer) ---"
awk -v t0="$T0" '{ printf "  %8.3fs %s %s %s\n", ($1 - t0) / 1e9, $2, $3, $4 }' "$WORK/resolver.log"

result=PASS
(( parent_ok && main_ok && ${#FAILS[@]} == 0 )) || result=FAIL
(( ad_positive == SITES && ad_nxdomain == SITES && ad_nodata == SITES )) || result=FAIL
(( site_loss_ms >= 0 && site_loss_ms <= LOSS_BOUND_MS && bad_answers == 0 )) || result=FAIL
[[ $neg_bad_anchor == SERVFAIL && $neg_bogus_ds == SERVFAIL ]] || result=FAIL
if (( SIGNED )); then
    [[ $neg_no_ds == SERVFAIL && $neg_missing == SERVFAIL && $rig_control == ok && $rig_keys == NOERROR_ad ]] || result=FAIL
fi
(( ${#FAILS[@]} == 0 )) || echo "failed checks: ${FAILS[*]}"
# ad_* count the sites whose answer validated (AD) in the signed world, or was proven insecure
# (NOERROR/NXDOMAIN without AD) in the unsigned one.
summary "signed=$SIGNED signing=$SIGNING converge_ms=$CONVERGE_MS parent_ad=$parent_ok main_ok=$main_ok" \
    "ad_positive=$ad_positive ad_nxdomain=$ad_nxdomain ad_nodata=$ad_nodata steps12_ms=$step2_ms" \
    "site_loss_ms=$site_loss_ms site_loss_bound_ms=$LOSS_BOUND_MS loss_bad_answers=$bad_answers loss_samples=$loss_samples" \
    "negative_no_ds=$neg_no_ds negative_missing_dnskey=$neg_missing rig_keys=$rig_keys rig_control=$rig_control" \
    "negative_bad_anchor=$neg_bad_anchor negative_bogus_ds=$neg_bogus_ds result=$result"
[[ $result == PASS ]]
