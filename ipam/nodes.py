"""The node registry: every host running Warren, with its underlay addresses.

Shared by the plugin, the BGP fabric and the CLI, so it lives in the common
domain layer. A node's name is its IPAM host name (block affinity).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from datastore import Datastore, ModRevisionIs, Put, codec, keys

from .errors import InvalidRequest, IpamError


class NodeConflict(IpamError):
    pass


@dataclass
class Node:
    name: str
    ipv4: str | None = None
    ipv6: str | None = None
    as_number: int | None = None
    vtep_mac: str | None = None   # MAC of the node's VXLAN device (bgp.fabric)


def _check_address(value: str | None, version: int) -> str | None:
    if value is None:
        return None
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise InvalidRequest(f"{value!r} is not an IPv{version} address") from None
    if ip.version != version:
        raise InvalidRequest(f"{value} is not an IPv{version} address")
    return str(ip)


def list_nodes(store: Datastore) -> list[Node]:
    return sorted((codec.loads(Node, kv.value) for kv in store.get_prefix(keys.NODES)),
                  key=lambda n: n.name)


def get_node(store: Datastore, name: str) -> Node | None:
    kv = store.get(keys.node(name))
    return codec.loads(Node, kv.value) if kv else None


def register(store: Datastore, node: Node) -> Node:
    """Write ``node``; refuse an address another node already uses."""
    keys.segment(node.name, "node name")
    node.ipv4 = _check_address(node.ipv4, 4)
    node.ipv6 = _check_address(node.ipv6, 6)
    for _ in range(10):
        existing = store.get_prefix(keys.NODES)
        for kv in existing:
            other = codec.loads(Node, kv.value)
            if other.name == node.name:
                continue
            for mine, theirs, label in ((node.ipv4, other.ipv4, "IPv4"), (node.ipv6, other.ipv6, "IPv6")):
                if mine and mine == theirs:
                    raise NodeConflict(f"{label} address {mine} is already used by node {other.name}")
        current = next((kv for kv in existing if kv.key == keys.node(node.name)), None)
        revision = current.mod_revision if current else 0
        if store.txn([ModRevisionIs(keys.node(node.name), revision)],
                     [Put(keys.node(node.name), codec.dumps(node))]).succeeded:
            return node
    raise NodeConflict(f"node {node.name} is being registered concurrently; try again")
