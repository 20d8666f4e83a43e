"""What no pool may overlap: the networks that carry the control plane.

Each block a node owns gets a blackhole route (so traffic to an unused
address of it is dropped, not sent to the default route). A pool overlapping
the host's own subnet therefore takes over the node's route to its peers and
to etcd at its first block: the node cuts itself off. So ``warrenctl pool
add`` and the plugin's RequestPool (``docker network create --subnet``)
refuse a new pool that overlaps any of:

* this host's subnets - every global address on an interface that is not
  Warren's own (``eth0``'s underlay subnet, ``docker0``...), read by the
  caller from the kernel (:meth:`plugin.dataplane.Dataplane.host_subnets`);
* every registered node's underlay addresses (``nodes/``), so another host's
  subnet is covered at least by its address;
* the etcd members the caller is configured with (literal IP addresses; a
  host name is not resolved here).

Pure checks plus one read of the node registry; the kernel is the caller's.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable

from datastore import Datastore

from .errors import InvalidPool
from .nodes import list_nodes
from .pools import IPNetwork, Pool


@dataclass(frozen=True)
class Protected:
    network: IPNetwork
    why: str  # completes "overlaps ...", e.g. "this host's subnet 192.0.2.0/24 (eth0)"


def host_protected(subnets: Iterable[tuple[str, str]]) -> list[Protected]:
    """(interface, CIDR) pairs of this host -> protected networks."""
    out = []
    for ifname, cidr in subnets:
        net = ipaddress.ip_network(cidr, strict=False)
        out.append(Protected(net, f"this host's subnet {net} ({ifname})"))
    return out


def cluster_protected(store: Datastore, etcd_hosts: Iterable[str] = ()) -> list[Protected]:
    """Every node's underlay addresses and the literal IP addresses of the etcd members."""
    out = []
    for node in list_nodes(store):
        for address in (node.ipv4, node.ipv6):
            if address:
                ip = ipaddress.ip_address(address)
                out.append(Protected(ipaddress.ip_network(ip), f"the underlay address {ip} of node {node.name}"))
    for host in etcd_hosts:
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            continue  # a host name: not resolved here
        out.append(Protected(ipaddress.ip_network(ip), f"the etcd member {ip}"))
    return out


def refuse_overlap(pool: Pool, protected: Iterable[Protected]) -> None:
    """InvalidPool (one line) if ``pool`` overlaps a protected network."""
    net = pool.network
    for p in protected:
        if p.network.version == net.version and net.overlaps(p.network):
            raise InvalidPool(f"{pool.cidr} overlaps {p.why}: its routes would cut the node off "
                              "its peers and etcd; choose another subnet")
