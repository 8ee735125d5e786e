#!/usr/bin/env bash
#
# acme: a real ACME CA (pebble) issues a certificate for the pool name and site 1's own name to
# a real ACME client (certbot) on site 1, while the http-01 challenges are answered by spdu on
# every site: none of them knows the token, all of them answer TOKEN.THUMBPRINT ([acme]).
#
# The world: lib.sh's sites; a resolver namespace (unbound at 198.18.0.53: `test.` served
# locally with each site's own name, s<i>.example.test -> that site, and the pool zone
# pool.example.test delegated to the sites as a stub zone, so the pool name resolves through
# spdu to the live sites); a CA namespace (pebble at 198.18.0.60, resolving through unbound,
# validating on port 80, with a throwaway TLS certificate made here with openssl). certbot runs
# on site 1 in standalone mode on 127.0.0.1:8888, which pebble cannot reach: only spdu answers.
#
# Steps: every site starts with `[acme]` on port 80 and a placeholder thumbprint; certbot
# registers an account; `spdu acme-thumbprint` reads its account key; every site's config gets
# the thumbprint and a SIGHUP (the thumbprint reloads live); each site is asked for a challenge
# from the client namespace; then certbot asks for the certificate. If every validation
# happened to land on site 1 (DNS gives pebble any site), certbot asks again under another
# certificate name (pebble reuses no authorization here), at most ATTEMPTS times.
#
# SUMMARY: issued=1 when the certificate names both names; answered_by = the sites whose
# spdu_acme_requests_total{result="answered"} grew during certbot's runs; other_site_answers (the
# validations answered by sites other than s1); attempts; issue_ms (the successful certbot run);
# reloaded and probed (sites that applied the thumbprint and answered a probe with it). PASS:
# issued, every site reloaded and answered the probe, and a site other than s1 answered a
# validation.
SCENARIO=acme
ATTEMPTS=4
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_args "$@"
for tool in pebble certbot unbound unbound-checkconf openssl curl; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "error: the $SCENARIO scenario needs $tool (Debian: apt-get install pebble certbot unbound openssl curl)" >&2
        exit 2
    }
done

