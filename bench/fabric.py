"""The multi-host fabric: convergence, a 1000-route burst, and node memory.

One warren-lab with ``--hosts`` hosts (default 2), real dockerd, etcd, ExaBGP:

A. **Node memory at idle**: RSS (``VmRSS``) of one node's processes - found
   from its pid files like ``bench.memory`` does: the plugin server, the node
   agent, ExaBGP and the ``bgp.api`` process - summed, once the BGP sessions
   are up and the node has settled (goal <= 150 MiB). PSS is shown too (shared
   pages counted once). ``bench.memory`` measures this alone, on one host.
B. **Convergence**: ``--runs`` times, ``docker run -d`` on host2 and, from a
   container on host1, ICMP echoes every 2 ms to the new container's address
   until the first reply. Reported: time from ``docker run`` returning to that
   first reply (0 when it answered before ``docker run`` returned), p50/p99
   (goal p99 <= 100 ms). Every ``--new-block-every``-th run uses a new network
   with a new subnet (created on both hosts), so the first container of a new
   block - whose /26 has to travel through BGP first - is included. Addresses
   are pinned with ``--ip`` (a pinned address in an unclaimed block claims it
   for host2) so the prober can be ready before ``docker run``. Then
   ``--early-runs`` more with the prober already sending while ``docker run``
   runs (traffic waiting for the new address), reported separately.
C. **Burst**: ``--routes`` borrowed /32s: host1 owns every /26 of a /22 pool,
   host2 takes ``--routes`` addresses in them (each one a /32 that host2's API
   process announces), timed until host1's kernel holds all of them:
   * ``one-txn``: host2's allocations written to etcd in one transaction, so
     the figure is the BGP path alone (announce to installed on the peer;
     goal <= 0.5 s);
   * ``allocator``: ``ipam.Allocator(store, "host2").assign(address=...)`` one
     by one as fast as one process can, the way addresses really appear;
     split into etcd-write time and the tail after the last write.
   Each repetition is undone in one transaction (the withdraw burst is timed too).

``--encap vxlan`` creates the warren networks on ``--ipam-opt vxlan=true``
pools; it first checks that such a pool gives cross-host connectivity and
reports "not available" otherwise.

Everything runs in the lab's namespaces (probes enter a container's or a lab
host's network namespace); nothing is sent outside them. Only processes this
script started are stopped, by PID; the lab is removed in ``finally``.

    python -m bench.fabric [--runs 20] [--new-block-every 5] [--routes 1000] [--burst-runs 3]
                           [--sections ABC]
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import select
import socket
import statistics
import struct
import subprocess
import sys
import time

IMAGE = "warren-lab/busybox:latest"  # = ctl.lab.IMAGE (not imported: helpers stay light)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOAL_CONV_P99 = 0.100      # s
GOAL_BURST = 0.5           # s
GOAL_MEMORY_MIB = 150.0

RTPROT_WARREN_BGP = 81
BURST_POOL = "10.20.160.0/22"      # 16 /26 blocks, all claimed by host1
CONV_SUBNET = "10.20.{n}.0/24"     # n = 100 + network number
PROBE_INTERVAL = 0.002

from bench import runinfo


# =====================================================================================
# Lab helpers (also used by bench.dataplane)
# =====================================================================================

def lab_env_ok() -> str | None:
    if os.geteuid() != 0:
        return "must run as root"
    return None


def docker(lab, host: str, *args: str, timeout: float = 120) -> str:
    result = lab.docker(host, list(args), timeout=timeout)
    if result.returncode:
        raise RuntimeError(f"{host}: docker {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def warrenctl(lab, host: str, *args: str) -> str:
    result = lab.exec(host, ["warrenctl", *args], timeout=60, cwd=REPO)
    if result.returncode:
        raise RuntimeError(f"{host}: warrenctl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def create_network(lab, hosts, name: str, subnet: str, encap: str = "native") -> None:
    extra = ["--ipam-opt", "vxlan=true"] if encap == "vxlan" else []
    for host in hosts:
        docker(lab, host, "network", "create", "-d", "warren", "--ipam-driver", "warren",
               "--subnet", subnet, *extra, name)


def run_container(lab, host: str, name: str, network: str, *extra: str) -> tuple[int, str]:
    """``docker run -d`` a sleeping container; returns (PID, address on ``network``)."""
    docker(lab, host, "run", "-d", "--init", "--name", name, "--net", network, *extra,
           IMAGE, "sleep", "3600")
    return container_info(lab, host, name, network)


def container_info(lab, host: str, name: str, network: str) -> tuple[int, str]:
    out = docker(lab, host, "inspect", "-f",
                 f'{{{{.State.Pid}}}} {{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
                 name)
    pid, address = out.split()
    return int(pid), address


def host_netns(lab, host: str) -> str:
    return "/run/netns/" + lab.host(host).netns


def in_netns(netns: str, argv: list[str]) -> list[str]:
    """argv run in network namespace ``netns`` (a /run/netns path) only."""
    return ["nsenter", f"--net={netns}", "--", *argv]


def in_pid_netns(pid: int, argv: list[str]) -> list[str]:
    """argv run in the network namespace of process ``pid`` (a container) only."""
    return ["nsenter", "-t", str(pid), "-n", "--", *argv]


def self_argv(*args: str) -> list[str]:
    """This module as a helper command (``python -m bench.fabric _helper ...``)."""
    return [sys.executable, "-m", "bench.fabric", *args]


def bgp_routes(lab, host: str) -> list[str]:
    return lab.exec(host, ["ip", "-o", "-4", "route", "show", "proto", str(RTPROT_WARREN_BGP)]
                    ).stdout.splitlines()


def wait_until(predicate, timeout: float, step: float = 0.1, what: str = "condition") -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"{what}: not reached within {timeout:.0f}s")
        time.sleep(step)
    return time.monotonic() - start


def cross_host_pings(lab, src_pid: int, target: str, timeout: float = 15.0) -> bool:
    """Whether ``target`` answers a ping from container ``src_pid`` within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ok = subprocess.run(in_pid_netns(src_pid, ["busybox", "ping", "-c", "1", "-W", "1", target]),
                            capture_output=True).returncode == 0
        if ok:
            return True
        time.sleep(0.2)
    return False


