"""The IP-in-IP data path, end to end, driven by Warren's own code. Runs INSIDE the guest.

This module needs a kernel with ``CONFIG_NET_IPIP``, so it is not a normal
test module: its name does not match ``test_*.py`` (the normal run never
collects it) and it skips itself unless :data:`GUEST_MARKER` is set, which
only ``tests/ipip/guest.py`` does. ``tests/e2e/ipip/test_ipip_guest.py`` runs
it as::

    python3 tests/ipip/guest.py -- env PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 \
        python -m pytest -p no:cacheprovider --noconftest tests/ipip/guest_ipip_check.py

from the repository root (``--noconftest`` and no plugin autoload because every
import costs dearly under emulation: Python is 5-10x slower and reads over 9p).

The rig: two "hosts" and two "containers", all network namespaces of the
guest (the guest has no NIC, so nothing leaves it)::

    ctrA eth0 10.65.0.2/32                                   ctrB eth0 10.65.1.2/32
      |  veth (Dataplane.create_workload)                       |
    hostA wrn...  tunl0 ==== ul0 198.51.100.1/24 -- 198.51.100.2/24 ul0 ==== tunl0  wrn...  hostB

What is Warren's and what is scaffolding:

* Warren: tunl0 set-up as ``ctl.node._setup_fabric`` does it for an ``--ipip``
  pool (``fabric.check_ipip()``, which loads the ``ipip`` module itself, and
  ``fabric.set_mtu`` from the underlay's MTU read by
  ``Dataplane.interface_mtu``; importing ``ctl.node`` itself would cost ~10 s
  under emulation), IP forwarding
  (``Dataplane.ensure_forwarding``), the workload veth with proxy ARP and its
  /32 route (``Dataplane.create_workload`` with ``workload_mtu(1500, "ipip")``),
  the route to the peer's block (``Fib().apply`` with device ``tunl0``) and
  reading it back (``Fib().learned``), and the withdrawal (``Fib().apply``
  with ``removed``).
* Scaffolding: the underlay veth and each host's default route (proxy ARP
  only answers when the host has a route, as every real host does),
  ``rp_filter=2`` as on a Debian host, and the container side, which Docker
  does for real (rename to ``eth0``, the /32 address, ``169.254.1.1 scope
  link`` and the default route through it). Pings are ICMP echoes from a raw
  socket (the base image has no iputils ``ping``; busybox's has no DF option).

Each host puts its tunnel address (an address of its own block; ``warrenctl
node start`` allocates it from the ipip pool) on tunl0 with
``fabric.set_tunnel_address``. Forwarded container traffic would not need it,
but host-originated traffic to a remote container does: without it the inner
source is the host's underlay address, which the receiving host's rp_filter
(1 or 2) drops on an address-less tunl0 - a gap this test found, and which
the tunnel address closes (as in Calico).
"""
from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import re
import select
import socket
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Iterator

import pytest
# Imported here, once: each namespace step runs in a child forked from this process,
# and an import under emulation over 9p costs seconds.
import pyroute2.netns
from pyroute2 import IPRoute

from bgp import fabric
from bgp.fib import Fib
from plugin.dataplane import Dataplane, host_ifname, workload_mtu
from tests.ipip.guest import GUEST_MARKER
from tests.support.netns import run_in_netns, sh, temp_netns

log = logging.getLogger("warren.ipip.check")
PRELOADED = (pyroute2.netns,)  # what tests.support.netns's children import to enter a namespace

pytestmark = pytest.mark.skipif(os.environ.get(GUEST_MARKER) != "1",
                                reason="needs a kernel with ipip: runs inside tests/ipip/guest.py")

POOL = "10.65.0.0/16"
UNDERLAY_DEV = "ul0"
UNDERLAY_MTU = 1500
UNDERLAY_GATEWAY = "198.51.100.254"   # nobody answers: the route only has to exist
CONTAINER_GATEWAY = "169.254.1.1"
IPIP_PROTO = 4
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2
IP_AND_ICMP_HEADERS = 28


@dataclass
class Host:
    label: str
    underlay_ip: str
    block: str
    workload_ip: str
    mac: str
    ns: str = ""
    ctr: str = ""
    endpoint_id: str = ""


@dataclass
class Rig:
    a: Host
    b: Host
    expected_mtu: int
    module_was_loaded: bool   # before Warren's check_ipip ran


