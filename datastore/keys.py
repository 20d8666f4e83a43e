"""The whole etcd key schema of Warren, in one place.

Every key lives under ``/warren/v1/``. Values are JSON documents (see
:mod:`datastore.codec`). CIDRs appear in keys with ``/`` replaced by ``-``
(``10.20.10.0/26`` -> ``10.20.10.0-26``) so a CIDR is one path segment.

Layout::

    /warren/v1/pools/<cidr>                    ipam.Pool
    /warren/v1/ipam/config                     ipam.IpamConfig
    /warren/v1/ipam/blocks/<cidr>              ipam.Block (the truth for every address in it)
    /warren/v1/ipam/affinity/<host>/<cidr>     index: blocks a host owns (written with the block)
    /warren/v1/ipam/handles/<handle>/<ip>      index: addresses a handle holds (written with the block)
    /warren/v1/networks/<docker network id>    plugin.Network (Docker never re-sends CreateNetwork)
    /warren/v1/endpoints/<host>/<endpoint id>  plugin.Endpoint
    /warren/v1/nodes/<name>                    ipam.Node (a host running Warren)
    /warren/v1/sandboxes/<host>/<sandbox>/<n>  endpoint id holding gateway slot n of a container
    /warren/v1/bgp/config                      bgp.settings.BgpSettings (default AS, node mesh)
    /warren/v1/bgp/peers/<ip>                  bgp.settings.PeerRecord: a global peer (e.g. route reflector)
    /warren/v1/bgp/nodes/<node>/peers/<ip>     bgp.settings.PeerRecord: a peer of one node only
    /warren/v1/status/<node>/bgp               bgp.settings.SessionStatus list, written by the node
    /warren/v1/status/<node>/alive             ipam.nodes.Liveness, on a lease the running node keeps alive
    /warren/v1/status/<node>/speaker           bgp.settings.SpeakerState, written by the node's speaker
    /warren/v1/profiles/<name>                 profiles.model.Profile (tags, inbound and outbound rules)

Later layers add networks, endpoints, nodes, BGP settings and profiles here,
and nowhere else.
"""
from __future__ import annotations

import hashlib
import re

PREFIX = "/warren/v1/"

POOLS = PREFIX + "pools/"
IPAM_CONFIG = PREFIX + "ipam/config"
BLOCKS = PREFIX + "ipam/blocks/"
AFFINITY = PREFIX + "ipam/affinity/"
HANDLES = PREFIX + "ipam/handles/"
NETWORKS = PREFIX + "networks/"
ENDPOINTS = PREFIX + "endpoints/"
NODES = PREFIX + "nodes/"
SANDBOXES = PREFIX + "sandboxes/"
BGP = PREFIX + "bgp/"
BGP_CONFIG = BGP + "config"
BGP_PEERS = BGP + "peers/"
STATUS = PREFIX + "status/"
PROFILES = PREFIX + "profiles/"

_SEGMENT = re.compile(r"^[A-Za-z0-9_.:@-]{1,253}$")


def segment(value: str, what: str = "name") -> str:
    """Return ``value`` if it is safe as one key segment, else raise ValueError."""
    if not isinstance(value, str) or not _SEGMENT.match(value):
        raise ValueError(
            f"invalid {what} {value!r}: use 1-253 letters, digits or . _ : @ -")
    return value


def encode_cidr(cidr: str) -> str:
    return cidr.replace("/", "-")


def decode_cidr(encoded: str) -> str:
    address, _, length = encoded.rpartition("-")
    return f"{address}/{length}"


def last_segment(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def pool(cidr: str) -> str:
    return POOLS + encode_cidr(cidr)


def block(cidr: str) -> str:
    return BLOCKS + encode_cidr(cidr)


def affinity_prefix(host: str) -> str:
    return AFFINITY + segment(host, "host name") + "/"


def affinity(host: str, block_cidr: str) -> str:
    return affinity_prefix(host) + encode_cidr(block_cidr)


def handle_prefix(handle: str) -> str:
    return HANDLES + segment(handle, "handle") + "/"


def handle(handle_id: str, address: str) -> str:
    return handle_prefix(handle_id) + address


def cidr_of(key: str) -> str:
    """The CIDR named by the last segment of a pool, block or affinity key."""
    return decode_cidr(last_segment(key))


def split_handle_key(key: str) -> tuple[str, str]:
    """``/warren/v1/ipam/handles/<handle>/<ip>`` -> ``(handle, ip)``."""
    rest = key[len(HANDLES):]
    handle_id, _, address = rest.partition("/")
    return handle_id, address


def split_affinity_key(key: str) -> tuple[str, str]:
    """``/warren/v1/ipam/affinity/<host>/<cidr>`` -> ``(host, cidr)``."""
    rest = key[len(AFFINITY):]
    host, _, encoded = rest.partition("/")
    return host, decode_cidr(encoded)


def network(network_id: str) -> str:
    return NETWORKS + segment(network_id, "network id")


def endpoint_prefix(host: str) -> str:
    return ENDPOINTS + segment(host, "host name") + "/"


def endpoint(host: str, endpoint_id: str) -> str:
    return endpoint_prefix(host) + segment(endpoint_id, "endpoint id")


def node(name: str) -> str:
    return NODES + segment(name, "node name")


def sandbox_prefix(host: str, sandbox: str) -> str:
    """Slots of one container; ``sandbox`` is Docker's netns path, hashed to one segment."""
    digest = hashlib.sha256(sandbox.encode()).hexdigest()[:20]
    return SANDBOXES + segment(host, "host name") + "/" + digest + "/"


def sandbox_slot(host: str, sandbox: str, slot: int) -> str:
    return sandbox_prefix(host, sandbox) + str(slot)


def bgp_peer(address: str) -> str:
    return BGP_PEERS + segment(address, "peer address")


def node_bgp_peers(node: str) -> str:
    return BGP + "nodes/" + segment(node, "node name") + "/peers/"


def node_bgp_peer(node: str, address: str) -> str:
    return node_bgp_peers(node) + segment(address, "peer address")


def bgp_status(node: str) -> str:
    return STATUS + segment(node, "node name") + "/bgp"


def node_alive(node: str) -> str:
    return STATUS + segment(node, "node name") + "/alive"


def node_speaker(node: str) -> str:
    return STATUS + segment(node, "node name") + "/speaker"


def profile(name: str) -> str:
    return PROFILES + segment(name, "profile name")