def encap_available(lab, encap: str, subnet: str, hosts=("host1", "host2")) -> tuple[bool, str]:
    """Create a network on a pool of ``encap`` across two hosts and check a ping works."""
    name = f"probe{encap}"
    create_network(lab, hosts, name, subnet, encap)
    a_pid, _ = run_container(lab, hosts[0], f"{name}a", name)
    _, b_addr = run_container(lab, hosts[1], f"{name}b", name)
    if cross_host_pings(lab, a_pid, b_addr):
        return True, "cross-host ping works"
    routes = "; ".join(r for r in bgp_routes(lab, hosts[0]) if r.startswith(subnet.split(".0/")[0]))
    return False, f"no cross-host connectivity on a {encap} pool (host1 routes for it: {routes or 'none'})"


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), as numpy's default."""
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# =====================================================================================
# Helpers run inside lab namespaces (python -m bench.fabric _name ...)
# =====================================================================================

def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def helper_probe(target: str, timeout: float) -> int:
    """ICMP echo to ``target`` every PROBE_INTERVAL from "go" on; prints the first reply.

    Runs in a container's network namespace. Output: ``ready``, then
    ``reply <monotonic> <seq> <monotonic the echo was sent>`` or ``timeout``.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    ident = os.getpid() & 0xFFFF
    payload = b"warren-bench" + bytes(20)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 2
    sent: dict[int, float] = {}
    seq, next_send = 0, 0.0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_send:
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq & 0xFFFF)
            packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq & 0xFFFF) + payload
            try:
                sock.sendto(packet, (target, 0))
            except OSError:  # e.g. unreachable reported back: keep trying
                pass
            sent[seq & 0xFFFF] = now
            seq += 1
            next_send = now + PROBE_INTERVAL
        ready, _, _ = select.select([sock], [], [], max(0.0, next_send - time.monotonic()))
        if not ready:
            continue
        try:
            data, addr = sock.recvfrom(4096)
        except OSError:
            continue
        got = time.monotonic()
        ihl = (data[0] & 0x0F) * 4
        if len(data) < ihl + 8 or addr[0] != target:
            continue
        kind, _, _, rid, rseq = struct.unpack_from("!BBHHH", data, ihl)
        if kind == 0 and rid == ident:
            print(f"reply {got:.6f} {rseq} {sent.get(rseq, 0.0):.6f}", flush=True)
            return 0
    print("timeout", flush=True)
    return 1


def _route_dsts(prefix: str) -> set[str]:
    out = subprocess.run(["ip", "-o", "-4", "route", "show", "proto", str(RTPROT_WARREN_BGP),
                          "root", prefix], capture_output=True, text=True).stdout
    return {w[0] for w in (line.split() for line in out.splitlines())
            if w and w[0][0].isdigit() and ("/" not in w[0] or w[0].endswith("/32"))}


def _bgp_segment(frame: bytes, peer: bytes) -> int:
    """Payload bytes of a TCP segment from ``peer`` to or from port 179 (0: not one)."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6 or frame[26:30] != peer:
        return 0
    ihl = (frame[14] & 0x0F) * 4
    total = struct.unpack_from("!H", frame, 16)[0]
    tcp = 14 + ihl
    if len(frame) < tcp + 14:
        return 0
    sport, dport = struct.unpack_from("!HH", frame, tcp)
    if 179 not in (sport, dport):
        return 0
    return total - ihl - (frame[tcp + 12] >> 4) * 4