# --------------------------------------------------------------------------- in-namespace steps
# Each runs in a forked child that entered one namespace (tests.support.netns.run_in_netns).


def add_underlay(peer_ns: str) -> None:
    """In host A: the veth pair ``ul0`` <-> ``ul0`` (in ``peer_ns``)."""
    with IPRoute() as ipr:
        ipr.link("add", ifname=UNDERLAY_DEV, kind="veth", mtu=UNDERLAY_MTU,
                 peer={"ifname": UNDERLAY_DEV, "net_ns_fd": peer_ns, "mtu": UNDERLAY_MTU})


def configure_underlay(address: str) -> None:
    """Address, link and default route of ``ul0``; rp_filter as Debian sets it."""
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=UNDERLAY_DEV)[0]
        ipr.addr("add", index=index, address=address, prefixlen=24)
        ipr.link("set", index=index, state="up")
        ipr.route("add", dst="0.0.0.0/0", gateway=UNDERLAY_GATEWAY, oif=index)
    for scope in ("all", "default"):
        with open(f"/proc/sys/net/ipv4/conf/{scope}/rp_filter", "w") as f:
            f.write("2")


def setup_node_fabric(tunnel: str) -> None:
    """The ipip part of ``warrenctl node start`` (``ctl.node._setup_fabric`` with an ipip
    pool, whose import would cost ~10 s here), then forwarding as the node enables it."""
    dataplane = Dataplane()
    fabric.check_ipip()
    fabric.set_mtu(fabric.IPIP_DEV, dataplane.interface_mtu(UNDERLAY_DEV) - fabric.OVERHEAD["ipip"])
    fabric.set_tunnel_address(tunnel)
    dataplane.ensure_forwarding()


def tunnel_address(host: "Host") -> str:
    """The node's tunnel address: an address of its own block (IPAM gives it in node start)."""
    return str(ipaddress.ip_network(host.block)[1])


def create_workload(endpoint_id: str, address: str, mac: str, ctr_ns: str) -> tuple[str, str]:
    return Dataplane().create_workload(endpoint_id, [address], mac,
                                       workload_mtu(UNDERLAY_MTU, "ipip"), peer_netns=ctr_ns)


def program_routes(changes: dict[str, tuple[str, str]], removed: list[str]) -> int:
    return Fib().apply(changes, removed)


def learned_routes() -> dict:
    return Fib().learned()


def configure_container(tmp_ifname: str, address: str) -> None:
    """What Docker does with the interface Warren's Join hands over."""
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=tmp_ifname)[0]
        ipr.link("set", index=index, ifname="eth0")
        ipr.addr("add", index=index, address=address, prefixlen=32)
        ipr.link("set", index=index, state="up")
        ipr.route("add", dst=f"{CONTAINER_GATEWAY}/32", oif=index, scope=253)  # scope link
        ipr.route("add", dst="0.0.0.0/0", gateway=CONTAINER_GATEWAY, oif=index)


def link_info(ifname: str) -> dict:
    """MTU, up flag and packet counters of ``ifname``."""
    with IPRoute() as ipr:
        link = ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0]
        stats = link.get_attr("IFLA_STATS64") or {}
        return {"mtu": link.get_attr("IFLA_MTU"), "up": bool(link["flags"] & 1),
                "tx_packets": stats.get("tx_packets", 0), "rx_packets": stats.get("rx_packets", 0)}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, _checksum(header + payload), ident, seq) + payload


