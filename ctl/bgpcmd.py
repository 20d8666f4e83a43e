"""``warrenctl bgp ...`` and ``warrenctl node bgp peer ...`` (calicoctl v0.x grammar).

Every value is checked before it is stored, with the grammar the speaker
renders (:mod:`bgp.config`): AS 1-4294967295, a unicast peer address that is
not a registered node's, 1-80 printable ASCII characters of password. A
refusal is one line on stderr and exit status 1 (``ValueError``). ``peer show``
lists invalid stored records apart (on stderr), as the speakers skip them.
"""
from __future__ import annotations

import argparse
import ipaddress
import sys

from bgp.settings import (add_peer, load_settings, make_peer, peers, remove_peer,
                          save_settings)
from datastore import keys

from .output import as_json, table


def register(sub: argparse._SubParsersAction) -> None:
    bgp = sub.add_parser("bgp", help="cluster-wide BGP settings and peers")
    verbs = bgp.add_subparsers(dest="verb", required=True, metavar="{default-node-as,node-mesh,peer}")
    asn = verbs.add_parser("default-node-as", help="show or set the AS of nodes without their own")
    asn.add_argument("as_number", nargs="?", type=int, metavar="AS_NUM")
    asn.set_defaults(func=default_node_as)
    mesh = verbs.add_parser("node-mesh", help="show or switch the full node-to-node mesh")
    mesh.add_argument("state", nargs="?", choices=["on", "off"])
    mesh.set_defaults(func=node_mesh)
    add_peer_commands(verbs, node_scope=False)


def add_peer_commands(verbs: argparse._SubParsersAction, node_scope: bool) -> None:
    peer = verbs.add_parser("peer", help="BGP peers" + (" of this node" if node_scope else " of every node"))
    pverbs = peer.add_subparsers(dest="peer_verb", required=True, metavar="{add,remove,show}")
    add = pverbs.add_parser("add", help="add a peer: PEER_IP as AS_NUM")
    add.add_argument("ip", metavar="PEER_IP")
    add.add_argument("as_kw", choices=["as"], metavar="as")
    add.add_argument("as_number", type=int, metavar="AS_NUM")
    add.add_argument("--password", help="TCP MD5 password for the session")
    remove = pverbs.add_parser("remove", help="remove a peer")
    remove.add_argument("ip", metavar="PEER_IP")
    show = pverbs.add_parser("show", help="list peers")
    family = show.add_mutually_exclusive_group()
    family.add_argument("--ipv4", action="store_const", const=4, dest="version")
    family.add_argument("--ipv6", action="store_const", const=6, dest="version")
    show.add_argument("--json", action="store_true")
    for parser in (add, remove, show):
        if node_scope:
            parser.add_argument("--name", help="the node (default: this host)")
        parser.set_defaults(func=peer_command, node_scope=node_scope)


def default_node_as(args, ctx) -> int:
    settings = load_settings(ctx.store)
    if args.as_number is None:
        print(settings.default_as)
        return 0
    settings.default_as = args.as_number
    save_settings(ctx.store, settings)
    print(f"Default node AS set to {args.as_number}")
    return 0


def node_mesh(args, ctx) -> int:
    settings = load_settings(ctx.store)
    if args.state is None:
        print("on" if settings.node_mesh else "off")
        return 0
    settings.node_mesh = args.state == "on"
    save_settings(ctx.store, settings)
    print(f"Node-to-node mesh {args.state}")
    return 0


def peer_command(args, ctx) -> int:
    node = keys.segment(args.name or ctx.host, "node name") if args.node_scope else None
    where = f" of node {node}" if node else ""
    if args.peer_verb == "add":
        peer = make_peer(args.ip, args.as_number, args.password)
        add_peer(ctx.store, peer, node)
        print(f"Added BGP peer {peer.address} as {peer.as_number}{where}")
    elif args.peer_verb == "remove":
        if remove_peer(ctx.store, args.ip, node):
            print(f"Removed BGP peer {args.ip}{where}")
        else:
            print(f"{args.ip} is not a BGP peer{where}; nothing to remove")
    else:
        invalid: list[str] = []
        found = [p for p in peers(ctx.store, node, invalid)
                 if args.version in (None, ipaddress.ip_address(p.address).version)]
        for reason in invalid:
            print(f"warning: skipped {reason}", file=sys.stderr)
        if args.json:
            as_json([{"address": p.address, "as": p.as_number, "password": bool(p.password)} for p in found])
        else:
            table(["Peer address", "AS", "Password"],
                  [(p.address, p.as_number, "yes" if p.password else "no") for p in found])
    return 0
