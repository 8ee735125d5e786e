#!/usr/bin/env python3
"""Cold start to first DNS answer: spawns a server command, then asks ADDR:PORT for NAME A over
UDP every millisecond until a NOERROR answer with at least one record arrives; prints the time
from spawn to that answer in ms and kills the server (by its pid). Bounded by --timeout.

usage: coldstart.py ADDR PORT NAME TIMEOUT_S -- COMMAND [ARG ...]
"""
import os, random, signal, socket, struct, subprocess, sys, time

def query(name):
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0000, 1, 0, 0, 0)  # RD=0, like a resolver asking an authority
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return qid, q + b"\x00" + struct.pack(">HH", 1, 1)

def main():
    sep = sys.argv.index("--")
    addr, port, name, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    cmd = sys.argv[sep + 1:]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.001)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - start < timeout:
            if proc.poll() is not None:
                print("exited", file=sys.stderr); return 1
            qid, q = query(name)
            try:
                sock.sendto(q, (addr, port))
                data = sock.recv(4096)
            except (socket.timeout, ConnectionRefusedError, OSError):
                continue
            if len(data) >= 12:
                rid, flags, _, ancount = struct.unpack(">HHHH", data[:8])
                if rid == qid and flags & 0x000F == 0 and ancount > 0:
                    print("%.1f" % ((time.monotonic() - start) * 1000)); return 0
        print("timeout", file=sys.stderr); return 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            proc.kill(); proc.wait()

sys.exit(main())