def _await_reply(sock: socket.socket, source: str, ident: int, seq: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            packet, (sender, _) = sock.recvfrom(65535)
        except socket.timeout:
            return False
        icmp = packet[(packet[0] & 0x0F) * 4:]
        kind, _, _, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
        if sender == source and kind == ICMP_ECHO_REPLY and (rid, rseq) == (ident, seq):
            return True
    return False


def ping(target: str, total_size: int = 84, count: int = 2, df: bool = False,
         timeout: float = 2.0) -> dict:
    """ICMP echoes of ``total_size`` bytes (IP packet); returns the replies or the send error."""
    payload = bytes(i & 0xFF for i in range(total_size - IP_AND_ICMP_HEADERS))
    ident = os.getpid() & 0xFFFF
    replies = 0
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        if df:
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        for seq in range(1, count + 1):
            try:
                sock.sendto(_echo_request(ident, seq, payload), (target, 0))
            except OSError as exc:
                return {"sent": seq - 1, "replies": replies, "error": errno.errorcode.get(exc.errno)}
            replies += _await_reply(sock, target, ident, seq, timeout)
    return {"sent": count, "replies": replies, "error": None}


# --------------------------------------------------------------------------- the rig


def _host_pair() -> tuple[Host, Host]:
    blocks = list(ipaddress.ip_network(POOL).subnets(new_prefix=26))
    a, b = blocks[0], blocks[4]  # 10.65.0.0/26 and 10.65.1.0/26
    return (Host("A", "198.51.100.1", str(a), str(a[2]), "02:00:0a:41:00:02"),
            Host("B", "198.51.100.2", str(b), str(b[2]), "02:00:0a:41:01:02"))


def _build_host(host: Host, peer: Host) -> None:
    log.info("host %s: underlay, node fabric, workload, route to %s", host.label, peer.block)
    run_in_netns(host.ns, configure_underlay, host.underlay_ip)
    run_in_netns(host.ns, setup_node_fabric, tunnel_address(host))
    host.endpoint_id = uuid.uuid4().hex * 2
    _, tmp = run_in_netns(host.ns, create_workload, host.endpoint_id, host.workload_ip, host.mac, host.ctr)
    run_in_netns(host.ctr, configure_container, tmp, host.workload_ip)
    failures = run_in_netns(host.ns, program_routes, {peer.block: (peer.underlay_ip, fabric.IPIP_DEV)}, [])
    assert failures == 0, f"Fib().apply could not install {peer.block} on host {host.label}"


@contextlib.contextmanager
def build_rig() -> Iterator[Rig]:
    """The two hosts and their containers; every namespace is deleted afterwards."""
    a, b = _host_pair()
    loaded = os.path.exists("/sys/module/ipip")
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        a.ns, b.ns, a.ctr, b.ctr = (stack.enter_context(temp_netns(p)) for p in ("hA", "hB", "cA", "cB"))
        run_in_netns(a.ns, add_underlay, b.ns)
        _build_host(a, b)
        _build_host(b, a)
        log.info("rig ready in %.1f s", time.monotonic() - started)
        yield Rig(a, b, UNDERLAY_MTU - fabric.OVERHEAD["ipip"], loaded)


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with build_rig() as built:
        yield built


# --------------------------------------------------------------------------- tcpdump


@contextlib.contextmanager
def capture(ns: str, bpf: str, packets: int, timeout: float = 20) -> Iterator[SimpleNamespace]:
    """tcpdump ``-v`` on the underlay of ``ns`` while the body runs; ``.text`` afterwards."""
    argv = ["ip", "netns", "exec", ns, "tcpdump", "-n", "-v", "-l", "-i", UNDERLAY_DEV,
            "-c", str(packets), bpf]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    result = SimpleNamespace(text="")
    try:
        _await_banner(proc, timeout)
        yield result
        out, _ = proc.communicate(timeout=timeout)
        result.text = out.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            result.text = proc.communicate()[0].decode(errors="replace")
    log.info("tcpdump %s:\n%s", bpf, result.text)


def _await_banner(proc: subprocess.Popen, timeout: float) -> None:
    """Wait for tcpdump's "listening on ul0, ..." on stderr: from then on it captures."""
    seen = b""
    deadline = time.monotonic() + timeout
    while b"listening on" not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stderr], [], [], left)[0]:
            raise AssertionError(f"tcpdump did not start within {timeout} s: {seen!r}")
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            raise AssertionError(f"tcpdump exited: {seen!r}")
        seen += chunk


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text)


# --------------------------------------------------------------------------- checks


def test_node_fabric_brings_tunl0_up_with_the_ipip_mtu(rig):
    assert not rig.module_was_loaded, "ipip was loaded before Warren's check_ipip ran"
    assert os.path.exists("/sys/module/ipip"), "check_ipip did not load the ipip module"
    for host in (rig.a, rig.b):
        tunl0 = run_in_netns(host.ns, link_info, "tunl0")
        assert tunl0["up"], f"tunl0 is down on host {host.label}"
        assert tunl0["mtu"] == rig.expected_mtu == 1480


def test_workload_interfaces_have_the_ipip_mtu(rig):
    for host in (rig.a, rig.b):
        assert run_in_netns(host.ctr, link_info, "eth0")["mtu"] == 1480
        assert run_in_netns(host.ns, link_info, host_ifname(host.endpoint_id))["mtu"] == 1480


