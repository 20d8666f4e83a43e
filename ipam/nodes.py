"""The node registry: every host running Warren, with its underlay addresses.

Shared by the plugin, the BGP fabric and the CLI, so it lives in the common
domain layer. A node's name is its IPAM host name (block affinity).

Two records per node: the registry entry (``nodes/<name>``: addresses, AS,
VTEP; it stays while the node is stopped, so its blocks and peers keep a
name) and a liveness key (``status/<name>/alive``) on an etcd lease that
the running node keeps alive (:func:`claim`, refreshed by the node agent).
A dead node's key vanishes with its lease, without any heartbeat loop of
ours reading it. ``node start`` claims the name first: a name held by a
live node at another underlay address is refused; the same host (same
address) restarting after a crash takes its name back.

Both records check themselves at every read and write (``validate``: a
key-safe name, addresses of the right family, AS 1-4294967295, the VTEP's
MAC; ``check_key``: ``nodes/x`` holds node x). Listings skip invalid ones
and count them; a single invalid record reads as absent (so ``node start``
of that name simply writes a good one over it).
"""
from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

from datastore import Datastore, ModRevisionIs, Put, codec, fields, keys

from .errors import InvalidRequest, IpamError


class NodeConflict(IpamError):
    pass


LIVENESS_TTL = 20  # seconds a node stays "up" after its last keep-alive
MAX_AS = 4294967295  # 4-byte AS numbers
MAX_LEASE = 2 ** 63 - 1  # etcd lease ids are int64


@dataclass
class Liveness:
    name: str
    ipv4: str | None
    since: float       # time.time() of the claim
    lease: int

    def validate(self) -> None:
        fields.name(self.name, "node name")
        if self.ipv4 is not None:
            fields.address(self.ipv4, "ipv4", 4)
        if not self.since >= 0:
            raise ValueError(f"since {self.since!r} is not a time")
        fields.integer(self.lease, "lease", 1, MAX_LEASE)

    def check_key(self, key: str) -> None:
        fields.key_is(key, keys.node_alive(self.name), f"liveness of node {self.name}")


@dataclass
class Node:
    name: str
    ipv4: str | None = None
    ipv6: str | None = None
    as_number: int | None = None
    vtep_mac: str | None = None   # MAC of the node's VXLAN device (bgp.fabric)

    def validate(self) -> None:
        fields.name(self.name, "node name")
        if self.ipv4 is not None:
            fields.address(self.ipv4, "ipv4", 4)
        if self.ipv6 is not None:
            fields.address(self.ipv6, "ipv6", 6)
        if self.as_number is not None:
            fields.integer(self.as_number, "as_number", 1, MAX_AS)
        if self.vtep_mac is not None:
            fields.mac(self.vtep_mac, "vtep_mac")

    def check_key(self, key: str) -> None:
        fields.key_is(key, keys.node(self.name), f"node {self.name}")


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
    """Every valid node record by name (invalid ones skipped and counted)."""
    return sorted(codec.load_all(Node, store.get_prefix(keys.NODES)), key=lambda n: n.name)


def get_node(store: Datastore, name: str) -> Node | None:
    return codec.load_one(Node, store.get(keys.node(name)))


def register(store: Datastore, node: Node) -> Node:
    """Write ``node``; refuse an address another node already uses."""
    keys.segment(node.name, "node name")
    node.ipv4 = _check_address(node.ipv4, 4)
    node.ipv6 = _check_address(node.ipv6, 6)
    for _ in range(10):
        existing = store.get_prefix(keys.NODES)
        for _kv, other in codec.load_each(Node, existing):
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


def claim(store: Datastore, node: Node, ttl: int = LIVENESS_TTL) -> int:
    """Mark ``node`` alive on a new lease (returned: keep it alive, revoke it on stop).

    Refuses a name that a live node at another address holds.
    """
    key = keys.node_alive(node.name)
    for _ in range(10):
        kv = store.get(key)
        previous = _check_free(kv, node)
        lease = store.grant_lease(ttl)
        record = Liveness(node.name, node.ipv4, time.time(), lease)
        if store.txn([ModRevisionIs(key, kv.mod_revision if kv else 0)],
                     [Put(key, codec.dumps(record), lease=lease)]).succeeded:
            if previous is not None and previous.lease != lease:
                store.revoke_lease(previous.lease)  # our own earlier run's: no key is left on it
            return lease
        store.revoke_lease(lease)
    raise NodeConflict(f"node {node.name} is being started concurrently; try again")


def _check_free(kv, node: Node) -> Liveness | None:
    previous = codec.load_one(Liveness, kv)  # invalid: as if absent (the claim's txn replaces it)
    if previous is not None and previous.ipv4 != node.ipv4:
        raise NodeConflict(f"node name {node.name} is in use by a running node at "
                           f"{previous.ipv4 or 'an unknown address'}; choose another --name "
                           "or stop that node first")
    return previous


def check_free(store: Datastore, node: Node) -> None:
    """Raise NodeConflict if a live node at another address holds ``node``'s name."""
    _check_free(store.get(keys.node_alive(node.name)), node)


def keep_alive(store: Datastore, node: Node, lease: int, ttl: int = LIVENESS_TTL) -> int:
    """Refresh the lease; if it expired meanwhile (a long etcd outage), claim again.

    Returns the lease now in use.
    """
    if store.keep_alive(lease) > 0:
        return lease
    return claim(store, node, ttl)


def release(store: Datastore, name: str, lease: int) -> None:
    """The node stops: its liveness key goes with its lease."""
    store.revoke_lease(lease)


def alive(store: Datastore) -> dict[str, Liveness]:
    """Live nodes by name."""
    found = {}
    kvs = [kv for kv in store.get_prefix(keys.STATUS) if kv.key.endswith("/alive")]
    for _kv, record in codec.load_each(Liveness, kvs):
        found[record.name] = record
    return found