RESOLVER_ADDR=$NET.53
CA_ADDR=$NET.60
CA_DIR=https://$CA_ADDR:14000/dir
POOL_NAME=$QNAME
PLACEHOLDER=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
# Every site answers challenges on port 80 (its namespace has only its own address).
SITE_EXTRA_TOML="[acme]
thumbprint = \"$PLACEHOLDER\"
listen = [\"0.0.0.0:80\"]"

preflight
install_traps
world_up

# --- the resolver ---------------------------------------------------------------------------
resolver_ns="${PREFIX}dns"
add_ns "$resolver_ns"
plug "$resolver_ns" r0 "$RESOLVER_ADDR"
mkdir -p "$WORK/unbound"
{
    cat <<EOF
server:
    interface: $RESOLVER_ADDR
    port: 53
    do-ip6: no
    access-control: $NET.0/24 allow
    username: ""
    chroot: ""
    directory: "$WORK/unbound"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 1
    module-config: "iterator"
    # Nothing here reaches the Internet: test. is answered locally, the pool zone by the sites.
    local-zone: "test." static
    local-zone: "$ORIGIN." transparent
EOF
    for (( i = 1; i <= SITES; i++ )); do
        echo "    local-data: \"s$i.example.test. 60 IN A $(site_addr "$i")\""
    done
    echo "remote-control:"
    echo "    control-enable: no"
    echo "stub-zone:"
    echo "    name: \"$ORIGIN.\""
    for (( i = 1; i <= SITES; i++ )); do echo "    stub-addr: $(site_addr "$i")"; done
} >"$WORK/unbound/unbound.conf"
unbound-checkconf "$WORK/unbound/unbound.conf" >/dev/null || die "unbound-checkconf refused the config"
ip netns exec "$resolver_ns" unbound -d -c "$WORK/unbound/unbound.conf" >"$WORK/unbound/unbound.log" 2>&1 &
AUX_PID[unbound]=$!
event "unbound resolver at $RESOLVER_ADDR (pid ${AUX_PID[unbound]})"

resolve() {
    ip netns exec "$(client_ns)" dig +short +time=1 +tries=1 "@$RESOLVER_ADDR" "$1" A 2>/dev/null \
        | grep -E '^[0-9.]+$' | sort | tr '\n' ' ' || true
}
pool=""
for (( n = 0; n < 50; n++ )); do
    pool=$(resolve "$POOL_NAME")
    (( $(wc -w <<<"$pool") == SITES )) && break
    sleep 0.2
done
(( $(wc -w <<<"$pool") == SITES )) || {
    tail -n 20 "$WORK/unbound/unbound.log" >&2
    die "the resolver does not resolve $POOL_NAME to every site (got: $pool)"
}
own=$(resolve s1.example.test)
[[ $own == "$(site_addr 1) " ]] || die "the resolver gives s1.example.test as '$own'"
event "resolver: $POOL_NAME -> $pool; s1.example.test -> $own"

# --- the CA ----------------------------------------------------------------------------------
ca_ns="${PREFIX}ca"
add_ns "$ca_ns"
plug "$ca_ns" ca0 "$CA_ADDR"
mkdir -p "$WORK/pebble"
(
    cd "$WORK/pebble"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
        -days 1 -subj "/CN=spdu acme scenario throwaway CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out api.csr \
        -subj "/CN=pebble" 2>/dev/null
    printf 'subjectAltName=IP:%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$CA_ADDR" >ext.cnf
    openssl x509 -req -in api.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 1 \
        -extfile ext.cnf 2>/dev/null
) || die "openssl could not make the CA's TLS certificate"
cat >"$WORK/pebble/pebble.json" <<EOF
{
  "pebble": {
    "listenAddress": "$CA_ADDR:14000",
    "managementListenAddress": "$CA_ADDR:15000",
    "certificate": "$WORK/pebble/cert.pem",
    "privateKey": "$WORK/pebble/key.pem",
    "httpPort": 80,
    "tlsPort": 443,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
EOF
ip netns exec "$ca_ns" env PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
    pebble -config "$WORK/pebble/pebble.json" -dnsserver "$RESOLVER_ADDR:53" \
    >"$WORK/pebble/pebble.log" 2>&1 &
AUX_PID[pebble]=$!
event "pebble at $CA_DIR (pid ${AUX_PID[pebble]}), resolving through $RESOLVER_ADDR"
ca_up() {
    ip netns exec "$(site_ns 1)" curl -sf --max-time 1 --cacert "$WORK/pebble/ca.pem" "$CA_DIR" >/dev/null 2>&1
}
for (( n = 0; n < 50; n++ )); do
    ca_up && break
    sleep 0.2
done
ca_up || { tail -n 20 "$WORK/pebble/pebble.log" >&2; die "pebble does not answer at $CA_DIR"; }

# --- certbot on site 1 -----------------------------------------------------------------------
certbot_s1() {
    ip netns exec "$(site_ns 1)" env REQUESTS_CA_BUNDLE="$WORK/pebble/ca.pem" \
        certbot --config-dir "$WORK/certbot" --work-dir "$WORK/certbot/work" --logs-dir "$WORK/certbot/logs" \
        --server "$CA_DIR" --non-interactive "$@"
}
certbot_s1 register --agree-tos --register-unsafely-without-email >"$WORK/certbot-register.log" 2>&1 \
    || { tail -n 20 "$WORK/certbot-register.log" >&2; die "certbot register failed"; }
account_key=$(find "$WORK/certbot/accounts" -name private_key.json | head -n 1)
[[ -n $account_key ]] || die "certbot wrote no account key"
thumbprint=$("$SPDU" acme-thumbprint --account-key "$account_key") || die "spdu acme-thumbprint failed"
event "certbot registered; spdu acme-thumbprint: $thumbprint"

# --- the thumbprint to every site, by reload -------------------------------------------------
control_get() { ip netns exec "$(site_ns "$1")" curl -s --max-time 2 "http://$CONTROL$2" 2>/dev/null || true; }
metric() { control_get "$1" /metrics | awk -v m="$2" '$1 == m { print $2 }'; }
answered() { local v; v=$(metric "$1" 'spdu_acme_requests_total{result="answered"}'); echo "${v:-0}"; }
reloaded=()
for (( i = 1; i <= SITES; i++ )); do
    sed -i "s/$PLACEHOLDER/$thumbprint/" "$WORK/s$i/spdu.toml"
    kill -HUP "${SITE_PID[$i]}"
done
event "thumbprint written to every config; SIGHUP to every site"
for (( i = 1; i <= SITES; i++ )); do
    for (( n = 0; n < 50; n++ )); do
        [[ $(metric "$i" 'spdu_reloads_total{result="ok"}') == 1 ]] && { reloaded+=("s$i"); break; }
        sleep 0.1
    done
done
probed=()
for (( i = 1; i <= SITES; i++ )); do
    body=$(ip netns exec "$(client_ns)" curl -s --max-time 2 \
        "http://$(site_addr "$i")/.well-known/acme-challenge/probe-s$i" || true)
    [[ $body == "probe-s$i.$thumbprint" ]] && probed+=("s$i")
done
event "reloaded: ${reloaded[*]:-none}; answered the probe with the new thumbprint: ${probed[*]:-none}"

# --- the certificate -------------------------------------------------------------------------
declare -A before=()
for (( i = 1; i <= SITES; i++ )); do before[$i]=$(answered "$i"); done
issued=0 issue_ms=-1 answered_by="" others=0 attempts=0
while (( attempts < ATTEMPTS )); do
    attempts=$(( attempts + 1 ))
    name=scenario-$attempts
    start=$(now_ns)
    event "certbot certonly #$attempts: $POOL_NAME and s1.example.test (standalone on 127.0.0.1:8888, unreachable from the CA)"
    if certbot_s1 certonly --standalone --http-01-address 127.0.0.1 --http-01-port 8888 \
        --cert-name "$name" -d "$POOL_NAME" -d s1.example.test >"$WORK/certbot-$attempts.log" 2>&1; then
        issue_ms=$(( ($(now_ns) - start) / 1000000 ))
        sans=$(openssl x509 -in "$WORK/certbot/live/$name/cert.pem" -noout -ext subjectAltName 2>/dev/null || true)
        if [[ $sans == *"DNS:$POOL_NAME"* && $sans == *"DNS:s1.example.test"* ]]; then
            issued=1
        fi
        event "certificate $name issued in ${issue_ms} ms: $(echo "$sans" | tail -n 1 | tr -s ' ')"
    else
        tail -n 15 "$WORK/certbot-$attempts.log" >&2
        event "certbot certonly #$attempts failed"
        issued=0
        break
    fi
    answered_by="" others=0
    for (( i = 1; i <= SITES; i++ )); do
        delta=$(( $(answered "$i") - before[$i] ))
        if (( delta > 0 )); then
            answered_by+="${answered_by:+,}s$i"
            (( i != 1 )) && others=$(( others + delta ))
        fi
    done
    event "validations answered so far by: ${answered_by:-nobody}"
    (( others > 0 )) && break
done
finish

result=PASS
(( issued == 1 && others > 0 )) || result=FAIL
(( ${#reloaded[@]} == SITES && ${#probed[@]} == SITES )) || result=FAIL
summary "issued=$issued answered_by=${answered_by:-none} other_site_answers=$others attempts=$attempts" \
    "issue_ms=$issue_ms reloaded=${#reloaded[@]} probed=${#probed[@]} converge_ms=$CONVERGE_MS result=$result"
[[ $result == PASS ]]