def test_route_to_the_peer_block_goes_through_tunl0(rig):
    for host, peer in ((rig.a, rig.b), (rig.b, rig.a)):
        line = sh(host.ns, "ip", "route", "show", peer.block).stdout.strip()
        for token in (peer.block, f"via {peer.underlay_ip}", "dev tunl0", "proto 81", "onlink"):
            assert token in line, f"host {host.label}: {line!r} lacks {token!r}"
        learned = run_in_netns(host.ns, learned_routes)
        assert learned == {peer.block: (peer.underlay_ip, "tunl0")}


def test_containers_ping_each_other_both_ways(rig):
    for src, dst in ((rig.a, rig.b), (rig.b, rig.a)):
        result = run_in_netns(src.ctr, ping, dst.workload_ip, 84, 3)
        assert result == {"sent": 3, "replies": 3, "error": None}, \
            f"ctr{src.label} -> ctr{dst.label} ({dst.workload_ip}): {result}"


def test_underlay_carries_ipip_packets_with_the_container_addresses(rig):
    a, b = rig.a, rig.b
    before = run_in_netns(a.ns, link_info, "tunl0")
    with capture(b.ns, f"ip proto {IPIP_PROTO}", packets=2) as cap:
        assert run_in_netns(a.ctr, ping, b.workload_ip, 84, 1)["replies"] == 1
    text = _one_line(cap.text)
    assert "proto IPIP (4)" in text, cap.text
    assert (f"{a.underlay_ip} > {b.underlay_ip}: IP (" in text
            and f"{a.workload_ip} > {b.workload_ip}: ICMP echo request" in text), cap.text
    assert (f"{b.underlay_ip} > {a.underlay_ip}: IP (" in text
            and f"{b.workload_ip} > {a.workload_ip}: ICMP echo reply" in text), cap.text
    after = run_in_netns(a.ns, link_info, "tunl0")
    assert after["tx_packets"] > before["tx_packets"] and after["rx_packets"] > before["rx_packets"]


def test_full_size_df_packet_fits_and_one_more_byte_does_not(rig):
    a, b = rig.a, rig.b
    bpf = f"ip proto {IPIP_PROTO} and src host {a.underlay_ip}"
    with capture(b.ns, bpf, packets=1) as cap:
        fits = run_in_netns(a.ctr, ping, b.workload_ip, rig.expected_mtu, 1, True)
    assert fits == {"sent": 1, "replies": 1, "error": None}, fits
    # On the wire: a 1500-byte outer packet (the underlay MTU) carrying the 1480-byte one.
    assert re.search(rf"proto IPIP \(4\), length {UNDERLAY_MTU}\)", cap.text), cap.text
    assert re.search(rf"proto ICMP \(1\), length {rig.expected_mtu}\)", cap.text), cap.text
    too_big = run_in_netns(a.ctr, ping, b.workload_ip, rig.expected_mtu + 1, 1, True)
    assert too_big["error"] == "EMSGSIZE", too_big


def test_host_reaches_remote_container_from_its_tunnel_address(rig):
    """Host-originated traffic: with Warren's tunnel address on tunl0 (fabric.set_tunnel_address,
    as node start sets it) that address is the inner source, which the remote host's
    rp_filter (2, as on Debian) accepts, and both directions are tunnelled. Without it
    the source would be the underlay address, dropped on arrival."""
    a, b = rig.a, rig.b
    address = tunnel_address(a)
    with capture(b.ns, f"ip proto {IPIP_PROTO}", packets=2) as cap:
        result = run_in_netns(a.ns, ping, b.workload_ip, 84, 1)
    assert result["replies"] == 1, result
    text = _one_line(cap.text)
    assert f"{address} > {b.workload_ip}: ICMP echo request" in text, cap.text
    assert f"{b.workload_ip} > {address}: ICMP echo reply" in text, cap.text


def test_withdrawn_route_stops_the_traffic(rig):
    """Negative control (runs last: it changes the rig): the traffic above needed Warren's route."""
    a, b = rig.a, rig.b
    assert run_in_netns(a.ns, program_routes, {}, [b.block]) == 0
    assert run_in_netns(a.ns, learned_routes) == {}
    result = run_in_netns(a.ctr, ping, b.workload_ip, 84, 1, False, 1.0)
    assert result["replies"] == 0, result