def helper_routes(prefix: str, count: int, mode: str, timeout: float, peer: str | None = None) -> int:
    """Watch this netns's routing table: when do ``count`` /32s of ``prefix`` with
    proto 81 appear (mode add) or disappear (mode del)?

    Raw rtnetlink (cheap enough not to slow the API process it watches). With
    ``peer``, also a packet socket on eth0 notes when BGP messages longer than a
    KEEPALIVE (UPDATEs) from ``peer`` arrive. Output: ``ready``, then
    ``first <t>``, ``bgp <first t> <last t> <bytes>``, ``done <t> <n>`` or
    ``timeout <n>``; all times ``time.monotonic()`` (one clock for every namespace).
    """
    net = ipaddress.ip_network(prefix)
    wire = None
    bgp_first = bgp_last = None
    bgp_bytes = 0
    if peer:
        wire = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
        wire.bind(("eth0", 0x0800))
        wire.setblocking(False)
        peer_bytes = socket.inet_aton(peer)
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
    try:
        sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    sock.bind((0, 0x40))  # RTMGRP_IPV4_ROUTE
    want_type = 24 if mode == "add" else 25  # RTM_NEWROUTE / RTM_DELROUTE
    present = _route_dsts(prefix)
    seen: set[str] = set()
    first = None
    print(f"ready {len(present)}", flush=True)
    deadline = time.monotonic() + timeout

    def finished() -> bool:
        if mode == "add":
            return len(seen | present) >= count
        return len(seen) >= count

    overflow = False
    watched = [sock] + ([wire] if wire else [])
    while time.monotonic() < deadline and not finished():
        ready, _, _ = select.select(watched, [], [], 0.05)
        if not ready:
            continue
        if wire in ready:
            while True:
                try:
                    frame = wire.recv(65536)
                except BlockingIOError:
                    break
                size = _bgp_segment(frame, peer_bytes)
                if size > 19:  # more than one KEEPALIVE
                    bgp_last = time.monotonic()
                    bgp_first = bgp_first or bgp_last
                    bgp_bytes += size
            if sock not in ready:
                continue
        try:
            data = sock.recv(1 << 20)
        except OSError:  # ENOBUFS: events lost, fall back to polling
            overflow = True
            break
        now = time.monotonic()
        off = 0
        while off + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, off)
            if length < 16:
                break
            if kind == want_type and length >= 28:
                family, dst_len, _, _, _, proto = struct.unpack_from("=BBBBBB", data, off + 16)
                if family == socket.AF_INET and dst_len == 32 and proto == RTPROT_WARREN_BGP:
                    a = off + 28
                    while a + 4 <= off + length:
                        rta_len, rta_type = struct.unpack_from("=HH", data, a)
                        if rta_len < 4:
                            break
                        if rta_type == 1:  # RTA_DST
                            dst = socket.inet_ntoa(data[a + 4:a + 8])
                            if ipaddress.ip_address(dst) in net:
                                if first is None:
                                    first = now
                                seen.add(dst)
                            break
                        a += (rta_len + 3) & ~3
            off += (length + 3) & ~3
    if overflow:
        print("overflow", flush=True)
        while time.monotonic() < deadline:
            now_set = _route_dsts(prefix)
            n = len(now_set) if mode == "add" else len(present - now_set)
            if first is None and ((mode == "add" and n > len(present)) or (mode == "del" and n)):
                first = time.monotonic()
            if n >= count:
                break
            time.sleep(0.005)
    done = time.monotonic()
    n = len(seen | present) if mode == "add" else len(seen)
    if first is not None:
        print(f"first {first:.6f}", flush=True)
    if bgp_first is not None:
        print(f"bgp {bgp_first:.6f} {bgp_last:.6f} {bgp_bytes}", flush=True)
    if n >= count or (overflow and time.monotonic() < deadline):
        print(f"done {done:.6f} {n}", flush=True)
        return 0
    print(f"timeout {n}", flush=True)
    return 1


