"""BGP settings and peers in etcd, and the sessions each node reports.

* cluster settings: the default AS of nodes and whether they form a full
  mesh (``warrenctl bgp default-node-as``, ``warrenctl bgp node-mesh``);
* global peers (every node peers with them: route reflectors, ToR routers)
  and per-node peers (``warrenctl [node] bgp peer add|remove|show``);
* session status, written by each node's API process.

:func:`peers_for` turns all of it into one node's peer list.
"""
from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass

from datastore import Datastore, codec, keys
from ipam.nodes import Node

from .config import DEFAULT_AS, Peer


class BgpSettingsError(ValueError):
    pass


@dataclass
class BgpSettings:
    default_as: int = DEFAULT_AS
    node_mesh: bool = True


@dataclass
class PeerRecord:
    address: str
    as_number: int
    password: str | None = None


@dataclass
class SessionStatus:
    peer: str
    state: str          # up | down
    since: float        # unix time of the last change
    info: str = ""


def check_as(value: int) -> int:
    if not isinstance(value, int) or not 1 <= value <= 4294967295:
        raise BgpSettingsError(f"invalid AS number {value!r}: use 1-4294967295")
    return value


def make_peer(address: str, as_number: int, password: str | None = None) -> PeerRecord:
    try:
        address = str(ipaddress.ip_address(address))
    except ValueError:
        raise BgpSettingsError(f"{address!r} is not an IP address") from None
    if password is not None and (not password or len(password) > 80 or '"' in password
                                 or not password.isprintable()):
        raise BgpSettingsError("a BGP password must be 1-80 printable characters without quotes")
    return PeerRecord(address, check_as(as_number), password)


def load_settings(store: Datastore) -> BgpSettings:
    kv = store.get(keys.BGP_CONFIG)
    return codec.loads(BgpSettings, kv.value) if kv else BgpSettings()


def save_settings(store: Datastore, settings: BgpSettings) -> None:
    check_as(settings.default_as)
    store.put(keys.BGP_CONFIG, codec.dumps(settings))


def peers(store: Datastore, node: str | None = None) -> list[PeerRecord]:
    prefix = keys.BGP_PEERS if node is None else keys.node_bgp_peers(node)
    return sorted((codec.loads(PeerRecord, kv.value) for kv in store.get_prefix(prefix)),
                  key=lambda p: (ipaddress.ip_address(p.address).version, ipaddress.ip_address(p.address)))


def add_peer(store: Datastore, peer: PeerRecord, node: str | None = None) -> None:
    key = keys.bgp_peer(peer.address) if node is None else keys.node_bgp_peer(node, peer.address)
    store.put(key, codec.dumps(peer))


def remove_peer(store: Datastore, address: str, node: str | None = None) -> bool:
    address = make_peer(address, DEFAULT_AS).address
    key = keys.bgp_peer(address) if node is None else keys.node_bgp_peer(node, address)
    return store.delete(key)


def peers_for(me: Node, nodes: list[Node], settings: BgpSettings, global_peers: list[PeerRecord],
              node_peers: list[PeerRecord]) -> tuple[Peer, ...]:
    """This node's sessions: the mesh (if on), then global peers, then its own.
    An address listed twice keeps its most specific kind (node > global > mesh)."""
    chosen: dict[str, Peer] = {}
    if settings.node_mesh:
        for n in nodes:
            if n.name != me.name and n.ipv4:
                chosen[n.ipv4] = Peer(n.ipv4, n.as_number or settings.default_as, "mesh")
    for kind, records in (("global", global_peers), ("node", node_peers)):
        for r in records:
            if r.address not in (me.ipv4, me.ipv6):
                chosen[r.address] = Peer(r.address, r.as_number, kind, r.password)
    return tuple(chosen.values())


def save_status(store: Datastore, node: str, sessions: list[SessionStatus]) -> None:
    store.put(keys.bgp_status(node), codec.dumps(_Sessions([asdict(s) for s in sessions])))


def load_status(store: Datastore, node: str) -> list[SessionStatus]:
    kv = store.get(keys.bgp_status(node))
    if kv is None:
        return []
    return [SessionStatus(**s) for s in codec.loads(_Sessions, kv.value).sessions]


@dataclass
class _Sessions:
    sessions: list
