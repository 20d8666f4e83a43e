"""BGP settings and peers in etcd, and the sessions each node reports.

* cluster settings: the default AS of nodes and whether they form a full
  mesh (``warrenctl bgp default-node-as``, ``warrenctl bgp node-mesh``);
* global peers (every node peers with them: route reflectors, ToR routers)
  and per-node peers (``warrenctl [node] bgp peer add|remove|show``);
* session status, written by each node's API process, and the speaker
  supervisor's own state (:class:`SpeakerState`: ExaBGP running, config
  accepted, peers left out), both for ``node status``.

Records are checked where they are read (``validate``, through
:mod:`datastore.codec`): an invalid peer or settings record is skipped and
counted, never rendered into ExaBGP's configuration. Writes are checked the
same way, plus: a peer may not be a registered node's address (it would
replace the mesh session) nor an unspecified, loopback, multicast or
link-local address (:func:`bgp.config.check_peer_address`).

:func:`plan_peers` turns all of it into one node's peer list.
"""
from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field

from datastore import Datastore, codec, keys
from ipam.nodes import Node

from . import config
from .config import DEFAULT_AS, Peer


class BgpSettingsError(ValueError):
    pass


@dataclass
class BgpSettings:
    default_as: int = DEFAULT_AS
    node_mesh: bool = True

    def validate(self) -> None:
        config.check_as(self.default_as)


@dataclass
class PeerRecord:
    address: str
    as_number: int
    password: str | None = None

    def validate(self) -> None:
        config.check_peer_address(self.address)
        config.check_as(self.as_number)
        if self.password is not None:
            config.check_password(self.password)

    def check_key(self, key: str) -> None:
        """A peer record sits at its own (canonical) address: ``.../peers/<address>``."""
        if key.rsplit("/", 1)[-1] != self.address:
            raise ValueError(f"the record at {key} names another peer, {self.address}")


@dataclass
class SessionStatus:
    peer: str
    state: str          # up | down
    since: float        # unix time of the last change
    info: str = ""


@dataclass
class SpeakerState:
    """What the speaker supervisor (:mod:`bgp.speaker`) knows, for ``node status``."""
    state: str                      # starting | running | restarting | stopped
    pid: int                        # the supervising process (node agent)
    exabgp_pid: int | None = None   # None while ExaBGP is not running
    since: float = 0.0              # unix time ExaBGP was started (or stopped)
    restarts: int = 0               # ExaBGP exits this supervisor has seen
    last_exit: str = ""             # how ExaBGP last ended
    config_ok: bool = True          # the newest render was accepted and is in use
    config_error: str = ""          # why the newest render was refused (the previous one runs)
    config_time: float = 0.0        # unix time of the config in use
    render_failures: int = 0
    skipped: list[str] = field(default_factory=list)  # peers left out, with the reason
    updated: float = 0.0


def check_as(value: int) -> int:
    try:
        return config.check_as(value)
    except ValueError as exc:
        raise BgpSettingsError(str(exc)) from None


def make_peer(address: str, as_number: int, password: str | None = None) -> PeerRecord:
    try:
        address = config.check_peer_address(address)
        if password is not None:
            config.check_password(password)
    except ValueError as exc:
        raise BgpSettingsError(str(exc)) from None
    return PeerRecord(address, check_as(as_number), password)


def load_settings(store: Datastore, fallback: BgpSettings | None = None,
                  invalid: list[str] | None = None) -> BgpSettings:
    """The cluster settings; an invalid record is reported and read as ``fallback``
    (the caller's last good settings) or the defaults."""
    kv = store.get(keys.BGP_CONFIG)
    if kv is None:
        return BgpSettings()
    try:
        return codec.loads(BgpSettings, kv.value, kv.key)
    except codec.InvalidRecord as exc:
        codec.skipped(exc, kv.mod_revision)
        if invalid is not None:
            invalid.append(f"{exc}; using {'the last valid settings' if fallback else 'the defaults'}")
        return fallback or BgpSettings()


def save_settings(store: Datastore, settings: BgpSettings) -> None:
    check_as(settings.default_as)
    store.put(keys.BGP_CONFIG, codec.dumps(settings))


def _load_valid(cls, kvs, invalid: list[str] | None) -> list:
    """The valid records among ``kvs``; each invalid one is counted (codec) and, if
    ``invalid`` is given, described there."""
    out = []
    for kv in kvs:
        try:
            out.append(codec.loads(cls, kv.value, kv.key))
        except codec.InvalidRecord as exc:
            codec.skipped(exc, kv.mod_revision)
            if invalid is not None:
                invalid.append(str(exc))
    return out


def registered_nodes(store: Datastore, invalid: list[str] | None = None) -> list[Node]:
    """The node registry; invalid node records are skipped (and counted)."""
    return sorted(_load_valid(Node, store.get_prefix(keys.NODES), invalid), key=lambda n: n.name)