def _blocks_of(store, pool: str):
    from datastore import codec, keys
    from ipam import Block
    net = ipaddress.ip_network(pool)
    out = []
    for kv in store.get_prefix(keys.BLOCKS):
        block = codec.loads(Block, kv.value)
        if ipaddress.ip_network(block.cidr).subnet_of(net):
            out.append((block, kv.mod_revision))
    return sorted(out, key=lambda bk: ipaddress.ip_network(bk[0].cidr))


def helper_ipam(action: str, pool: str, host: str, count: int) -> int:
    """IPAM actions of the burst benchmark, run inside a lab host (etcd from the env).

    * ``claim``: ``host`` takes the first address of every /26 of ``pool`` (owns them all);
    * ``allocator``: ``host`` borrows ``count`` addresses one ``assign`` at a time;
    * ``one-txn``: the same allocations written as one etcd transaction;
    * ``revert``: every allocation of ``host`` in ``pool`` removed in one transaction.
    Prints ``start <t>`` and ``end <t>`` around the timed writes.
    """
    from datastore import Datastore, Delete, EtcdConfig, ModRevisionIs, Put, codec, keys
    from ipam import Allocator
    from ipam.allocator import HandleRef

    store = Datastore(EtcdConfig.from_env())
    if action == "claim":
        alloc = Allocator(store, host)
        for i, block in enumerate(ipaddress.ip_network(pool).subnets(new_prefix=26)):
            alloc.assign(f"bench-own-{i}", address=str(block.network_address))
        return 0

    blocks = _blocks_of(store, pool)
    if action in ("allocator", "one-txn"):
        wanted: list[tuple[str, str]] = []  # (address, block cidr)
        for block, _ in blocks:
            for ordinal in sorted(block.unallocated):
                wanted.append((block.address(ordinal), block.cidr))
        if len(wanted) < count:
            print(f"error only {len(wanted)} free addresses", flush=True)
            return 1
        wanted = wanted[:count]
        handle = lambda address: "bench-b-" + address.replace(".", "-")  # noqa: E731
        if action == "allocator":
            alloc = Allocator(store, host)
            t = time.monotonic()
            print(f"start {t:.6f}", flush=True)
            for address, _ in wanted:
                alloc.assign(handle(address), address=address)
            print(f"end {time.monotonic():.6f}", flush=True)
            return 0
        # one-txn: handle keys first (nobody watches them), then all blocks at once
        puts = [Put(keys.handle(handle(a), a), codec.dumps(HandleRef(cidr))) for a, cidr in wanted]
        for i in range(0, len(puts), 100):
            store.txn([], puts[i:i + 100])
        by_block = {b.cidr: (b.copy(), rev) for b, rev in blocks}
        for address, cidr in wanted:
            by_block[cidr][0].allocate_address(address, handle(address), host, {})
        compares = [ModRevisionIs(keys.block(c), rev) for c, (_, rev) in by_block.items()]
        writes = [Put(keys.block(c), codec.dumps(b)) for c, (b, _) in by_block.items()]
        t = time.monotonic()
        print(f"start {t:.6f}", flush=True)
        result = store.txn(compares, writes)
        print(f"end {time.monotonic():.6f}", flush=True)
        if not result.succeeded:
            print("error one-txn lost a compare", flush=True)
            return 1
        return 0
    if action == "revert":
        handles = []
        compares, writes = [], []
        for block, rev in blocks:
            new = block.copy()
            mine = [(o, a) for o, a in block.allocations.items() if a.host == host]
            if not mine:
                continue
            for ordinal, allocation in mine:
                address = block.address(ordinal)
                new.release(address)
                handles.append(Delete(keys.handle(allocation.handle, address)))
            compares.append(ModRevisionIs(keys.block(block.cidr), rev))
            writes.append(Put(keys.block(block.cidr), codec.dumps(new)))
        t = time.monotonic()
        print(f"start {t:.6f}", flush=True)
        if writes and not store.txn(compares, writes).succeeded:
            print("error revert lost a compare", flush=True)
            return 1
        print(f"end {time.monotonic():.6f}", flush=True)
        for i in range(0, len(handles), 100):
            store.txn([], handles[i:i + 100])
        return 0
    raise SystemExit(f"unknown ipam action {action}")


