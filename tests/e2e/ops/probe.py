"""A 10/s ICMP echo probe for the node-fault tests, run inside a container's network namespace.

    nsenter -t CONTAINER_PID -n python3 -I -S probe.py DST [INTERVAL]

Standard library only, run by path (no project imports, no dockerd, no
``docker exec``: a dockerd restart does not stop it). Sends an echo request
to ``DST`` every ``INTERVAL`` s (default 0.1) from a raw socket until SIGTERM,
then waits one second for late replies and prints one JSON line:
``{"sent": N, "received": M, "lost": [sequence numbers without a reply]}``.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import threading
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def request(ident: int, seq: int) -> bytes:
    payload = b"warren-node-fault-probe"
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
    return struct.pack("!BBHHH", 8, 0, checksum(head), ident, seq) + payload


def main(argv: list[str]) -> int:
    dst = argv[1]
    interval = float(argv[2]) if len(argv) > 2 else 0.1
    ident = os.getpid() & 0xFFFF
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.settimeout(0.2)
    stop, done = threading.Event(), threading.Event()
    replies: set[int] = set()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def receive() -> None:
        while not done.is_set():
            try:
                data, addr = sock.recvfrom(2048)
            except socket.timeout:
                continue
            ihl = (data[0] & 0x0F) * 4
            if addr[0] != dst or len(data) < ihl + 8:
                continue
            kind, _, _, rid, seq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if kind == 0 and rid == ident:
                replies.add(seq)

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    sent, next_send = 0, time.monotonic()
    while not stop.is_set() and sent < 65536:
        try:
            sock.sendto(request(ident, sent), (dst, 0))
        except OSError:
            pass  # no route for a moment: counted as lost
        sent += 1
        next_send += interval
        stop.wait(max(0.0, next_send - time.monotonic()))
    time.sleep(1.0)
    done.set()
    reader.join(1)
    print(json.dumps({"sent": sent, "received": len(replies),
                      "lost": [s for s in range(sent) if s not in replies]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
