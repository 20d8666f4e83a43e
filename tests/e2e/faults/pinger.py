"""A 10/s ICMP echo prober, run inside a container's network namespace by the fault harness.

    nsenter -t CONTAINER_PID -n python3 -I -S pinger.py DST [INTERVAL]

Standard library only and run by path (it imports nothing from the project), so
it does not depend on dockerd, ``docker exec`` or the container's image: a
dockerd restart does not stop it. It sends an echo request to ``DST`` every
``INTERVAL`` seconds (default 0.1) from a raw socket and prints one line per
event, flushed at once, with the system-wide monotonic clock (the same clock
as the harness's ``time.monotonic()``)::

    s N T      echo request N sent at T
    r N T      its reply arrived at T

``N`` counts up from 0 for ever (the 16-bit ICMP sequence number is ``N``
modulo 65536; a reply is matched to the latest request with that number).
It stops on SIGTERM or when its stdout closes.
"""
from __future__ import annotations

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
    payload = b"warren-fault-probe"
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, checksum(head + payload), ident, seq) + payload


def main(argv: list[str]) -> int:
    dst = argv[1]
    interval = float(argv[2]) if len(argv) > 2 else 0.1
    ident = os.getpid() & 0xFFFF
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    lock = threading.Lock()
    latest: dict[int, int] = {}   # seq16 -> N
    out = sys.stdout
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def emit(line: str) -> None:
        try:
            with lock:
                out.write(line + "\n")
                out.flush()
        except (BrokenPipeError, ValueError):
            stop.set()

    def receive() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.monotonic()
            ihl = (data[0] & 0x0F) * 4
            if len(data) < ihl + 8 or addr[0] != dst:
                continue
            kind, _, _, rid, seq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if kind != 0 or rid != ident:
                continue
            with lock:
                n = latest.get(seq)
            if n is not None:
                emit(f"r {n} {now:.6f}")

    threading.Thread(target=receive, daemon=True).start()
    n, start = 0, time.monotonic()
    while not stop.is_set():
        seq = n & 0xFFFF
        with lock:
            latest[seq] = n
        now = time.monotonic()
        try:
            sock.sendto(request(ident, seq), (dst, 0))
        except OSError:
            pass  # no route (yet): counted as lost like any unanswered request
        emit(f"s {n} {now:.6f}")
        n += 1
        stop.wait(max(0.0, start + n * interval - time.monotonic()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