def run_helper(argv: list[str]) -> int:
    name, args = argv[0], argv[1:]
    if name == "_probe":
        return helper_probe(args[0], float(args[1]))
    if name == "_routes":
        return helper_routes(args[0], int(args[1]), args[2], float(args[3]), *args[4:5])
    if name == "_ipam":
        return helper_ipam(args[0], args[1], args[2], int(args[3]))
    raise SystemExit(f"unknown helper {name}")


def _lines(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        words = line.split()
        if words:
            out[words[0]] = words[1:]
    return out


# =====================================================================================
# A. Node memory
# =====================================================================================

def node_memory(lab, host: str) -> list[dict]:
    """RSS and PSS (KiB) of every process of ``host``'s node (see bench.memory)."""
    from bench.memory import node_memory as measure
    return measure(lab, host)


# =====================================================================================
# B. Convergence
# =====================================================================================

def measure_convergence(lab, runs: int, every: int, encap: str, early: bool = False,
                        first_net: int = 0) -> list[dict]:
    """``early``: the prober sends from just before ``docker run`` starts (traffic
    already waiting for the new address) instead of from when it returns."""
    results = []
    network, src_pid, targets = None, 0, iter(())
    for i in range(runs):
        if i % every == 0:
            n = first_net + i // every
            network, subnet = f"conv{n}", CONV_SUBNET.format(n=100 + n)
            create_network(lab, ("host1", "host2"), network, subnet, encap)
            src_pid, src_addr = run_container(lab, "host1", f"src{n}", network)
            src_block = ipaddress.ip_network(f"{src_addr}/26", strict=False)
            block = next(b for b in ipaddress.ip_network(subnet).subnets(new_prefix=26) if b != src_block)
            targets = (str(block.network_address + 10 + k) for k in range(every))
            time.sleep(1.0)  # host1's own new block announced and settled
        target = next(targets)
        new_block = i % every == 0
        probe = subprocess.Popen(in_pid_netns(src_pid, self_argv("_probe", target, "15")),
                                 cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            if probe.stdout.readline().strip() != "ready":
                raise RuntimeError(f"probe failed: {probe.stderr.read().strip()}")
            time.sleep(0.3)
            if early:
                probe.stdin.write("go\n")
                probe.stdin.flush()
            started = time.monotonic()
            docker(lab, "host2", "run", "-d", "--init", "--name", f"dst{n}-{i}", "--net", network,
                   "--ip", target, IMAGE, "sleep", "3600")
            t0 = time.monotonic()
            if not early:
                probe.stdin.write("go\n")
                probe.stdin.flush()
            out, err = probe.communicate(timeout=30)
        finally:
            if probe.poll() is None:
                probe.kill()
                probe.wait()
        got = _lines(out)
        if "reply" not in got:
            raise RuntimeError(f"run {i}: {target} never answered ({out.strip()} {err.strip()})")
        reply = float(got["reply"][0])
        results.append({"run": i, "new_block": new_block, "target": target, "early": early,
                        "docker_run": t0 - started, "raw": reply - t0, "seconds": max(0.0, reply - t0)})
        print(f"   run {i:2d} {'new block ' if new_block else 'same block'} {target:15s} "
              f"{'early ' if early else ''}docker run {1000 * (t0 - started):6.1f} ms   "
              f"first reply {1000 * (reply - t0):+7.1f} ms",
              flush=True)
        time.sleep(0.2)
    return results


# =====================================================================================
# C. Route burst
# =====================================================================================

def _helper_in_host(lab, host: str, *args: str, timeout: float = 120) -> dict[str, list[str]]:
    result = lab.exec(host, self_argv(*args), cwd=REPO, timeout=timeout)
    if result.returncode:
        raise RuntimeError(f"{host}: {' '.join(args)}: {result.stdout.strip()} {result.stderr.strip()[-400:]}")
    return _lines(result.stdout)


def _start_monitor(lab, host: str, count: int, mode: str, peer: str) -> subprocess.Popen:
    argv = in_netns(host_netns(lab, host), self_argv("_routes", BURST_POOL, str(count), mode, "60", peer))
    mon = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    line = mon.stdout.readline().split()
    if not line or line[0] != "ready":
        mon.kill()
        raise RuntimeError(f"route monitor failed: {mon.stderr.read().strip()}")
    return mon


def _finish_monitor(mon: subprocess.Popen) -> dict[str, list[str]]:
    try:
        out, err = mon.communicate(timeout=90)
    finally:
        if mon.poll() is None:
            mon.kill()
            mon.wait()
    got = _lines(out)
    if "done" not in got:
        raise RuntimeError(f"routes did not all arrive: {out.strip()} {err.strip()[-300:]}")
    return got


def burst_once(lab, count: int, how: str) -> dict:
    peer = lab.host("host2").ipv4
    mon = _start_monitor(lab, "host1", count, "add", peer)
    try:
        w = _helper_in_host(lab, "host2", "_ipam", how, BURST_POOL, "host2", str(count))
    except BaseException:
        mon.kill()
        mon.wait()
        raise
    got = _finish_monitor(mon)
    start, end = float(w["start"][0]), float(w["end"][0])
    first, done = float(got["first"][0]), float(got["done"][0])
    installed = sum(1 for r in bgp_routes(lab, "host1")
                    if r.split()[0].startswith("10.20.16") and "/" not in r.split()[0])
    add = {"how": how, "write": end - start, "first": first - start, "total": done - start,
           "after_write": done - end, "installed": installed, "overflow": "overflow" in got}
    if "bgp" in got:  # when host2's UPDATEs reached host1's eth0: splits sender and receiver
        add["wire_last"] = float(got["bgp"][1]) - start
        add["wire_bytes"] = int(got["bgp"][2])
        add["after_wire"] = done - float(got["bgp"][1])
    # undo in one transaction, timing the withdraw burst
    mon = _start_monitor(lab, "host1", count, "del", peer)
    try:
        r = _helper_in_host(lab, "host2", "_ipam", "revert", BURST_POOL, "host2", str(count))
    except BaseException:
        mon.kill()
        mon.wait()
        raise
    got = _finish_monitor(mon)
    add["withdraw"] = float(got["done"][0]) - float(r["start"][0])
    return add


def measure_burst(lab, count: int, reps: int, encap: str = "native") -> list[dict]:
    warrenctl(lab, "host1", "pool", "add", BURST_POOL, *(["--vxlan"] if encap == "vxlan" else []))
    _helper_in_host(lab, "host1", "_ipam", "claim", BURST_POOL, "host1", "0")
    blocks = 1 << (26 - ipaddress.ip_network(BURST_POOL).prefixlen)
    wait_until(lambda: sum(1 for r in bgp_routes(lab, "host2") if r.split()[0].startswith("10.20.16"))
               >= blocks, 30, what=f"host1's {blocks} blocks on host2")
    time.sleep(1.0)
    out = []
    for rep in range(reps):
        for how in ("one-txn", "allocator"):
            r = burst_once(lab, count, how)
            out.append(r)
            wire = (f"; last UPDATE on host1's wire {r['wire_last']:.3f} s ({r['wire_bytes']} B), "
                    f"then {r['after_wire']:.3f} s to the last route" if "wire_last" in r else "")
            print(f"   {how:9s} rep {rep + 1}: etcd writes {r['write']:.3f} s, first route {r['first']:.3f} s, "
                  f"all {r['installed']} installed {r['total']:.3f} s (after the last write "
                  f"{r['after_write']:.3f} s{wire}); withdraw of all {r['withdraw']:.3f} s"
                  + ("  [monitor overflowed; polled]" if r["overflow"] else ""), flush=True)
            time.sleep(1.0)
    return out


# =====================================================================================
# main
# =====================================================================================

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].startswith("_"):
        return run_helper(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=2, choices=(2, 3))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--new-block-every", type=int, default=5)
    ap.add_argument("--early-runs", type=int, default=10,
                    help="extra runs whose probe starts before docker run (0: none)")
    ap.add_argument("--routes", type=int, default=1000)
    ap.add_argument("--burst-runs", type=int, default=3)
    ap.add_argument("--encap", choices=("native", "vxlan"), default="native")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds of idle before the memory reading")
    ap.add_argument("--sections", default="ABC", help="which parts to run: A memory, B convergence, C burst")
    args = ap.parse_args(argv)
    if args.routes > 1008:
        ap.error("--routes: at most 1008 (free addresses of the /22 burst pool)")
    problem = lab_env_ok()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    from ctl.lab import Lab

    runinfo.header("Warren fabric benchmark", "bench.fabric", argv)
    lab = Lab("bf" + secrets.token_hex(3))
    try:
        t = time.monotonic()
        lab.up(args.hosts, node=True)
        print(f"lab {lab.name} up with {args.hosts} hosts in {time.monotonic() - t:.1f} s", flush=True)
        # the mesh is up once host1 routes a block of host2
        create_network(lab, ("host1", "host2"), "warm", "10.20.99.0/24")
        warm_pid, _ = run_container(lab, "host1", "warm1", "warm")
        _, warm2 = run_container(lab, "host2", "warm2", "warm")
        wait_until(lambda: any(r.startswith("10.20.99.") for r in bgp_routes(lab, "host1")), 60,
                   what="BGP session host1-host2")
        if not cross_host_pings(lab, warm_pid, warm2):
            raise RuntimeError("native cross-host ping does not work")

        sections = set(args.sections.upper())
        if "A" in sections:
            time.sleep(args.settle)
            report_memory(lab)
        if "B" in sections:
            ok = report_convergence(lab, args)
        else:
            ok = args.encap == "native" or encap_available(lab, args.encap, "10.20.98.0/24")[0]
        if "C" in sections:
            report_burst(lab, args, args.encap if ok else "native")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
        return 0
    finally:
        lab.down()


def report_memory(lab) -> None:
    """Section A: host1's node processes, summed, against the goal."""
    mem = node_memory(lab, "host1")
    rss = sum(p["rss"] for p in mem) / 1024
    pss = sum(p["pss"] for p in mem) / 1024
    print(f"\nA. node memory of host1 at idle ({len(mem)} processes, sessions up, 2 containers)")
    for p in mem:
        print(f"   {p['what']:18s} pid {p['pid']:7d}  RSS {p['rss'] / 1024:6.1f} MiB  PSS {p['pss'] / 1024:6.1f} MiB")
    print(f"   total RSS {rss:.1f} MiB (PSS {pss:.1f} MiB)   goal <= {GOAL_MEMORY_MIB:.0f} MiB   "
          f"{verdict(rss <= GOAL_MEMORY_MIB)}", flush=True)


def report_convergence(lab, args) -> bool:
    """Section B; returns whether the encapsulation gives cross-host connectivity."""
    print(f"\nB. convergence, encap {args.encap}: {args.runs} runs probing from when docker run "
          f"returns, then {args.early_runs} with traffic already waiting; a new block every "
          f"{args.new_block_every} runs", flush=True)
    ok = args.encap == "native"
    if not ok:
        ok, why = encap_available(lab, args.encap, "10.20.98.0/24")
        if not ok:
            print(f"   {args.encap}: NOT AVAILABLE: {why}")
            return False
    conv = measure_convergence(lab, args.runs, args.new_block_every, args.encap)
    nets = -(-args.runs // args.new_block_every)
    early = measure_convergence(lab, args.early_runs, args.new_block_every, args.encap,
                                early=True, first_net=nets) if args.early_runs else []
    for label, rs in (("probe from docker run's return", conv), ("traffic already waiting", early)):
        if not rs:
            continue
        secs = [r["seconds"] for r in rs]
        new = [r["seconds"] for r in rs if r["new_block"]]
        old = [r["seconds"] for r in rs if not r["new_block"]] or [0.0]
        p50, p99 = percentile(secs, 50), percentile(secs, 99)
        print(f"   {label}: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
              f"max {max(secs) * 1000:.1f} ms; new-block runs median {statistics.median(new) * 1000:.1f} ms "
              f"(max {max(new) * 1000:.1f}), same-block median {statistics.median(old) * 1000:.1f} ms; "
              f"answered before docker run returned: {sum(1 for r in rs if r['raw'] <= 0)}/{len(rs)}")
        if rs is conv:
            print(f"   p99 {p99 * 1000:.1f} ms   goal <= {GOAL_CONV_P99 * 1000:.0f} ms   "
                  f"{verdict(p99 <= GOAL_CONV_P99)}", flush=True)
    return True


def report_burst(lab, args, encap: str) -> None:
    """Section C: medians of the burst repetitions, the one-txn total against the goal."""
    print(f"\nC. burst of {args.routes} borrowed /32s (host2 borrows in host1's blocks), "
          f"{args.burst_runs} repetitions, pool encap {encap}", flush=True)
    burst = measure_burst(lab, args.routes, args.burst_runs, encap)
    for how in ("one-txn", "allocator"):
        rs = [r for r in burst if r["how"] == how]
        med = {k: statistics.median(r[k] for r in rs) for k in (
            "write", "first", "total", "after_write", "withdraw", "wire_last", "after_wire")
            if all(k in r for r in rs)}
        wire = (f", last UPDATE reached host1 {med['wire_last']:.3f} s, host1 done "
                f"{med['after_wire']:.3f} s later" if "wire_last" in med else "")
        print(f"   {how:9s} median: etcd writes {med['write']:.3f} s, first route {med['first']:.3f} s, "
              f"all installed {med['total']:.3f} s, after the last write {med['after_write']:.3f} s"
              f"{wire}; withdraw {med['withdraw']:.3f} s")
        if how == "one-txn":
            print(f"   announce-to-installed (one-txn total) {med['total']:.3f} s   goal <= {GOAL_BURST} s   "
                  f"{verdict(med['total'] <= GOAL_BURST)}")
    mem = node_memory(lab, "host1")
    print(f"\n   (context) host1 node RSS after the burst: {sum(p['rss'] for p in mem) / 1024:.1f} MiB "
          f"(PSS {sum(p['pss'] for p in mem) / 1024:.1f} MiB)")


if __name__ == "__main__":
    sys.exit(main())
