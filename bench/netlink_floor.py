"""The kernel's floor under the plugin's workload plumbing: Join's veth work in raw rtnetlink.

bench/plugin_profile.py finds most of the plugin's netlink time in pyroute2 (0.9's sync
``IPRoute`` runs an asyncio loop per request and decodes every attribute of every
answer: ~0.4-0.9 ms per request against ~15 us for the same request on a raw socket
here). This measures what Join's plumbing costs when the same kernel work is asked for
with hand-encoded rtnetlink messages on one socket kept open - veth pair created up
with the peer's MAC and MTU, index by name, the same five sysctl writes, /32 route
``proto 80 scope link``, permanent neighbour - against ``plugin.dataplane.Dataplane``
doing it, interleaved, in a private namespace (``--count`` of each; the peers are moved
to a second namespace between rounds, untimed, as dockerd does). Deletion is timed too,
and first one small request (the index of ``lo``) 200 times three ways: raw, pyroute2
with its ``IPRoute`` kept open, and pyroute2 opening one for it (as ``Dataplane`` does).

The encoder is a sketch for measurement, not a replacement: it knows only these
messages (pure functions, unit-tested in tests/unit/bench).

    python -m bench.netlink_floor [--count 50]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import time

from bench.runinfo import header

NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x200, 0x400
NLMSG_ERROR = 2
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_NEWROUTE, RTM_NEWNEIGH = 16, 17, 18, 24, 28
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 4, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
RTA_DST, RTA_OIF = 1, 4
NDA_DST, NDA_LLADDR = 1, 2
IFF_UP = 1
NUD_PERMANENT = 0x80
RT_TABLE_MAIN, RTN_UNICAST, RT_SCOPE_LINK, RTPROT_WARREN = 254, 1, 253, 80


# -- encoding (pure) -------------------------------------------------------------------------

def attr(kind: int, data: bytes) -> bytes:
    """One rtattr, padded to 4 bytes."""
    raw = struct.pack("=HH", 4 + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


def ifname(name: str) -> bytes:
    return name.encode() + b"\0"


def mac(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, flags, change)


def new_veth(seq: int, host: str, peer: str, host_mac: str, peer_mac: str, mtu: int) -> bytes:
    """RTM_NEWLINK: a veth pair, the host side up (the peer stays down until Docker moves it)."""
    peer_info = ifinfo() + attr(IFLA_IFNAME, ifname(peer)) + attr(IFLA_ADDRESS, mac(peer_mac)) \
        + attr(IFLA_MTU, struct.pack("=I", mtu))
    linkinfo = attr(IFLA_INFO_KIND, b"veth\0") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_info))
    body = ifinfo(flags=IFF_UP, change=IFF_UP) + attr(IFLA_IFNAME, ifname(host)) \
        + attr(IFLA_ADDRESS, mac(host_mac)) + attr(IFLA_MTU, struct.pack("=I", mtu)) \
        + attr(IFLA_LINKINFO, linkinfo)
    return message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq, body)


def get_link(seq: int, name: str) -> bytes:
    return message(RTM_GETLINK, NLM_F_REQUEST, seq, ifinfo() + attr(IFLA_IFNAME, ifname(name)))


def del_link(seq: int, index: int) -> bytes:
    return message(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, seq, ifinfo(index=index))


def replace_route(seq: int, address: str, oif: int) -> bytes:
    """RTM_NEWROUTE, NLM_F_REPLACE: ``address/32 dev oif scope link proto 80``."""
    body = struct.pack("=BBBBBBBBI", socket.AF_INET, 32, 0, 0, RT_TABLE_MAIN, RTPROT_WARREN,
                       RT_SCOPE_LINK, RTN_UNICAST, 0)
    body += attr(RTA_DST, socket.inet_aton(address)) + attr(RTA_OIF, struct.pack("=i", oif))
    return message(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, seq, body)


def replace_neigh(seq: int, address: str, lladdr: str, index: int) -> bytes:
    body = struct.pack("=BxxxiHBB", socket.AF_INET, index, NUD_PERMANENT, 0, 0)
    body += attr(NDA_DST, socket.inet_aton(address)) + attr(NDA_LLADDR, mac(lladdr))
    return message(RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, seq, body)


def parse_answer(data: bytes, seq: int) -> tuple[int, int | None]:
    """(errno, ifindex of an RTM_NEWLINK answer) of the message ``seq`` in ``data``; errno 0 = ok."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind, _flags, got, _pid = struct.unpack_from("=IHHII", data, offset)
        if got == seq:
            if kind == NLMSG_ERROR:
                return -struct.unpack_from("=i", data, offset + 16)[0], None
            if kind == RTM_NEWLINK:
                return 0, struct.unpack_from("=i", data, offset + 20)[0]
        offset += (length + 3) & ~3
    raise ValueError(f"no answer to request {seq}")


# -- the raw path ------------------------------------------------------------------------------

