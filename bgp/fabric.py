"""Encapsulation devices of a node: the VXLAN VTEP and the IP-in-IP tunnel.

Routes to a pool with ``encap none`` go straight to the peer's underlay
address. For the encapsulated pools the next hop stays the peer's underlay
address, but the route goes through a device, ``onlink``:

* **vxlan**: one device per node, :data:`VXLAN_DEV` (VNI 4096, UDP 4789,
  no learning), whose MAC is derived from the node name and published in the
  node registry. For each peer the node programs an fdb entry (peer VTEP MAC
  -> peer underlay IPv4) and a permanent neighbour for the next hop: the
  peer's underlay IPv4 (route ``onlink``) or, for IPv6, the link-local
  address of the peer's VTEP MAC. MTU = underlay - 50.
* **ipip**: the kernel's ``tunl0``; MTU = underlay - 20; the node's tunnel
  address (allocated from an ipip pool) on it. A kernel without
  CONFIG_NET_IPIP cannot carry an ipip pool: :func:`check_ipip` says so.

Device names never start with ``wrn`` (that prefix is reserved for workload
veths, which start-up reconciliation sweeps).
"""
from __future__ import annotations

import hashlib
import logging
import socket
import subprocess

from pyroute2 import IPRoute, NetlinkError

log = logging.getLogger(__name__)

VXLAN_DEV = "warren-vxlan"
VXLAN_VNI = 4096
VXLAN_PORT = 4789
IPIP_DEV = "tunl0"
OVERHEAD = {"none": 0, "ipip": 20, "vxlan": 50}
RTNH_F_ONLINK = 4


class FabricError(Exception):
    pass


def vtep_mac(node: str) -> str:
    digest = hashlib.sha256(f"warren-vtep:{node}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def link_local(mac: str) -> str:
    """The EUI-64 IPv6 link-local address of ``mac``: the IPv6 next hop of a peer's VTEP.
    (A global next hop in the underlay's /64 would be refused as ``onlink`` through the
    VXLAN device, because the kernel already reaches it through the underlay interface.)"""
    b = [int(x, 16) for x in mac.split(":")]
    eui = [b[0] ^ 0x02, b[1], b[2], 0xff, 0xfe, b[3], b[4], b[5]]
    groups = [f"{eui[i] << 8 | eui[i + 1]:x}" for i in range(0, 8, 2)]
    return "fe80::" + ":".join(groups)


def ensure_vxlan(local_ipv4: str, underlay: str, mac: str, mtu: int) -> None:
    with IPRoute() as ipr:
        link = ipr.link_lookup(ifname=underlay)
        if not link:
            raise FabricError(f"underlay interface {underlay} does not exist")
        existing = ipr.link_lookup(ifname=VXLAN_DEV)
        if existing:  # re-create if it does not match (address or MAC changed)
            info = ipr.get_links(existing[0])[0]
            if info.get_attr("IFLA_ADDRESS") != mac or info.get_attr("IFLA_MTU") != mtu:
                ipr.link("del", index=existing[0])
                existing = []
        if not existing:
            try:
                ipr.link("add", ifname=VXLAN_DEV, kind="vxlan", vxlan_id=VXLAN_VNI, vxlan_local=local_ipv4,
                         vxlan_link=link[0], vxlan_port=VXLAN_PORT, vxlan_learning=0, address=mac, mtu=mtu)
            except NetlinkError as exc:
                raise FabricError(f"cannot create {VXLAN_DEV}: {exc} (is CONFIG_VXLAN enabled?)") from None
        index = ipr.link_lookup(ifname=VXLAN_DEV)[0]
        ipr.link("set", index=index, state="up")


def check_ipip() -> None:
    """Make sure ``tunl0`` exists and is up, or explain why it cannot."""
    with IPRoute() as ipr:
        if not ipr.link_lookup(ifname=IPIP_DEV):
            try:
                subprocess.run(["modprobe", "ipip"], capture_output=True, timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass  # no modprobe (or a stuck one): the check below says what is missing
        found = ipr.link_lookup(ifname=IPIP_DEV)
        if not found:
            raise FabricError("this kernel has no IP-in-IP support (CONFIG_NET_IPIP is not set), "
                              "but an ipip pool exists: use --vxlan pools on this host or a kernel with ipip")
        ipr.link("set", index=found[0], state="up")


def set_tunnel_address(address: str) -> None:
    """Give tunl0 this node's tunnel address (a /32 of one of its own blocks), as Calico
    does: host-originated traffic to a remote container then leaves with it as source,
    which the remote host's rp_filter accepts (an underlay source arriving on an
    address-less tunl0 is dropped there). Any other address on tunl0 is removed."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=IPIP_DEV)
        if not found:
            raise FabricError(f"{IPIP_DEV} does not exist")
        for addr in ipr.get_addr(index=found[0], family=socket.AF_INET):
            if addr.get_attr("IFA_ADDRESS") != address:
                ipr.addr("del", index=found[0], address=addr.get_attr("IFA_ADDRESS"),
                         prefixlen=addr["prefixlen"])
        try:
            ipr.addr("add", index=found[0], address=address, prefixlen=32)
        except NetlinkError as exc:
            if exc.code != 17:  # EEXIST: already there
                raise FabricError(f"cannot put {address} on {IPIP_DEV}: {exc}") from None


def set_mtu(device: str, mtu: int) -> None:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=device)
        if found:
            ipr.link("set", index=found[0], mtu=mtu)


class Vteps:
    """Neighbour and fdb entries of the peers' VTEPs on :data:`VXLAN_DEV`."""

    def __init__(self) -> None:
        self.programmed: dict[str, tuple[str, str]] = {}  # next hop -> (mac, peer ipv4)

    def ensure(self, ipr: IPRoute, next_hop: str, mac: str, peer_ipv4: str) -> bool:
        if self.programmed.get(next_hop) == (mac, peer_ipv4):
            return True
        found = ipr.link_lookup(ifname=VXLAN_DEV)
        if not found:
            log.warning("no %s device: cannot reach %s over vxlan", VXLAN_DEV, next_hop)
            return False
        index = found[0]
        family = socket.AF_INET6 if ":" in next_hop else socket.AF_INET
        ipr.fdb("append", ifindex=index, lladdr=mac, dst=peer_ipv4)
        ipr.neigh("replace", dst=next_hop, lladdr=mac, ifindex=index, state="permanent", family=family)
        self.programmed[next_hop] = (mac, peer_ipv4)
        return True
