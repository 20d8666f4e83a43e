"""``warrenctl node status`` (this node's BGP sessions) and ``warrenctl status`` (the cluster)."""
from __future__ import annotations

import time
from collections import Counter

from bgp.settings import load_settings, load_status, peers, peers_for
from datastore import codec, keys
from ipam import Block
from ipam.nodes import get_node, list_nodes

from .output import as_json, table


def _since(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def node_status(args, ctx) -> int:
    name = args.name or ctx.host
    me = get_node(ctx.store, name)
    if me is None:
        raise ValueError(f"node {name} is not registered; start it with 'warrenctl node start'")
    configured = {p.address: p.kind for p in peers_for(me, list_nodes(ctx.store), load_settings(ctx.store),
                                                        peers(ctx.store), peers(ctx.store, name))}
    sessions = {s.peer: s for s in load_status(ctx.store, name)}
    rows = []
    for address in sorted(set(configured) | set(sessions)):
        s = sessions.get(address)
        rows.append({"peer": address, "type": configured.get(address, "removed"),
                     "state": s.state if s else "idle", "since": _since(s.since) if s else "-",
                     "info": (s.info if s and s.state == "down" else "Established" if s else "")})
    if args.json:
        as_json({"node": name, "sessions": rows})
        return 0
    print(f"Node {name} ({me.ipv4 or '-'}, AS {me.as_number or load_settings(ctx.store).default_as})")
    table(["Peer address", "Peer type", "State", "Since", "Info"],
          [(r["peer"], r["type"], r["state"], r["since"], r["info"]) for r in rows])
    return 0


def cluster_status(args, ctx) -> int:
    nodes = list_nodes(ctx.store)
    blocks = Counter(codec.loads(Block, kv.value).affinity for kv in ctx.store.get_prefix(keys.BLOCKS))
    endpoints = Counter(keys.last_segment(kv.key.rsplit("/", 1)[0])
                        for kv in ctx.store.get_prefix(keys.ENDPOINTS, keys_only=True))
    rows = []
    for node in nodes:
        states = Counter(s.state for s in load_status(ctx.store, node.name))
        rows.append({"node": node.name, "ipv4": node.ipv4, "blocks": blocks.get(node.name, 0),
                     "endpoints": endpoints.get(node.name, 0),
                     "sessions_up": states.get("up", 0), "sessions_down": states.get("down", 0)})
    if args.json:
        as_json({"nodes": rows})
        return 0
    table(["Node", "IPv4", "Blocks", "Endpoints", "BGP up", "BGP down"],
          [(r["node"], r["ipv4"] or "-", r["blocks"], r["endpoints"], r["sessions_up"], r["sessions_down"])
           for r in rows])
    print(f"{len(rows)} nodes, {sum(r['blocks'] for r in rows)} blocks, "
          f"{sum(r['endpoints'] for r in rows)} endpoints")
    return 0


def register(sub) -> None:
    status = sub.add_parser("status", help="cluster summary: nodes, blocks, endpoints, BGP sessions")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cluster_status)