class Rtnl:
    """One NETLINK_ROUTE socket; each request waits for its answer."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def request(self, build, *args) -> int | None:
        self.seq += 1
        self.sock.send(build(self.seq, *args))
        while True:
            try:
                err, index = parse_answer(self.sock.recv(65536), self.seq)
            except ValueError:
                continue
            if err:
                raise OSError(err, os.strerror(err))
            return index

    def close(self) -> None:
        self.sock.close()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def raw_workload(rtnl: Rtnl, endpoint_id: str, address: str, peer_mac: str, mtu: int, proc: str = "/proc",
                 write=None) -> int:
    """Join's plumbing (plugin.dataplane.Dataplane.create_workload) in 4 requests + 5 sysctl writes
    (``write(path, value)``, default: open and write)."""
    write = write or _write
    host, peer = "wrn" + endpoint_id[:11], "tmp" + endpoint_id[:11]
    rtnl.request(new_veth, host, peer, "ee:ee:ee:ee:ee:ee", peer_mac, mtu)
    index = rtnl.request(get_link, host)
    for path, value in ((f"ipv4/conf/{host}/proxy_arp", "1"), (f"ipv4/neigh/{host}/proxy_delay", "0"),
                        (f"ipv4/conf/{host}/forwarding", "1"), (f"ipv6/conf/{host}/accept_dad", "0"),
                        (f"ipv6/conf/{host}/forwarding", "1")):
        write(f"{proc}/sys/net/{path}", value)
    rtnl.request(replace_route, address, index)
    rtnl.request(replace_neigh, address, peer_mac, index)
    return index


# -- the run -------------------------------------------------------------------------------------

def _in_netns(ns: str, sink: str, count: int, conn) -> None:
    try:
        from pyroute2 import IPRoute, netns
        netns.setns(ns)
        from plugin.dataplane import Dataplane
        dataplane = Dataplane()
        dataplane.ensure_forwarding()
        rtnl = Rtnl()
        mover = IPRoute()
        sink_fd = os.open(f"/run/netns/{sink}", os.O_RDONLY)
        times: dict[str, list[float]] = {"pyroute2": [], "raw": [], "pyroute2 del": [], "raw del": [],
                                         "1 request, pyroute2 kept open": [], "1 request, raw": [],
                                         "1 request, pyroute2 opened for it": []}
        for i in range(200):  # one small request (the index of lo), interleaved
            for kind in ("1 request, pyroute2 kept open", "1 request, raw", "1 request, pyroute2 opened for it"):
                t = time.perf_counter()
                if kind.endswith("raw"):
                    rtnl.request(get_link, "lo")
                elif kind.endswith("open"):
                    mover.link_lookup(ifname="lo")
                else:
                    with IPRoute() as fresh:
                        fresh.link_lookup(ifname="lo")
                times[kind].append(time.perf_counter() - t)
        made: list[tuple[str, str]] = []
        for i in range(count + 2):
            for kind in (("pyroute2", "raw") if i % 2 else ("raw", "pyroute2")):
                ep = secrets.token_hex(32)
                address = f"10.21.{i // 250}.{i % 250 + 1}"
                peer_mac = "02:" + ":".join(ep[j:j + 2] for j in range(0, 10, 2))
                t = time.perf_counter()
                if kind == "raw":
                    raw_workload(rtnl, ep, address, peer_mac, 1500)
                else:
                    dataplane.create_workload(ep, [address], peer_mac, 1500)
                elapsed = time.perf_counter() - t
                mover.link("set", index=mover.link_lookup(ifname="tmp" + ep[:11])[0], net_ns_fd=sink_fd)
                if i >= 2:  # two warm-up rounds
                    times[kind].append(elapsed)
                made.append((kind, ep))
        for n, (kind, ep) in enumerate(made[-2 * min(count, 10):]):  # deletion: 10 of each
            t = time.perf_counter()
            if kind == "raw":
                rtnl.request(del_link, rtnl.request(get_link, "wrn" + ep[:11]))
            else:
                dataplane.remove_workload(ep)
            times[f"{kind} del"].append(time.perf_counter() - t)
        conn.send(("ok", times))
    except BaseException as exc:
        conn.send(("error", f"{exc.__class__.__name__}: {exc}"))
    finally:
        conn.close()
        os._exit(0)


def run(count: int) -> dict[str, list[float]]:
    tag = secrets.token_hex(3)
    ns, sink = f"bnf{tag}", f"bnfs{tag}"
    made = []
    try:
        for name in (ns, sink):
            subprocess.run(["ip", "netns", "add", name], check=True)
            made.append(name)
        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_in_netns, args=(ns, sink, count, child))
        proc.start()
        child.close()
        if not parent.poll(1800):
            proc.kill()
            raise RuntimeError("netlink floor timed out")
        status, value = parent.recv()
        proc.join(10)
        if status != "ok":
            raise RuntimeError(value)
        return value
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=50)
    args = ap.parse_args(argv)
    header("Join's veth plumbing: Dataplane (pyroute2) vs raw rtnetlink", "bench.netlink_floor",
           sys.argv[1:] if argv is None else argv, flush=True)
    times = run(args.count)
    for kind, values in times.items():
        ms = [v * 1000 for v in values]
        print(f"   {kind:34s} median {statistics.median(ms):6.2f} ms  (min {min(ms):.2f}, max {max(ms):.2f}, n={len(ms)})")
    ratio = statistics.median(times["raw"]) / statistics.median(times["pyroute2"])
    print("   (create: Dataplane.create_workload with its own IPRoute vs raw_workload on one socket; del: "
          "Dataplane.remove_workload vs RTM_GETLINK + RTM_DELLINK)")
    print(f"   raw / pyroute2 (create) = {ratio:.2f}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