def peers(store: Datastore, node: str | None = None, invalid: list[str] | None = None) -> list[PeerRecord]:
    """Global peers (or ``node``'s own); invalid records are skipped (and counted)."""
    prefix = keys.BGP_PEERS if node is None else keys.node_bgp_peers(node)
    records = _load_valid(PeerRecord, store.get_prefix(prefix), invalid)
    return sorted(records, key=lambda p: (ipaddress.ip_address(p.address).version,
                                          ipaddress.ip_address(p.address)))


def node_addresses(nodes: list[Node]) -> dict[str, str]:
    """Every registered node's underlay address (canonical) -> node name."""
    out = {}
    for n in nodes:
        for address in (n.ipv4, n.ipv6):
            try:
                out[str(ipaddress.ip_address(address))] = n.name
            except (TypeError, ValueError):
                pass
    return out


def add_peer(store: Datastore, peer: PeerRecord, node: str | None = None) -> None:
    """Store a global (or ``node``'s) peer; refuse anything ``peers_for`` would skip."""
    peer = make_peer(peer.address, peer.as_number, peer.password)
    owner = node_addresses(registered_nodes(store)).get(peer.address)
    if owner is not None:
        raise BgpSettingsError(f"{peer.address} is the address of node {owner}: nodes peer "
                               "with each other through the node mesh, not as BGP peers")
    key = keys.bgp_peer(peer.address) if node is None else keys.node_bgp_peer(node, peer.address)
    store.put(key, codec.dumps(peer))


def remove_peer(store: Datastore, address: str, node: str | None = None) -> bool:
    try:
        address = str(ipaddress.ip_address(address))
    except ValueError:
        raise BgpSettingsError(f"{address!r} is not an IP address") from None
    key = keys.bgp_peer(address) if node is None else keys.node_bgp_peer(node, address)
    return store.delete(key)


def plan_peers(me: Node, nodes: list[Node], settings: BgpSettings, global_peers: list[PeerRecord],
               node_peers: list[PeerRecord]) -> tuple[tuple[Peer, ...], list[str]]:
    """(this node's sessions, what was left out and why).

    The mesh (if on) has every other node; then global peers, then this node's own.
    An address listed twice keeps its most specific kind (node > global > mesh).
    Left out: a node whose address or AS is unusable, and a configured peer that is
    a registered node's address (it would replace the mesh session, or be ourselves)
    or otherwise invalid. Every kept peer passes :func:`bgp.config.check_peer`."""
    chosen: dict[str, Peer] = {}
    skipped: list[str] = []
    nodes_at = node_addresses(nodes)
    if settings.node_mesh:
        for n in nodes:
            if n.name == me.name or not n.ipv4:
                continue
            try:
                peer = config.check_peer(Peer(n.ipv4, n.as_number or settings.default_as, "mesh"))
            except ValueError as exc:
                skipped.append(f"node {n.name}: {exc}")
                continue
            chosen[peer.address] = peer
    for kind, records in (("global", global_peers), ("node", node_peers)):
        for r in records:
            try:
                peer = config.check_peer(Peer(r.address, r.as_number, kind, r.password))
            except ValueError as exc:
                skipped.append(f"{kind} peer {r.address}: {exc}")
                continue
            if peer.address in nodes_at:
                skipped.append(f"{kind} peer {peer.address}: the address of node {nodes_at[peer.address]}")
                continue
            chosen[peer.address] = peer
    return tuple(chosen.values()), skipped


def peers_for(me: Node, nodes: list[Node], settings: BgpSettings, global_peers: list[PeerRecord],
              node_peers: list[PeerRecord]) -> tuple[Peer, ...]:
    """This node's sessions (see :func:`plan_peers`)."""
    return plan_peers(me, nodes, settings, global_peers, node_peers)[0]


def save_status(store: Datastore, node: str, sessions: list[SessionStatus]) -> None:
    store.put(keys.bgp_status(node), codec.dumps(_Sessions([asdict(s) for s in sessions])))


def load_status(store: Datastore, node: str) -> list[SessionStatus]:
    kv = store.get(keys.bgp_status(node))
    if kv is None:
        return []
    try:
        return [SessionStatus(**s) for s in codec.loads(_Sessions, kv.value, kv.key).sessions]
    except (codec.InvalidRecord, TypeError) as exc:
        if isinstance(exc, codec.InvalidRecord):
            codec.skipped(exc, kv.mod_revision)
        return []


def speaker_key(node: str) -> str:
    return keys.node_speaker(node)


def save_speaker_state(store: Datastore, node: str, state: SpeakerState) -> None:
    store.put(speaker_key(node), codec.dumps(state))


def load_speaker_state(store: Datastore, node: str) -> SpeakerState | None:
    kv = store.get(speaker_key(node))
    if kv is None:
        return None
    try:
        return codec.loads(SpeakerState, kv.value, kv.key)
    except codec.InvalidRecord as exc:
        codec.skipped(exc, kv.mod_revision)
        return None


@dataclass
class _Sessions:
    sessions: list
