#!/usr/bin/env bash
#
# idle-traffic: what an idle cluster of real `spdu run` nodes sends on the wire, per node, as
# QUIC itself counts it (every datagram: liveness, anti-entropy, ACKs, retransmissions).
#
# N nodes (default 10) on loopback (127.0.71.x), full mesh. After SETTLE seconds (default 5),
# every node's /metrics is read, then again WINDOW seconds later (default 20). Per node:
#   payload B/s   gossip frames handed to QUIC (what the simulator counts),
#   udp B/s       UDP payload QUIC sent (frames + QUIC headers, AEAD tags, ACK-only packets),
#   wire kbit/s   udp bytes + 28 bytes of IPv4 and UDP header per datagram,
#   datagrams/s.
# Prints the median node and the busiest.
#
# usage: bench/idle-traffic.sh [--nodes N] [--settle S] [--window S]
# env:   SPDU=path/to/spdu (default: cargo build --release).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NODES=10 SETTLE=5 WINDOW=20
while (( $# > 0 )); do
    case $1 in
        --nodes) NODES=$2; shift 2 ;;
        --settle) SETTLE=$2; shift 2 ;;
        --window) WINDOW=$2; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
done
[[ $NODES =~ ^[0-9]+$ && $NODES -ge 2 && $NODES -le 60 ]] || die "--nodes: 2..60"
[[ $SETTLE =~ ^[0-9]+$ && $SETTLE -le 120 ]] || die "--settle: 0..120"
[[ $WINDOW =~ ^[0-9]+$ && $WINDOW -ge 1 && $WINDOW -le 600 ]] || die "--window: 1..600"
command -v python3 >/dev/null || need python3 python3-minimal

bench_init
SPDU_BIN=$(spdu_binary)
NET=127.0.71
DNS_PORT=15410

for i in $(seq "$NODES"); do keygen "$WORK" "n$i" >"$WORK/n$i.pub"; done
mesh_configs "$WORK" "$WORK" "$NODES" "$NET" "$DNS_PORT"
for i in $(seq "$NODES"); do
    "$SPDU_BIN" run --config "$WORK/n$i.toml" >>"$WORK/n$i.log" 2>&1 &
    track $!
done
say "$NODES nodes started; settling ${SETTLE}s, then measuring ${WINDOW}s"
sleep "$SETTLE"

# snapshot FILE: one line per node: payload_bytes udp_bytes udp_datagrams
snapshot() {
    python3 - "$NET" "$NODES" >"$1" <<'PY' || die "could not read /metrics"
import sys, urllib.request
net, n = sys.argv[1], int(sys.argv[2])
want = ("spdu_gossip_payload_sent_bytes_total", "spdu_gossip_udp_sent_bytes_total", "spdu_gossip_udp_datagrams_sent_total")
for i in range(1, n + 1):
    text = urllib.request.urlopen(f"http://{net}.{i}:17947/metrics", timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in want:
            values[parts[0]] = float(parts[1])
    print(" ".join(str(int(values[w])) for w in want))
PY
}
snapshot "$WORK/before.txt"
sleep "$WINDOW"
snapshot "$WORK/after.txt"

python3 - "$WORK/before.txt" "$WORK/after.txt" "$WINDOW" "$NODES" <<'PY'
import statistics, sys
before = [list(map(int, l.split())) for l in open(sys.argv[1])]
after = [list(map(int, l.split())) for l in open(sys.argv[2])]
window, n = float(sys.argv[3]), int(sys.argv[4])
rows = []
for b, a in zip(before, after):
    payload, udp, datagrams = ((y - x) / window for x, y in zip(b, a))
    rows.append((payload, udp, (udp + 28 * datagrams) * 8 / 1000, datagrams))
print(f"{n} nodes, idle, {window:.0f} s window, per node:")
print(f"{'':8} {'payload_B/s':>12} {'udp_B/s':>10} {'wire_kbit/s':>12} {'datagrams/s':>12}")
for name, pick in (("median", statistics.median), ("max", max)):
    cols = [pick(r[k] for r in rows) for k in range(4)]
    print(f"{name:8} {cols[0]:12.0f} {cols[1]:10.0f} {cols[2]:12.1f} {cols[3]:12.1f}")
PY
